"""Fused single-pass Numba kernels: the default path of every optimizer step.

Each kernel reads every input once and writes every output once, one element at a time, doing exactly
the floating-point operations of the NumPy reference rule in ``_optimizers.py`` in the same order
(no fast-math, no reassociation, no FMA contraction), with the same scalars: those that depend only on
the step are computed once per step in float64 by the optimizer's ``constants`` and cast once to the
parameter dtype, as NumPy does when a Python float meets an array. So a fused step equals the
reference step to rounding, and in practice bit for bit.

Divisions are what these loops pay for: a square root or a division keeps the core's divider busy for
several cycles, and Adam's arithmetic alone comes close to its memory traffic on the README's machine.
So the rules divide only where they must. A division by a per-step scalar is a multiplication by its
reciprocal, computed once per step in float64 (Adam's ``inv_bc2_sqrt``, NAdam's ``inv_bc2``, RAdam's
``inv_bc1``), and NAdam divides once per element (``r = 1/d``, then ``g*r`` and ``m*r``) where torch
divides twice more. The reference rules compute the same way, so the fused path still equals them bit
for bit; against torch, which divides, results differ in the last bit or two (measured over 10 steps
of 1e6 elements: at most 3 units in the last place of ``max(1, |p|)``, as before the change). Measured
on 2026-11-29, 1e7 elements, ``nonfinite="ignore"``, ratio to the traffic limit before -> after: Adam
float32 1.09-1.22 -> 1.09-1.16 (within the noise), Adam float64 1.13 -> 1.01-1.08, NAdam float64
1.32-1.35 -> 1.02-1.11.

How many arrays are handled in one call (measured, see ``benchmarks/bench_step.py``): none is moved or
copied. The user's parameter arrays stay where they are (they are updated in place); each bucket (the
leaves of a group sharing a dtype) keeps their data addresses, taken once, and its optimizer state as
flat contiguous buffers. The gradients are read where they lie too: each step, ``resolve`` (one compiled
loop over the gradient objects) checks that every gradient is an ndarray of its parameter's shape and
dtype, C-contiguous and aligned, and collects its data address; one kernel call then walks a table of
work items ``(leaf, start, stop, offset)`` and sees each span as an array at its address (``_leaf``).
Large leaves are split into chunks of ``CHUNK`` elements so that threads share them (smaller ones in
buckets too small to give each thread two, ``chunk_size``); buckets smaller than ``PARALLEL_MIN``
elements run on the calling thread (no thread wake-up). Measured on 2026-11-29, checked step, one
thread against two (in items of 8,192 to 65,536 elements): 20,000 elements 17 against 19-21 us (Adam
float32) and 18 against 22-25 us (SGD float64); 50,000: 32 against 28 us and 38 against 32 us;
100,000: 72 against 44-48 us and 103 against 57-66 us. Measured on the 2-core
machine of the README (Adam float32, checked): 2,000 arrays of 500 elements take 0.6-0.8 ms, 1.3-1.4
times one array of 1e6 (2.2 times its traffic limit), against 1.4 ms when the gradients were gathered
by ``np.concatenate`` into one buffer (a single-threaded copy of every gradient: 0.45 ms) and checked
by Python-level ``map`` calls (0.2 ms); the per-array Python work left is one ``map(id, ...)``.
Packing the parameters into one buffer instead (handing views to the user) was not chosen: the
gradients would still arrive as separate arrays, and users keep their own arrays.

Each optimizer has an inline element loop (``_adam``), a work-item function (``_adam_item``) and a
driver (``adam``) that runs the work items on all threads (``prange``) or on the calling one. On the
threads, a work item is walked in blocks of ``BLOCK`` bytes per array, each block first asking the CPU
to prefetch the block ``AHEAD`` bytes on (``_fetch``): the long division and square-root chains of
the loops keep the out-of-order core from running far enough ahead to keep enough memory requests in
flight. Measured at 1e7 elements, ratio to the plain traffic limit without -> with prefetching: Adam
float32 1.15 -> 0.97-1.0 and Adam float64 1.15 -> 1.10 (512-byte blocks); with 1 KB blocks, RMSprop
float64 1.30 -> 1.14, SGD float64 1.34 -> 1.08, RAdam float64 1.08 -> 0.96. 512-byte blocks beat
1 KB ones (Adam float32 1.09, float64 1.24) and 2 KB ones (1.42): a block issues its prefetches at
once, and too many at once stall the core. The calling-thread path, whose small buckets sit in cache,
does not prefetch. The drivers look alike on purpose: Numba's disk cache does not keep
functions that take other jitted functions as arguments or close over them (measured: they compile
again in every process), so each driver names its loop directly.

``ADAMKIT_NO_NUMBA=1`` in the environment (read when an optimizer is built) forces the NumPy
reference path, for debugging and for tests. Without Numba the reference path is used as well.
Compiled kernels are cached on disk (``cache=True``), so a second process does not compile again.

State arrays an option leaves unused (SGD's buffer without momentum, RMSprop's ``grad_avg`` when not
centered, Adam's ``max_exp_avg_sq`` without amsgrad) are passed as empty arrays; slicing them gives
empty slices that are never read, so every slice keeps one array type.

The argument ``c`` of every kernel is the array of per-step scalars, already cast to the parameter
dtype; its layout is given by the packing function next to each kernel. ``sgn`` is -1 when maximizing
(``-g`` and ``-1*g`` are the same number), ``cwd`` the coupled weight decay (``g + cwd*p`` when
nonzero) and ``dwf`` the decoupled decay factor ``1 - lr*wd`` (1.0 when not decoupled: ``p*1.0 == p``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

CHUNK = 1 << 16  # elements per work item when a leaf is split across threads (at most; see chunk_size)
PARALLEL_MIN = 1 << 15  # buckets smaller than this run on the calling thread
BLOCK = 512  # bytes per array: threaded kernels walk a work item in blocks of this size, and ...
AHEAD = 4096  # ... prefetch the block this many bytes ahead
CHECK_AHEAD = 1024  # the non-finite check (two read streams per thread) prefetches this many bytes ahead

# NumPy's array struct (``PyArrayObject_fields`` in numpy/ndarraytypes.h) on a 64-bit CPython: the
# object header (reference count, type), then data, nd, dimensions, strides, base, descr, flags.
_OB_TYPE, _DATA, _NDIM, _SHAPE, _DESCR, _FLAGS = 8, 16, 24, 32, 56, 64
_C_ALIGNED = 0x0001 | 0x0100  # NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED

_numba_error: str | None = None
try:  # pragma: no cover - exercised by the environment, not by a test
    from llvmlite import ir
    from numba import carray, get_num_threads, njit, prange
    from numba.core import cgutils, types
    from numba.extending import intrinsic
except Exception as exc:  # numba missing or broken: the reference path is used
    _numba_error = f"{type(exc).__name__}: {exc}"


def available() -> bool:
    """True when the fused kernels can be used (Numba importable and not disabled by the environment)."""
    return _numba_error is None and os.environ.get("ADAMKIT_NO_NUMBA", "") in ("", "0")


if _numba_error is None:
    _jit = dict(error_model="numpy", cache=True, nogil=True)
    _inline = dict(error_model="numpy", cache=True, inline="always")
    _plain = dict(error_model="numpy", cache=True)

    # ---- leaves seen through their data addresses, and the resolver that finds them ---------------

    @intrinsic
    def _pointer(typingctx, address, like):
        """The integer ``address`` as a pointer to elements of ``like``'s dtype."""
        sig = types.CPointer(like.dtype)(types.int64, like)

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(signature.return_type))
        return sig, codegen

    @intrinsic
    def _word(typingctx, address):
        """The 64-bit integer stored at ``address``."""
        def codegen(context, builder, signature, args):
            return builder.load(builder.inttoptr(args[0], ir.IntType(64).as_pointer()))
        return types.int64(types.int64), codegen

    @intrinsic
    def _cint(typingctx, address):
        """The C ``int`` (32 bits) stored at ``address``."""
        def codegen(context, builder, signature, args):
            value = builder.load(builder.inttoptr(args[0], ir.IntType(32).as_pointer()))
            return builder.sext(value, ir.IntType(64))
        return types.int64(types.int64), codegen

    @intrinsic
    def _prefetch(typingctx, x, i):
        """Ask the CPU to start loading the cache line of ``x[i]`` (``llvm.prefetch``, for reading);
        nothing is read or written, and callers keep ``i`` inside ``x``."""
        def codegen(context, builder, signature, args):
            byte = ir.IntType(8).as_pointer()
            data = context.make_array(signature.args[0])(context, builder, args[0]).data
            fnty = ir.FunctionType(ir.VoidType(), [byte] + [ir.IntType(32)] * 3)
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
            flags = [ir.Constant(ir.IntType(32), k) for k in (0, 3, 1)]  # read, keep in all caches, data
            builder.call(fn, [builder.bitcast(builder.gep(data, [args[1]]), byte)] + flags)
            return context.get_dummy_value()
        return types.void(x, types.int64), codegen

    @njit(**_inline)
    def _fetch_ahead(x, a, ahead):
        """Prefetch the BLOCK bytes of ``x`` that start ``ahead`` bytes after ``x[a]``, when they lie inside
        ``x``. Inlined into ``_fetch`` and ``_fetch_near``, so ``ahead`` is a constant and the steps are
        literal per dtype: computed steps measured 2x slower (the loop bounds then need divisions, and
        LLVM schedules the block loop worse)."""
        if x.itemsize == 4:
            if a + (ahead + BLOCK) // 4 <= x.size:
                for i in range(a + ahead // 4, a + (ahead + BLOCK) // 4, 16):
                    _prefetch(x, i)
        elif a + (ahead + BLOCK) // 8 <= x.size:
            for i in range(a + ahead // 8, a + (ahead + BLOCK) // 8, 8):
                _prefetch(x, i)

    @njit(**_plain)
    def _fetch(x, a):
        """The update kernels' prefetch: the block AHEAD bytes on."""
        _fetch_ahead(x, a, AHEAD)

    @njit(**_plain)
    def _fetch_near(x, a):
        """The non-finite check's prefetch: the block CHECK_AHEAD bytes on (measured at 1e8 float64 from
        main memory: 12.0 ms, against 14.1 ms when the check called ``_fetch`` with ``a`` shifted back)."""
        _fetch_ahead(x, a, CHECK_AHEAD)

    @njit(**_inline)
    def _leaf(addresses, items, k, like):
        """Work item ``k``'s span of its leaf: a C-contiguous array whose data starts at ``addresses[leaf]``."""
        j, lo, hi, off = items[k, 0], items[k, 1], items[k, 2], items[k, 3]
        return carray(_pointer(addresses[j] + (lo - off) * like.itemsize, like), hi - lo)

    @njit(**_jit)
    def resolve(objects, ndim, dims, dim_start, descr, array_type, out):
        """Fill ``out[j]`` with the data address of the array whose object address is ``objects[j]``, and
        return -1; or return the first ``j`` that is not exactly an ndarray, C-contiguous and aligned,
        with ``ndim[j]`` dimensions equal to ``dims[dim_start[j]:]`` and the dtype object ``descr[j]``.

        It reads NumPy's array struct (``PyArrayObject_fields`` of NumPy's public C headers, whose
        field offsets are fixed by NumPy's ABI) the way a C extension does through ``PyArray_DATA`` and
        friends; ``layout_ok`` checks the offsets on live arrays before this is ever used. Only the type
        field is read of an object that is not an ndarray."""
        for j in range(objects.size):
            o = objects[j]
            if (_word(o + _OB_TYPE) != array_type or _word(o + _DESCR) != descr[j]
                    or _cint(o + _NDIM) != ndim[j] or (_cint(o + _FLAGS) & _C_ALIGNED) != _C_ALIGNED):
                return j
            shape = _word(o + _SHAPE)
            for d in range(ndim[j]):
                if _word(shape + 8 * d) != dims[dim_start[j] + d]:
                    return j
            out[j] = _word(o + _DATA)
        return -1

    # ---- the non-finite check: one read of every gradient, before anything is written ------------

    @njit(**_jit)
    def first_nonfinite(ga, items, like):
        """The leaf of the first work item holding a NaN or an infinity, or -1 (on the calling thread)."""
        for k in range(items.shape[0]):
            if _count_nonfinite(_leaf(ga, items, k, like)):
                return items[k, 0]
        return -1

    @njit(parallel=True, **_jit)
    def count_nonfinite(ga, items, like):
        """How many NaNs and infinities the gradients hold, counted by all threads. A lone read stream
        is slow on this kind of machine, so each work item is read as two interleaved halves, block by
        block, each block prefetching CHECK_AHEAD bytes on (``_fetch_near``). Measured on the README's
        machine, 1e8 float32 from main memory: 11.0-11.8 ms against 14.1-15.2 ms for one stream per
        item prefetching AHEAD bytes on; the same (0.76-0.79 ms) at 1e7, from the L3 cache."""
        total = 0
        for k in prange(items.shape[0]):
            x = _leaf(ga, items, k, like)
            blk = BLOCK // x.itemsize
            half = (x.size + 2 * blk - 1) // (2 * blk) * blk  # whole blocks; 2 * half >= x.size
            for a in range(0, half, blk):
                _fetch_near(x, a)
                total += _count_nonfinite(x[a:min(x.size, a + blk)])
                b = half + a
                if b < x.size:
                    _fetch_near(x, b)
                    total += _count_nonfinite(x[b:min(x.size, b + blk)])
        return total

    @njit(**_inline)
    def _count_nonfinite(x):
        count = 0
        for i in range(x.size):
            count += (x[i] - x[i]) != 0  # 0 for a finite number, NaN (!= 0) otherwise
        return count

    # ---- SGD ---------------------------------------------------------------------------------------

    @njit(**_inline)
    def _sgd(p, g, b, c, momentum, first, nesterov):
        sgn, cwd, lr, mu, omd = c[0], c[1], c[2], c[3], c[4]
        for i in range(p.size):
            pi = p[i]
            gi = sgn * g[i]
            if cwd != 0:
                gi = gi + cwd * pi
            if momentum:
                if first:
                    bi = gi
                else:
                    bi = mu * b[i] + omd * gi
                b[i] = bi
                if nesterov:
                    gi = gi + mu * bi
                else:
                    gi = bi
            p[i] = pi - lr * gi

    @njit(**_plain)
    def _sgd_item(pa, ga, items, k, b, c, momentum, first, nesterov, ahead):
        lo, hi = items[k, 1], items[k, 2]
        p, g = _leaf(pa, items, k, c), _leaf(ga, items, k, c)
        blk = BLOCK // c.itemsize
        for a in range(0, hi - lo, blk):
            e = min(hi - lo, a + blk)
            if ahead:
                _fetch(p, a); _fetch(g, a); _fetch(b, lo + a)
            _sgd(p[a:e], g[a:e], b[lo + a:lo + e], c, momentum, first, nesterov)

    @njit(parallel=True, **_jit)
    def sgd(pa, ga, items, par, b, c, momentum, first, nesterov):
        if par:
            for k in prange(items.shape[0]):
                _sgd_item(pa, ga, items, k, b, c, momentum, first, nesterov, True)
        else:
            for k in range(items.shape[0]):
                _sgd_item(pa, ga, items, k, b, c, momentum, first, nesterov, False)

    # ---- Adagrad -----------------------------------------------------------------------------------

    @njit(**_inline)
    def _adagrad(p, g, s, c):
        sgn, cwd, clr, eps = c[0], c[1], c[2], c[3]
        for i in range(p.size):
            pi = p[i]
            gi = sgn * g[i]
            if cwd != 0:
                gi = gi + cwd * pi
            si = s[i] + gi * gi
            s[i] = si
            p[i] = pi - clr * (gi / (np.sqrt(si) + eps))

    @njit(**_plain)
    def _adagrad_item(pa, ga, items, k, s, c, ahead):
        lo, hi = items[k, 1], items[k, 2]
        p, g = _leaf(pa, items, k, c), _leaf(ga, items, k, c)
        blk = BLOCK // c.itemsize
        for a in range(0, hi - lo, blk):
            e = min(hi - lo, a + blk)
            if ahead:
                _fetch(p, a); _fetch(g, a); _fetch(s, lo + a)
            _adagrad(p[a:e], g[a:e], s[lo + a:lo + e], c)

    @njit(parallel=True, **_jit)
    def adagrad(pa, ga, items, par, s, c):
        if par:
            for k in prange(items.shape[0]):
                _adagrad_item(pa, ga, items, k, s, c, True)
        else:
            for k in range(items.shape[0]):
                _adagrad_item(pa, ga, items, k, s, c, False)

    # ---- RMSprop -----------------------------------------------------------------------------------

    @njit(**_inline)
    def _rmsprop(p, g, v, gbar, b, c, centered, momentum):
        sgn, cwd, lr, a, oma, eps, mu = c[0], c[1], c[2], c[3], c[4], c[5], c[6]
        for i in range(p.size):
            pi = p[i]
            gi = sgn * g[i]
            if cwd != 0:
                gi = gi + cwd * pi
            vi = a * v[i] + oma * (gi * gi)
            v[i] = vi
            if centered:
                gb = a * gbar[i] + oma * gi
                gbar[i] = gb
                z = vi - gb * gb
                if z < 0:
                    z = oma - oma  # +0 in the parameter dtype: the reference rule's max(v - gbar^2, 0)
                d = np.sqrt(z) + eps
            else:
                d = np.sqrt(vi) + eps
            if momentum:
                bi = mu * b[i] + gi / d
                b[i] = bi
                p[i] = pi - lr * bi
            else:
                p[i] = pi - lr * (gi / d)

    @njit(**_plain)
    def _rmsprop_item(pa, ga, items, k, v, gbar, b, c, centered, momentum, ahead):
        lo, hi = items[k, 1], items[k, 2]
        p, g = _leaf(pa, items, k, c), _leaf(ga, items, k, c)
        blk = BLOCK // c.itemsize
        for a in range(0, hi - lo, blk):
            e = min(hi - lo, a + blk)
            if ahead:
                _fetch(p, a); _fetch(g, a); _fetch(v, lo + a); _fetch(gbar, lo + a); _fetch(b, lo + a)
            _rmsprop(p[a:e], g[a:e], v[lo + a:lo + e], gbar[lo + a:lo + e], b[lo + a:lo + e], c, centered, momentum)

    @njit(parallel=True, **_jit)
    def rmsprop(pa, ga, items, par, v, gbar, b, c, centered, momentum):
        if par:
            for k in prange(items.shape[0]):
                _rmsprop_item(pa, ga, items, k, v, gbar, b, c, centered, momentum, True)
        else:
            for k in range(items.shape[0]):
                _rmsprop_item(pa, ga, items, k, v, gbar, b, c, centered, momentum, False)

    # ---- Adam, AdamW (and bias_correction=False: the constants differ) ----------------------------

    @njit(**_inline)
    def _adam(p, g, m, v, vmax, c, amsgrad):
        sgn, cwd, dwf, b1, omb1, b2, omb2, step, rbc2s, eps = c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9]
        for i in range(p.size):
            pi = p[i] * dwf
            gi = sgn * g[i]
            if cwd != 0:
                gi = gi + cwd * p[i]
            mi = b1 * m[i] + omb1 * gi
            vi = b2 * v[i] + omb2 * (gi * gi)
            m[i] = mi
            v[i] = vi
            if amsgrad:
                vi = np.maximum(vmax[i], vi)
                vmax[i] = vi
            p[i] = pi - step * (mi / (np.sqrt(vi) * rbc2s + eps))

    @njit(**_plain)
    def _adam_item(pa, ga, items, k, m, v, vmax, c, amsgrad, ahead):
        lo, hi = items[k, 1], items[k, 2]
        p, g = _leaf(pa, items, k, c), _leaf(ga, items, k, c)
        blk = BLOCK // c.itemsize
        for a in range(0, hi - lo, blk):
            e = min(hi - lo, a + blk)
            if ahead:
                _fetch(p, a); _fetch(g, a); _fetch(m, lo + a); _fetch(v, lo + a); _fetch(vmax, lo + a)
            _adam(p[a:e], g[a:e], m[lo + a:lo + e], v[lo + a:lo + e], vmax[lo + a:lo + e], c, amsgrad)

    @njit(parallel=True, **_jit)
    def adam(pa, ga, items, par, m, v, vmax, c, amsgrad):
        if par:
            for k in prange(items.shape[0]):
                _adam_item(pa, ga, items, k, m, v, vmax, c, amsgrad, True)
        else:
            for k in range(items.shape[0]):
                _adam_item(pa, ga, items, k, m, v, vmax, c, amsgrad, False)

    # ---- Adamax ------------------------------------------------------------------------------------

    @njit(**_inline)
    def _adamax(p, g, m, u, c):
        sgn, cwd, b1, omb1, b2, eps, clr = c[0], c[1], c[2], c[3], c[4], c[5], c[6]
        for i in range(p.size):
            pi = p[i]
            gi = sgn * g[i]
            if cwd != 0:
                gi = gi + cwd * pi
            mi = b1 * m[i] + omb1 * gi
            ui = np.maximum(b2 * u[i], np.abs(gi) + eps)
            m[i] = mi
            u[i] = ui
            p[i] = pi - clr * (mi / ui)

    @njit(**_plain)
    def _adamax_item(pa, ga, items, k, m, u, c, ahead):
        lo, hi = items[k, 1], items[k, 2]
        p, g = _leaf(pa, items, k, c), _leaf(ga, items, k, c)
        blk = BLOCK // c.itemsize
        for a in range(0, hi - lo, blk):
            e = min(hi - lo, a + blk)
            if ahead:
                _fetch(p, a); _fetch(g, a); _fetch(m, lo + a); _fetch(u, lo + a)
            _adamax(p[a:e], g[a:e], m[lo + a:lo + e], u[lo + a:lo + e], c)

    @njit(parallel=True, **_jit)
    def adamax(pa, ga, items, par, m, u, c):
        if par:
            for k in prange(items.shape[0]):
                _adamax_item(pa, ga, items, k, m, u, c, True)
        else:
            for k in range(items.shape[0]):
                _adamax_item(pa, ga, items, k, m, u, c, False)

    # ---- NAdam -------------------------------------------------------------------------------------

    @njit(**_inline)
    def _nadam(p, g, m, v, c):
        sgn, cwd, dwf, b1, omb1, b2, omb2, rbc2, eps, cg, cm, one = (
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11])
        for i in range(p.size):
            pi = p[i] * dwf
            gi = sgn * g[i]
            if cwd != 0:
                gi = gi + cwd * p[i]
            mi = b1 * m[i] + omb1 * gi
            vi = b2 * v[i] + omb2 * (gi * gi)
            m[i] = mi
            v[i] = vi
            r = one / (np.sqrt(vi * rbc2) + eps)  # ``one`` is 1 in the dtype: a literal 1.0 makes float64
            pi = pi - cg * (gi * r)
            p[i] = pi - cm * (mi * r)

    @njit(**_plain)
    def _nadam_item(pa, ga, items, k, m, v, c, ahead):
        lo, hi = items[k, 1], items[k, 2]
        p, g = _leaf(pa, items, k, c), _leaf(ga, items, k, c)
        blk = BLOCK // c.itemsize
        for a in range(0, hi - lo, blk):
            e = min(hi - lo, a + blk)
            if ahead:
                _fetch(p, a); _fetch(g, a); _fetch(m, lo + a); _fetch(v, lo + a)
            _nadam(p[a:e], g[a:e], m[lo + a:lo + e], v[lo + a:lo + e], c)

    @njit(parallel=True, **_jit)
    def nadam(pa, ga, items, par, m, v, c):
        if par:
            for k in prange(items.shape[0]):
                _nadam_item(pa, ga, items, k, m, v, c, True)
        else:
            for k in range(items.shape[0]):
                _nadam_item(pa, ga, items, k, m, v, c, False)

    # ---- RAdam -------------------------------------------------------------------------------------

    @njit(**_inline)
    def _radam(p, g, m, v, c, adaptive):
        sgn, cwd, dwf, b1, omb1, b2, omb2, rbc1, lr, bc2s, eps, rect = (
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11])
        for i in range(p.size):
            pi = p[i] * dwf
            gi = sgn * g[i]
            if cwd != 0:
                gi = gi + cwd * p[i]
            mi = b1 * m[i] + omb1 * gi
            vi = b2 * v[i] + omb2 * (gi * gi)
            m[i] = mi
            v[i] = vi
            mhat_lr = (mi * rbc1) * lr
            if adaptive:
                p[i] = pi - mhat_lr * (bc2s / (np.sqrt(vi) + eps)) * rect
            else:
                p[i] = pi - mhat_lr

    @njit(**_plain)
    def _radam_item(pa, ga, items, k, m, v, c, adaptive, ahead):
        lo, hi = items[k, 1], items[k, 2]
        p, g = _leaf(pa, items, k, c), _leaf(ga, items, k, c)
        blk = BLOCK // c.itemsize
        for a in range(0, hi - lo, blk):
            e = min(hi - lo, a + blk)
            if ahead:
                _fetch(p, a); _fetch(g, a); _fetch(m, lo + a); _fetch(v, lo + a)
            _radam(p[a:e], g[a:e], m[lo + a:lo + e], v[lo + a:lo + e], c, adaptive)

    @njit(parallel=True, **_jit)
    def radam(pa, ga, items, par, m, v, c, adaptive):
        if par:
            for k in prange(items.shape[0]):
                _radam_item(pa, ga, items, k, m, v, c, adaptive, True)
        else:
            for k in range(items.shape[0]):
                _radam_item(pa, ga, items, k, m, v, c, adaptive, False)


