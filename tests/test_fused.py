"""The fused Numba kernels against the NumPy reference rules they implement.

For every optimizer and a set of configurations derived from its hyperparameters (each option turned
on alone, then many at once), in float32 and float64, on single arrays (small and large enough to be
split across threads), many arrays, 0-d arrays, mixed dtypes and non-contiguous views, the default
(fused) path must follow the reference path (``ADAMKIT_NO_NUMBA=1``) to rounding.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import adamkit as ak
from adamkit import _kernels

pytestmark = pytest.mark.skipif(not _kernels.available(), reason="fused kernels need Numba")

# How each hyperparameter is varied from its default (with what it needs to be valid).
VARIATIONS = {
    "maximize": {"maximize": True},
    "weight_decay": {"weight_decay": 0.1},
    "decoupled_weight_decay": {"decoupled_weight_decay": True, "weight_decay": 0.1},
    "amsgrad": {"amsgrad": True},
    "bias_correction": {"bias_correction": False},
    "momentum": {"momentum": 0.9},
    "dampening": {"momentum": 0.9, "dampening": 0.3},
    "nesterov": {"momentum": 0.9, "nesterov": True},
    "centered": {"centered": True},
    "lr_decay": {"lr_decay": 0.05},
    "initial_accumulator_value": {"initial_accumulator_value": 0.3},
    "momentum_decay": {"momentum_decay": 0.02},
    "betas": {"betas": (0.5, 0.9)},
    "alpha": {"alpha": 0.9},
    "eps": {"eps": 1e-3},
}


def configurations(cls):
    """Default, each variation the class accepts alone, and all compatible ones together."""
    out = [{}]
    combo: dict = {}
    for key, change in VARIATIONS.items():
        if key in cls.defaults and all(k in cls.defaults for k in change):
            out.append(dict(change))
            if key not in ("nesterov", "bias_correction"):  # nesterov excludes dampening
                combo.update(change)
    out.append(combo)
    if "nesterov" in cls.defaults:
        out.append({"momentum": 0.9, "nesterov": True, "weight_decay": 0.1, "maximize": True})
    return out


CASES = [(name, cfg) for name, cls in ak.OPTIMIZERS.items() for cfg in configurations(cls)]


def _grads(rng, shapes, dtype):
    """Gradients with magnitudes from 1e-6 to 1e3 and some exact zeros."""
    out = []
    for s in shapes:
        g = rng.choice([-1.0, 1.0], s) * 10.0 ** rng.uniform(-6, 3, s) * (rng.random(s) > 0.1)
        out.append(np.asarray(g, dtype=dtype))
    return out


def _pair(name, cfg, make_params, monkeypatch):
    """The same optimizer built twice: on the fused path and on the reference path."""
    cls = ak.OPTIMIZERS[name]
    pa, pb = make_params(), make_params()
    fused = cls(pa, lr=1e-2, **cfg)
    monkeypatch.setenv("ADAMKIT_NO_NUMBA", "1")
    ref = cls(pb, lr=1e-2, **cfg)
    monkeypatch.delenv("ADAMKIT_NO_NUMBA")
    return fused, pa, ref, pb


def _assert_close(a, b, dtype, before=None):
    """``a`` (fused) equals ``b`` (reference) to rounding: float64 within 1e-14 relative per step, as
    the issue asks, float32 within 2e-6 (about 16 units in the last place). Relative to the larger of
    the result and the step taken from ``before``: where a parameter passes near zero (``p - u`` with
    ``u`` close to ``p``), a rounding-level difference in ``u`` is small against ``u``, not against the
    result."""
    rtol = 1e-14 if dtype == np.float64 else 2e-6
    scale = np.abs(b) if before is None else np.maximum(np.abs(b), np.abs(np.asarray(before) - b))
    scale = np.maximum(scale, np.finfo(dtype).tiny)
    assert np.all(np.abs(a - b) <= rtol * scale), float(np.max(np.abs(a - b) / scale))


def _step_both(fused, pa, ref, pb, grads, grads_ref=None):
    """One step of each path from the same parameters and state, compared to rounding (parameters and
    every state slot); then the reference path takes the fused path's results, so that every step is
    compared on its own and rounding differences do not pile up along the trajectory."""
    leaves = list(pa.values()) if isinstance(pa, dict) else list(pa)
    ref_leaves = list(pb.values()) if isinstance(pb, dict) else list(pb)
    before = [x.copy() for x in leaves]
    state = fused.state_dict()["state"]
    fused.step(grads)
    ref.step(grads if grads_ref is None else grads_ref)
    for a, b, x in zip(leaves, ref_leaves, before):
        _assert_close(a, b, a.dtype, x)
    sa, sb = fused.state_dict(), ref.state_dict()
    for leaf in sa["state"]:
        for slot in sa["state"][leaf]:
            x = state.get(leaf, {}).get(slot)
            _assert_close(sa["state"][leaf][slot], sb["state"][leaf][slot], sa["state"][leaf][slot].dtype, x)
    for a, b in zip(leaves, ref_leaves):
        b[...] = a
    ref.load_state_dict(sa)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name,cfg", CASES, ids=[f"{n}-{'-'.join(c) or 'default'}" for n, c in CASES])
def test_fused_step_follows_reference_rule(name, cfg, dtype, monkeypatch):
    rng = np.random.default_rng(1)
    # a 2-D array, a 0-d array, a vector: one bucket of several leaves
    shapes = [(4, 5), (), (7,)]
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    fused, pa, ref, pb = _pair(name, cfg, lambda: [x.copy() for x in init], monkeypatch)
    assert all(b.fused for g in fused._groups for b in g.buckets)
    assert not any(b.fused for g in ref._groups for b in g.buckets)
    for _ in range(12):
        _step_both(fused, pa, ref, pb, _grads(rng, shapes, dtype))


LAYOUTS = {
    # one array large enough to be chunked across threads, with a ragged last chunk
    "large-single": lambda rng, dt: [rng.standard_normal(2 * _kernels.PARALLEL_MIN + 12345).astype(dt)],
    # many arrays in one bucket, one of them split into several chunks, plus a 0-d array
    "many": lambda rng, dt: [rng.standard_normal(n).astype(dt) for n in [500] * 300 + [3 * _kernels.CHUNK + 7]]
    + [np.asarray(rng.standard_normal(), dtype=dt)],
    "zero-d": lambda rng, dt: [np.asarray(rng.standard_normal(), dtype=dt)],
    # float32 and float64 side by side: two buckets
    "mixed-dtypes": lambda rng, dt: [rng.standard_normal(9).astype(np.float32), rng.standard_normal(9)],
    # non-contiguous views take the reference path (same numbers, no error)
    "views": lambda rng, dt: [rng.standard_normal((6, 8)).astype(dt)[:, ::2], rng.standard_normal((5, 3)).astype(dt).T,
                              rng.standard_normal(10).astype(dt)],
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop", "nadam"])
def test_fused_layouts(layout, name, monkeypatch):
    dtype = np.float32
    cfg = {"momentum": 0.9} if name in ("sgd", "rmsprop") else {"weight_decay": 0.01}
    # the same values and memory layouts, built twice from the same seed
    init = LAYOUTS[layout](np.random.default_rng(2), dtype)
    fused, pa, ref, pb = _pair(name, cfg, lambda: LAYOUTS[layout](np.random.default_rng(2), dtype), monkeypatch)
    for a, x in zip(pa, init):
        assert a.flags.c_contiguous == x.flags.c_contiguous and a.shape == x.shape
        np.testing.assert_array_equal(a, x)
    rng = np.random.default_rng(3)
    buckets = [b for g in fused._groups for b in g.buckets]
    assert all(b.fused == all(p.flags.c_contiguous for p in b.params) for b in buckets)
    for _ in range(5):
        grads = [np.asarray(g, dtype=p.dtype) for g, p in zip(_grads(rng, [x.shape for x in init], np.float64), pa)]
        _step_both(fused, pa, ref, pb, grads)


@pytest.mark.parametrize("size", [10, 2 * _kernels.PARALLEL_MIN + 3])
def test_fused_nonfinite_check_names_the_leaf_and_changes_nothing(size):
    rng = np.random.default_rng(3)
    params = {"a": rng.standard_normal(size), "b": rng.standard_normal(size), "c": rng.standard_normal(5)}
    opt = ak.Adam(params, lr=0.1)
    opt.step({k: np.ones_like(v) for k, v in params.items()})
    before = {k: v.copy() for k, v in params.items()}
    state = opt.state_dict()
    grads = {k: np.ones_like(v) for k, v in params.items()}
    grads["b"][size // 2] = np.inf
    with pytest.raises(FloatingPointError, match=r"parameter 'b' at step 2"):
        opt.step(grads)
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])
    after = opt.state_dict()
    assert after["step_count"] == state["step_count"] == 1
    for leaf in state["state"]:
        for slot in state["state"][leaf]:
            np.testing.assert_array_equal(after["state"][leaf][slot], state["state"][leaf][slot])
    grads["b"][size // 2] = np.nan
    skip = ak.Adam({k: v.copy() for k, v in params.items()}, nonfinite="skip")
    skip.step(grads)
    assert skip.skipped_steps == 1 and skip.step_count == 0


def test_kernels_are_cached_on_disk(tmp_path):
    """A second process loads the compiled kernel from the cache instead of compiling it again."""
    code = textwrap.dedent("""
        import numpy as np, adamkit as ak
        from adamkit import _kernels
        p = np.zeros(10)
        ak.Adam(p).step(np.ones(10))
        print(len(_kernels.adam.stats.cache_hits), len(_kernels.adam.stats.cache_misses))
    """)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    env.pop("ADAMKIT_NO_NUMBA", None)
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert first.stdout.split() == ["0", "1"], first.stdout + first.stderr  # compiled, then written
    hits, misses = map(int, second.stdout.split())
    assert (hits, misses) == (1, 0), second.stdout + second.stderr


def test_reference_path_is_forced_by_environment(monkeypatch):
    monkeypatch.setenv("ADAMKIT_NO_NUMBA", "1")
    opt = ak.Adam(np.zeros(3))
    assert not any(b.fused for g in opt._groups for b in g.buckets)
    monkeypatch.setenv("ADAMKIT_NO_NUMBA", "0")
    opt = ak.Adam(np.zeros(3))
    assert all(b.fused for g in opt._groups for b in g.buckets)


def test_user_subclass_overriding_the_rule_never_runs_a_stale_kernel():
    class Halved(ak.SGD):
        @staticmethod
        def reference(p, g, s, c):
            p -= 0.5 * c["lr"] * g

    p = np.ones(4)
    Halved(p, lr=1.0).step(np.ones(4))
    np.testing.assert_array_equal(p, 0.5)


def test_the_resolver_reads_numpys_array_struct_right():
    """``resolve`` reads data addresses out of NumPy's array struct; on this platform the probe of live
    arrays (C-contiguous ones accepted; transposed, strided, reshaped, other dtype, unaligned, subclass
    and non-array objects refused) must pass, else every gradient would take the slow Python route."""
    assert _kernels._probe_layout()
    assert _kernels.layout_ok()


def _addresses(arrays):
    return [a.__array_interface__["data"][0] for a in arrays]


@pytest.mark.parametrize("compiled", [True, False], ids=["resolver", "python-route"])
def test_gradients_are_read_where_they_lie(compiled, monkeypatch):
    """C-contiguous gradients of the right shape and dtype are never copied: the kernel reads them at
    their own addresses (the resolver, or the Python route when it is off). Anything else (transposed,
    strided, another dtype, a subclass, a Python float) is converted first. All give the reference."""
    if not compiled:
        monkeypatch.setattr(_kernels, "_layout", False)
    rng = np.random.default_rng(4)
    shapes = [(3, 4), (), (5,)]
    init = [rng.standard_normal(s) for s in shapes]
    fused, pa, ref, pb = _pair("adam", {}, lambda: [x.copy() for x in init], monkeypatch)
    bucket = fused._groups[0].buckets[0]
    buf = rng.standard_normal(1 + 12 + 1 + 5 + 1)
    packed = [buf[1:13].reshape(3, 4), buf[13:14].reshape(()), buf[14:19]]
    assert bucket.locate(packed) is compiled
    odd = [rng.standard_normal((4, 3)).T, 0.25, rng.standard_normal(10)[::2]]  # converted, then read
    mixed = [rng.standard_normal((3, 4)).astype(np.float32), np.ma.masked_array(rng.standard_normal(())),
             rng.standard_normal(5)]
    for grads in (packed, odd, mixed, [g.copy() for g in packed]):
        work = fused._groups[0].bucket_grads(grads)
        if grads is packed:
            assert list(bucket.ga) == _addresses(packed)
        else:
            assert len(work) == 1 and list(bucket.ga) == _addresses(work[0][1])
        _step_both(fused, pa, ref, pb, grads)


def test_gradient_buffers_are_read_in_place_and_give_the_same_steps(monkeypatch):
    rng = np.random.default_rng(5)
    shapes = {"w": (30, 4), "b": (4,), "s": ()}
    init = {k: rng.standard_normal(s) for k, s in shapes.items()}
    fused, pa, ref, pb = _pair("adam", {}, lambda: {k: v.copy() for k, v in init.items()}, monkeypatch)
    bufs = fused.gradient_buffers()
    assert bufs is fused.gradient_buffers() and set(bufs) == set(shapes)
    assert all(bufs[k].shape == s and not bufs[k].any() for k, s in shapes.items())
    bucket = fused._groups[0].buckets[0]
    for _ in range(3):
        for k in bufs:
            bufs[k][...] = rng.standard_normal(shapes[k])
        _step_both(fused, pa, ref, pb, bufs, grads_ref={k: v.copy() for k, v in bufs.items()})
        assert list(bucket.ga) == _addresses([bufs[k] for k in ("w", "b", "s")])
    groups = ak.SGD([{"params": [np.zeros(3)]}, {"params": {"x": np.zeros(2)}}]).gradient_buffers()
    assert isinstance(groups, list) and groups[0][0].shape == (3,) and groups[1]["x"].shape == (2,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_threaded_check_counts_every_element(dtype):
    """The threaded check walks each work item as two interleaved halves, in blocks with prefetching:
    a NaN or infinity at any block, half, chunk or leaf edge is counted exactly once, and a finite array
    counts zero."""
    sizes = [2 * _kernels.CHUNK + 300, 257, _kernels.CHUNK, 1, 129]
    arrays = [np.ones(n, dtype) for n in sizes]
    items = _kernels.work_items(sizes)
    ga = _kernels.addresses(arrays)
    like = _kernels.empty(np.dtype(dtype))
    assert _kernels.count_nonfinite(ga, items, like) == 0
    for j, n in enumerate(sizes):
        spans = [(lo - off, hi - off) for leaf, lo, hi, off in items if leaf == j]
        # every edge of every work item, and every 64-element boundary (blocks are 64 or 128 elements)
        # around its middle, where the second half starts
        where = {i for lo, hi in spans for i in (lo, lo + 1, hi - 2, hi - 1)}
        where |= {i for lo, hi in spans for d in range(-260, 261) if d % 64 in (0, 1, 63)
                  for i in [(lo + hi) // 2 + d] if lo <= i < hi}
        for i in sorted(where):
            if not 0 <= i < n:
                continue
            for bad in (np.nan, np.inf, -np.inf):
                arrays[j][i] = bad
                assert _kernels.count_nonfinite(ga, items, like) == 1, (j, i)
                assert _kernels.first_nonfinite(ga, items, like) == j
                arrays[j][i] = 1.0


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_work_items_give_every_thread_an_equal_share(threads):
    """A threaded bucket is cut into items of at most CHUNK elements, multiples of 1,024 (items start on
    cache-line and block boundaries), all of one size but the last; a bucket too small for two CHUNKs
    per thread is cut finer, into two items per thread at least. Split into equal runs of items, one
    per thread (as the parallel loop splits them), no thread of such a bucket gets more than its share
    of the elements plus the rounding of its items (a leaf of 1e5 cut into 65,536 + 34,464 elements
    would fail that), and no thread of a long one more than one CHUNK beyond its share."""
    for total in (_kernels.PARALLEL_MIN, 77_881, 100_000, 2 * threads * _kernels.CHUNK - 1, 10**7 + 3):
        chunk = _kernels.chunk_size(total, threads)
        assert chunk % 1024 == 0 and 1024 <= chunk <= _kernels.CHUNK
        items = _kernels.work_items([total], chunk)
        n = len(items)
        assert n >= 2 * threads
        assert (items[:, 1] % 1024 == 0).all() and len({int(k) for k in items[:-1, 2] - items[:-1, 1]}) == 1
        runs = [n // threads + (t < n % threads) for t in range(threads)]
        bounds = np.concatenate([[0], np.cumsum(runs)])
        loads = [int((items[a:b, 2] - items[a:b, 1]).sum()) for a, b in zip(bounds[:-1], bounds[1:])]
        assert sum(loads) == total
        if total >= 2 * threads * _kernels.CHUNK:  # long buckets: CHUNKs, and one more at most
            assert chunk == _kernels.CHUNK and max(loads) <= total / threads + chunk
        else:  # short ones: an equal share but for rounding
            assert max(loads) <= total / threads + 1024 * max(runs), (total, loads)
    sizes = [100_000, 3, 70_000]
    items = _kernels.work_items(sizes, 25_600)
    covered = [np.zeros(n, int) for n in sizes]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    for leaf, lo, hi, off in items:
        assert off == offsets[leaf]
        covered[leaf][lo - off:hi - off] += 1
    assert all((c == 1).all() for c in covered)


def test_a_bucket_above_parallel_min_runs_on_threads_in_balanced_items():
    """The threshold and the cut as a step sees them: below PARALLEL_MIN one thread, at it the bucket's
    items give each of the kernels' threads at least two."""
    small = ak.Adam([np.zeros(_kernels.PARALLEL_MIN - 1, np.float32)])._groups[0].buckets[0]
    large = ak.Adam([np.zeros(_kernels.PARALLEL_MIN, np.float32)])._groups[0].buckets[0]
    if not large.fused:
        pytest.skip("the fused path is off (no Numba, or ADAMKIT_NO_NUMBA)")
    assert not small.parallel and large.parallel
    assert len(large.items) >= 2 * _kernels.threads()