# --------------------------------------------------------------------------------------------------
# Per optimizer: how to call its kernel from a bucket (flat state dict ``s``), the flat gradient ``g``
# and the step's scalars ``c`` (a dict of float64 values, as the reference rule sees them).


def _signs(c: dict[str, Any]) -> list[float]:
    """``[sgn, cwd, dwf]``: maximize sign, coupled weight decay, decoupled decay factor."""
    wd = c["weight_decay"]
    decoupled = c.get("decoupled_weight_decay", False)
    return [-1.0 if c["maximize"] else 1.0, 0.0 if decoupled else wd, 1.0 - c["lr"] * wd if decoupled and wd != 0 else 1.0]


_EMPTY = {np.dtype(np.float32): np.empty(0, np.float32), np.dtype(np.float64): np.empty(0, np.float64)}


def empty(dtype: np.dtype) -> np.ndarray:
    """An empty array of ``dtype``: fills unused state arguments, and tells a check what type to read."""
    return _EMPTY[dtype]


def run(kind: str, pa: np.ndarray, ga: np.ndarray, items: np.ndarray, par: bool, s: dict[str, np.ndarray],
        c: dict[str, Any], dtype: np.dtype) -> None:
    """Apply optimizer ``kind``'s fused kernel to one bucket: parameters and gradients at the data
    addresses ``pa`` and ``ga`` (one per leaf), state in the flat buffers ``s``."""
    unused = empty(dtype)  # for state slots this configuration does not use
    sgn, cwd, dwf = _signs(c)
    if kind == "SGD":
        mom = c["momentum"] != 0
        k = np.array([sgn, cwd, c["lr"], c["momentum"], 1.0 - c["dampening"]], dtype)
        sgd(pa, ga, items, par, s["momentum_buffer"] if mom else unused, k, mom, mom and c["first_momentum"],
            c["nesterov"])
    elif kind == "Adagrad":
        k = np.array([sgn, cwd, c["clr"], c["eps"]], dtype)
        adagrad(pa, ga, items, par, s["sum"], k)
    elif kind == "RMSprop":
        mom = c["momentum"] > 0
        k = np.array([sgn, cwd, c["lr"], c["alpha"], 1.0 - c["alpha"], c["eps"], c["momentum"]], dtype)
        rmsprop(pa, ga, items, par, s["square_avg"], s["grad_avg"] if c["centered"] else unused,
                s["momentum_buffer"] if mom else unused, k, c["centered"], mom)
    elif kind == "Adam":
        b1, b2 = c["betas"]
        k = np.array([sgn, cwd, dwf, b1, 1.0 - b1, b2, 1.0 - b2, c["step_size"], c["inv_bc2_sqrt"], c["eps"]], dtype)
        adam(pa, ga, items, par, s["exp_avg"], s["exp_avg_sq"], s["max_exp_avg_sq"] if c["amsgrad"] else unused,
             k, c["amsgrad"])
    elif kind == "Adamax":
        b1, b2 = c["betas"]
        k = np.array([sgn, cwd, b1, 1.0 - b1, b2, c["eps"], c["clr"]], dtype)
        adamax(pa, ga, items, par, s["exp_avg"], s["exp_inf"], k)
    elif kind == "NAdam":
        b1, b2 = c["betas"]
        k = np.array([sgn, cwd, dwf, b1, 1.0 - b1, b2, 1.0 - b2, c["inv_bc2"], c["eps"], c["coef_g"], c["coef_m"], 1.0], dtype)
        nadam(pa, ga, items, par, s["exp_avg"], s["exp_avg_sq"], k)
    elif kind == "RAdam":
        b1, b2 = c["betas"]
        k = np.array([sgn, cwd, dwf, b1, 1.0 - b1, b2, 1.0 - b2, c["inv_bc1"], c["lr"], c["bc2_sqrt"], c["eps"],
                      c["rect"]], dtype)
        radam(pa, ga, items, par, s["exp_avg"], s["exp_avg_sq"], k, c["adaptive"])
    else:  # pragma: no cover - every fused_kernel name is handled above
        raise KeyError(kind)





def addresses(arrays: list[np.ndarray]) -> np.ndarray:
    """The data addresses of C-contiguous arrays, as the kernels take them."""
    return np.array([a.__array_interface__["data"][0] for a in arrays], dtype=np.int64).reshape(-1)


_layout: bool | None = None


def layout_ok() -> bool:
    """True when ``resolve`` reads NumPy's array struct right in this process (checked once on live
    arrays of several kinds; if not, gradients are checked and located in Python instead)."""
    global _layout
    if _layout is None:
        _layout = available() and _probe_layout()
    return _layout


def _probe_layout() -> bool:
    base = np.arange(24, dtype=np.float64)
    cases = [  # (array, expected shape, expected dtype, accepted?)
        (base.reshape(2, 3, 4), (2, 3, 4), base.dtype, True),
        (base[:1].reshape(()), (), base.dtype, True),
        (np.zeros(7, np.float32), (7,), np.dtype(np.float32), True),
        (base.reshape(4, 6).T, (6, 4), base.dtype, False),  # not C-contiguous
        (base[::2], (12,), base.dtype, False),
        (base.reshape(4, 6), (6, 4), base.dtype, False),  # another shape
        (base.astype(np.float32), (24,), base.dtype, False),  # another dtype
        (np.frombuffer(base.tobytes(), np.float64, 4, 1), (4,), base.dtype, False),  # not aligned
        (np.ma.masked_array(base), (24,), base.dtype, False),  # a subclass
        ([0.0] * 24, (24,), base.dtype, False),  # not an array
    ]
    try:
        for x, shape, dtype, accepted in cases:
            out = np.zeros(1, np.int64)
            found = resolve(np.array([id(x)], np.int64), np.array([len(shape)], np.int64),
                            np.array(shape, np.int64).reshape(-1), np.zeros(1, np.int64),
                            np.array([id(dtype)], np.int64), id(np.ndarray), out)
            if (found == -1) != accepted or (accepted and out[0] != x.__array_interface__["data"][0]):
                return False
        return True
    except Exception:  # pragma: no cover - a build that cannot compile the resolver
        return False


def chunk_size(total: int, threads: int) -> int:
    """Elements per work item of a threaded bucket of ``total`` elements: CHUNK, or fewer, so that the
    bucket makes about two items of equal size per thread (threads take equal numbers of items, so one
    leaf of 1e5 elements cut into 65,536 + 34,464 would keep one thread waiting for the other); a
    multiple of 1,024 elements, so items start on cache-line and block boundaries."""
    per_item = -(-total // (2 * max(1, threads)))
    return int(min(CHUNK, max(1024, -(-per_item // 1024) * 1024)))


def work_items(sizes: list[int], chunk: int = CHUNK) -> np.ndarray:
    """Rows ``(leaf, start, stop, leaf offset)`` in the bucket's flat index, leaves split into pieces of
    ``chunk`` elements."""
    rows = []
    off = 0
    for j, n in enumerate(sizes):
        for lo in range(0, n, chunk):
            rows.append((j, off + lo, off + min(n, lo + chunk), off))
        off += n
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def threads() -> int:
    """The number of threads the kernels' parallel loops run on (only asked when Numba is available)."""
    return get_num_threads()
