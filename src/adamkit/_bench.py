"""``adamkit bench``: time one optimizer step against the memory-traffic limit and against torch.optim.

For every optimizer, size and dtype it measures, in one run on the current machine:

* ``limit``: a Numba kernel with the optimizer's memory traffic (it reads the same arrays and writes
  the same arrays, doing one addition per element), chunked and threaded like adamkit's kernels, the
  faster of a plain and a prefetching version (``limit plain``, ``limit prefetched``);
* ``adamkit``: ``opt.step(grads)`` with the default non-finite check, and with ``nonfinite="ignore"``;
  for several arrays also with the gradients computed into ``opt.gradient_buffers()``;
* what the check costs: ``check`` (the optimizer's look for non-finite values alone), and, where the
  kernels use threads, ``read`` (a kernel that reads the gradient once, as the check does),
  ``read, limit`` (that read followed by the limit kernel: the least a step can cost that reads every
  gradient before it writes anything, as the default step must) and ``limit reads`` (the limit's reads
  without its writes: how much of the limit is reading, where memory sets the pace, 1e6 elements and
  up; at 1e5 the arrays sit in the cores' L2 caches and its per-block reductions set the pace);
* ``numpy``: the textbook NumPy formula (Adam only) and adamkit's NumPy reference rule;
* ``torch``: torch.optim with ``foreach=False``, ``foreach=True`` and ``fused=True`` where supported,
  when torch is installed (gradients preset, so only ``step()`` is timed).

Each figure is the median of ``--repeat`` timings after warm-up, taken in interleaved rounds (every
contender once per round, each timing right after as many untimed calls of the same contender: the
steady state of back-to-back steps) so that a shared machine's drift moves all of them alike; the
limit runs on the optimizer's own arrays. Ratios are taken within the run. The size ``1e8`` is only
timed on request (``--sizes 1e8``): no cache holds it, so it shows the step from main memory.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import _kernels
from ._files import write_atomic
from ._optimizers import OPTIMIZERS

SIZES = {"1e3": [1000], "1e5": [100_000], "1e6": [1_000_000], "1e7": [10_000_000],
         "400x2500": [2500] * 400, "2000x500": [500] * 2000, "1e8": [100_000_000]}
# 1e8 only on request: a step that no cache holds (1.6 GB for Adam float32), from main memory
DEFAULT_SIZES = [s for s in SIZES if s != "1e8"]
TORCH_NAMES = {"sgd": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW",
               "adamax": "Adamax", "nadam": "NAdam", "radam": "RAdam"}
# A representative configuration per optimizer (momentum on, so SGD's traffic includes its buffer).
CONFIGS: dict[str, dict[str, Any]] = {"sgd": {"lr": 1e-3, "momentum": 0.9}, "rmsprop": {"lr": 1e-3}}


def _batch(fn: Callable[[], Any], min_time: float = 0.05) -> int:
    """Warm ``fn`` up (and compile it); return how many calls make one timing of at least ``min_time``."""
    fn()
    fn()
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    return max(1, int(min_time / max(once, 1e-7)))  # batch tiny steps so the timer is meaningful


def _interleaved_medians(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, float]:
    """Median milliseconds per call of each function, timed in ``repeat`` rounds that each time every
    function once, so that a machine that gets busier or quieter during the run shifts all of them alike
    (the ratios between them are what the benchmark reports). Each timing follows as many untimed calls
    of the same function as it times: every contender is timed in the steady state of back-to-back
    steps, with the caches holding what its own previous steps left, not what another contender left.
    Measured on the README's machine, whose large L3 is shared with other tenants and holds much of a
    1e7 step: after 16 ms of other work, or of sleep, the next Adam steps of 1e7 float32 take 6.2, 5.1,
    4.9, 4.6 ms ... against 4.4 ms back to back; one untimed call before each timing was not enough
    (which contender ran before then moved the checked step by 10%)."""
    inner = {k: _batch(fn) for k, fn in fns.items()}
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            for _ in range(inner[k]):
                fn()
            t0 = time.perf_counter()
            for _ in range(inner[k]):
                fn()
            samples[k].append((time.perf_counter() - t0) / inner[k])
    return {k: statistics.median(v) * 1e3 for k, v in samples.items()}


if _kernels.available():
    from numba import njit, prange

    # The limit: per element, read the gradient and the arrays an optimizer updates, write those back.
    # One kernel per number of updated arrays (parameter + state slots), chunked and threaded like ours.
    # It adds ``g * zero`` (``zero`` = 0 at run time, so the compiler keeps every load and store): the
    # values stay as they are, so it can run on the optimizer's own arrays between its steps.

    @njit(error_model="numpy", cache=True, inline="always")
    def _span1(g, a, zero):  # pragma: no cover - timed, not tested for values
        for i in range(g.size):
            a[i] = a[i] + g[i] * zero

    @njit(error_model="numpy", cache=True, inline="always")
    def _span2(g, a, b, zero):  # pragma: no cover
        for i in range(g.size):
            x = g[i] * zero
            a[i] = a[i] + x
            b[i] = b[i] + x

    @njit(error_model="numpy", cache=True, inline="always")
    def _span3(g, a, b, c, zero):  # pragma: no cover
        for i in range(g.size):
            x = g[i] * zero
            a[i] = a[i] + x
            b[i] = b[i] + x
            c[i] = c[i] + x

    @njit(error_model="numpy", cache=True, inline="always")
    def _span4(g, a, b, c, d, zero):  # pragma: no cover
        for i in range(g.size):
            x = g[i] * zero
            a[i] = a[i] + x
            b[i] = b[i] + x
            c[i] = c[i] + x
            d[i] = d[i] + x

    @njit(error_model="numpy", cache=True)
    def _span(g, rw, zero, lo, hi):  # pragma: no cover
        if len(rw) == 1:
            _span1(g[lo:hi], rw[0][lo:hi], zero)
        elif len(rw) == 2:
            _span2(g[lo:hi], rw[0][lo:hi], rw[1][lo:hi], zero)
        elif len(rw) == 3:
            _span3(g[lo:hi], rw[0][lo:hi], rw[1][lo:hi], rw[2][lo:hi], zero)
        else:
            _span4(g[lo:hi], rw[0][lo:hi], rw[1][lo:hi], rw[2][lo:hi], rw[3][lo:hi], zero)

    @njit(parallel=True, error_model="numpy", cache=True)
    def _traffic_threads(g, rw, zero, prefetch, chunk):  # pragma: no cover
        """Read ``g`` and the 1 to 4 arrays of ``rw`` once, write the arrays of ``rw`` once (all threads,
        in pieces of ``chunk`` elements like the optimizer's work items); with ``prefetch``, in blocks
        that prefetch ahead exactly as the optimizer kernels do."""
        n = g.size
        blk = _kernels.BLOCK // g.itemsize
        for k in prange((n + chunk - 1) // chunk):
            lo, hi = k * chunk, min(n, (k + 1) * chunk)
            if prefetch:
                for a in range(lo, hi, blk):
                    _kernels._fetch(g, a)
                    for x in rw:
                        _kernels._fetch(x, a)
                    _span(g, rw, zero, a, min(hi, a + blk))
            else:
                _span(g, rw, zero, lo, hi)

    @njit(error_model="numpy", cache=True)
    def _sum(x):  # pragma: no cover
        """The bitwise OR of ``x``'s bytes seen as 32-bit integers: integer operations reassociate freely,
        so the loop vectorises and the loads set the pace."""
        bits = x.view(np.int32)
        total = np.int32(0)
        for i in range(bits.size):
            total |= bits[i]
        return total

    @njit(parallel=True, error_model="numpy", cache=True)
    def _read_threads(g, chunk):  # pragma: no cover
        """Read ``g`` once (all threads, chunked like the limit) and return a sum of ORs of its bits: one
        read of the gradient, the most the non-finite check may cost. Each chunk is read as the check
        reads it: two interleaved halves, in blocks that prefetch ahead."""
        n = g.size
        blk = _kernels.BLOCK // g.itemsize
        total = 0
        for k in prange((n + chunk - 1) // chunk):
            x = g[k * chunk:min(n, (k + 1) * chunk)]
            half = (x.size + 2 * blk - 1) // (2 * blk) * blk
            for a in range(0, half, blk):
                _kernels._fetch_near(x, a)
                total += _sum(x[a:min(x.size, a + blk)])
                if half + a < x.size:
                    _kernels._fetch_near(x, half + a)
                    total += _sum(x[half + a:min(x.size, half + a + blk)])
        return total

    @njit(parallel=True, error_model="numpy", cache=True)
    def _reads_threads(g, rw, chunk):  # pragma: no cover
        """The limit's reads without its writes: read ``g`` and the arrays of ``rw`` once, in the limit's
        chunks and prefetched blocks, and return a sum of ORs of their bits. Against the limit, it shows
        what the writes add; divided by the number of arrays, what one read of an array costs."""
        n = g.size
        blk = _kernels.BLOCK // g.itemsize
        total = 0
        for k in prange((n + chunk - 1) // chunk):
            lo, hi = k * chunk, min(n, (k + 1) * chunk)
            for a in range(lo, hi, blk):
                e = min(hi, a + blk)
                _kernels._fetch(g, a)
                for x in rw:
                    _kernels._fetch(x, a)
                total += _sum(g[a:e])
                for x in rw:
                    total += _sum(x[a:e])
        return total

    @njit(error_model="numpy", cache=True)
    def _traffic_serial(g, rw, zero):  # pragma: no cover
        """The same on the calling thread, for sizes where the optimizer kernels do not start threads."""
        _span(g, rw, zero, 0, g.size)


def _traffic_arrays(opt: Any) -> tuple[int, int]:
    """(arrays read, arrays written) per element by one step of ``opt``: parameter, state slots, gradient."""
    slots = len(opt.slots(opt._hyperparameters(opt._groups[0])))
    return 2 + slots, 1 + slots


def _limit_fns(opt: Any, grads: list[np.ndarray]) -> dict[str, Callable[[], None]]:
    """The limit kernel on ``opt``'s own memory: its state buffers and, with one array, its parameter and
    gradient (several arrays: two contiguous arrays of their total size, since the limit is one stream).
    Same pages as the timed step, so the placement of the arrays in memory cannot favour either. Where
    the optimizer's kernels use threads, the limit is timed plain and with their prefetching, and the
    faster of the two is the limit."""
    b = opt._groups[0].buckets[0]
    slots = [b.flat[k] for k in opt.slots(opt._hyperparameters(opt._groups[0]))]
    if len(b.params) == 1:
        p, g = b.params[0].reshape(-1), grads[0].reshape(-1)
    else:
        p, g = np.zeros(b.size, b.dtype), np.concatenate(grads, axis=None)
    rw = (p, *slots)
    zero = b.dtype.type(0)
    if b.size < _kernels.PARALLEL_MIN:
        return {"limit": lambda: _traffic_serial(g, rw, zero)}
    c = b.chunk
    return {"limit plain": lambda: _traffic_threads(g, rw, zero, False, c),
            "limit prefetched": lambda: _traffic_threads(g, rw, zero, True, c),
            "limit reads": lambda: _reads_threads(g, rw, c),
            "read": lambda: _read_threads(g, c),
            "read, limit": lambda: (_read_threads(g, c), _traffic_threads(g, rw, zero, True, c))}


def _check_fn(opt: Any, grads: list[np.ndarray]) -> Callable[[], None]:
    """What a checked step adds to an unchecked one: the optimizer's own look for non-finite values in
    the gradients, located as a step locates them (once, here: both kinds of step do that)."""
    work = [bx for g in opt._groups for bx in g.bucket_grads(g.treedef.flatten_like(grads, g.grads_name))]

    def check() -> None:
        for b, x in work:
            if b.first_nonfinite(x) is not None:
                raise FloatingPointError("the benchmark's gradients are finite")
    return check


def _step_with_policy(opt: Any, grads: Any, policy: str) -> None:
    opt.nonfinite = policy
    opt.step(grads)


def _textbook_adam(params: list[np.ndarray], grads: list[np.ndarray]) -> Callable[[], None]:
    ms = [np.zeros_like(p) for p in params]
    vs = [np.zeros_like(p) for p in params]
    state = {"t": 0}
    b1, b2, lr, eps = 0.9, 0.999, 1e-3, 1e-8

    def step():
        state["t"] += 1
        t = state["t"]
        for p, g, m, v in zip(params, grads, ms, vs):
            m[...] = b1 * m + (1 - b1) * g
            v[...] = b2 * v + (1 - b2) * g ** 2
            mhat = m / (1 - b1 ** t)
            vhat = v / (1 - b2 ** t)
            p -= lr * mhat / (np.sqrt(vhat) + eps)

    return step


def _torch_fns(name: str, shapes: list[int], dtype: np.dtype) -> dict[str, Callable[[], None]]:
    try:
        import torch
    except ImportError:
        return {}
    tdt = torch.float32 if dtype == np.float32 else torch.float64
    out = {}
    cls = getattr(torch.optim, TORCH_NAMES[name])
    for label, kw in (("torch foreach=False", {"foreach": False}), ("torch foreach=True", {"foreach": True}),
                      ("torch fused", {"fused": True})):
        ps = [torch.zeros(n, dtype=tdt, requires_grad=True) for n in shapes]
        for p in ps:
            p.grad = torch.randn(p.numel(), dtype=tdt)
        try:
            opt = cls(ps, **CONFIGS.get(name, {}), **kw)
            opt.step()
        except (RuntimeError, TypeError, ValueError):
            continue  # e.g. no fused implementation of this optimizer on this device
        out[label] = opt.step
    return out


def run(optimizers: list[str], sizes: list[str], dtypes: list[str], repeat: int, torch: bool = True,
        numpy_ref: bool = True, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure and return the results (also printed row by row through ``progress``)."""
    if not _kernels.available():
        raise RuntimeError("adamkit bench needs Numba (and ADAMKIT_NO_NUMBA unset)")
    rows = []
    rng = np.random.default_rng(0)
    for dtype_name in dtypes:
        dtype = np.dtype(dtype_name)
        for size in sizes:
            shapes = SIZES[size]
            n = sum(shapes)
            grads = [rng.standard_normal(k).astype(dtype) for k in shapes]
            for name in optimizers:
                cls = OPTIMIZERS[name]
                # one optimizer for the checked and the unchecked step and the limit: the same memory
                main = cls([np.zeros(k, dtype) for k in shapes], **CONFIGS.get(name, {}))
                fns: dict[str, Callable[[], Any]] = {
                    "adamkit": functools.partial(_step_with_policy, main, grads, "raise"),
                    "adamkit unchecked": functools.partial(_step_with_policy, main, grads, "ignore"),
                    "check": _check_fn(main, grads),
                    **_limit_fns(main, grads)}
                if len(shapes) > 1:  # gradients computed into opt.gradient_buffers()
                    opt = cls([np.zeros(k, dtype) for k in shapes], **CONFIGS.get(name, {}))
                    bufs = opt.gradient_buffers()
                    for b, g in zip(bufs, grads):
                        b[...] = g
                    fns["adamkit gradient_buffers"] = functools.partial(opt.step, bufs)
                if numpy_ref and n <= 1_000_000:
                    os.environ["ADAMKIT_NO_NUMBA"] = "1"
                    try:
                        ref = cls([np.zeros(k, dtype) for k in shapes], **CONFIGS.get(name, {}), nonfinite="ignore")
                    finally:
                        del os.environ["ADAMKIT_NO_NUMBA"]
                    fns["numpy reference rule"] = functools.partial(ref.step, grads)
                    if name == "adam":
                        fns["numpy textbook"] = _textbook_adam([np.zeros(k, dtype) for k in shapes], grads)
                if torch:
                    fns.update(_torch_fns(name, shapes, dtype))
                times = _interleaved_medians(fns, repeat)
                times.setdefault("limit", min(times.get("limit plain", np.inf), times.get("limit prefetched", np.inf)))
                reads, writes = _traffic_arrays(main)
                nbytes = (reads + writes) * n * dtype.itemsize
                row = {"optimizer": name, "size": size, "elements": n, "arrays": len(shapes), "dtype": dtype_name,
                       "bytes_per_step": nbytes, "ms": times,
                       "gb_per_s": {k: nbytes / (v * 1e-3) / 1e9 for k, v in times.items()}}
                rows.append(row)
                progress(format_row(row))
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": _machine(),
        "repeat": repeat,
        "rows": rows,
    }


def _machine() -> dict[str, Any]:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "numpy": np.__version__}
    try:
        import numba

        info["numba"] = numba.__version__
        info["numba_threads"] = numba.get_num_threads()
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            info["cpu"] = names[0]
    except OSError:  # pragma: no cover
        pass
    return info


def format_row(row: dict[str, Any]) -> str:
    t = row["ms"]
    lim = t["limit"]
    fused = t.get("torch fused")
    parts = [f"{row['optimizer']:8s} {row['size']:>9s} {row['dtype']:8s}",
             f"adamkit {t['adamkit']:9.4f} ms ({t['adamkit'] / lim:5.2f}x limit",
             f"{t['adamkit'] / fused:5.2f}x torch fused)" if fused else "no torch fused)",
             f"unchecked {t['adamkit unchecked']:9.4f} ms ({t['adamkit unchecked'] / lim:5.2f}x limit"
             + (f", {t['adamkit unchecked'] / fused:5.2f}x torch fused)" if fused else ")"),
             f"limit {lim:9.4f} ms {row['gb_per_s']['limit']:6.1f} GB/s"]
    if "read" in t:  # one more read of the gradient; the checked step against a read followed by the limit
        parts.append(f"check {t['check']:8.4f} ms, read {t['read']:8.4f} ms ({t['read'] / lim:4.2f}x limit; "
                     f"the limit's reads alone {t['limit reads'] / lim:4.2f}x), "
                     f"checked {t['adamkit'] / t['read, limit']:5.2f}x (read, limit)")
    if "adamkit gradient_buffers" in t:
        b = t["adamkit gradient_buffers"]
        parts.append(f"gradient_buffers {b:8.4f} ms ({b / lim:5.2f}x limit"
                     + (f", {b / fused:5.2f}x torch fused)" if fused else ")"))
    return "  ".join(parts)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if r["arrays"] == 1]
    names = sorted({r["optimizer"] for r in rows})
    dtypes = sorted({r["dtype"] for r in rows})
    if not rows:  # only many-array sizes were measured: nothing to draw against size
        return
    if len({r["elements"] for r in rows}) == 1:  # one size (e.g. --sizes 1e8): bars per optimizer
        fig, axes = plt.subplots(len(dtypes), 1, figsize=(9, 3.5 * len(dtypes)), squeeze=False)
        for ax, dt in zip(axes[:, 0], dtypes):
            sel = sorted((r for r in rows if r["dtype"] == dt), key=lambda r: r["optimizer"])
            x = np.arange(len(sel))
            for dx, key, label in ((-0.2, "adamkit", "checked"), (0.2, "adamkit unchecked", "unchecked")):
                ax.bar(x + dx, [r["ms"][key] / r["ms"]["limit"] for r in sel], width=0.4, label=label)
            ax.axhline(1.0, color="k", lw=0.8, ls="--")
            ax.set_xticks(x, [r["optimizer"] for r in sel])
            ax.set_ylabel("step time / limit kernel")
            ax.set_title(f"adamkit step relative to its memory-traffic limit, {sel[0]['size']} elements, {dt}")
            ax.legend(fontsize=8)
        fig.tight_layout()
        write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110))
        plt.close(fig)
        return
    fig, axes = plt.subplots(len(dtypes), 1, figsize=(9, 4.5 * len(dtypes)), squeeze=False)
    colors = dict(zip(names, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 2))
    for ax, dt in zip(axes[:, 0], dtypes):
        for name in names:
            sel = sorted((r for r in rows if r["optimizer"] == name and r["dtype"] == dt), key=lambda r: r["elements"])
            if sel:
                x = [r["elements"] for r in sel]
                ax.plot(x, [r["ms"]["adamkit"] / r["ms"]["limit"] for r in sel], marker="o", color=colors[name],
                        label=name)
                ax.plot(x, [r["ms"]["adamkit unchecked"] / r["ms"]["limit"] for r in sel], marker=".",
                        ls=":", color=colors[name])
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_yticks([1, 1.25, 1.5, 2, 3, 5, 10, 20], labels=["1", "1.25", "1.5", "2", "3", "5", "10", "20"])
        ax.minorticks_off()
        ax.set_xlabel("elements (one array)")
        ax.set_ylabel("step time / limit kernel")
        ax.set_title(f"adamkit step relative to its memory-traffic limit, {dt} (solid: checked, dotted: unchecked)")
        ax.legend(ncol=4, fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adamkit bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), metavar="NAME",
                        help=f"optimizers to time (default: all of {', '.join(OPTIMIZERS)})")
    parser.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES, metavar="SIZE",
                        help=f"problem sizes: {', '.join(SIZES)} (default: all but 1e8, which needs a few GB "
                             f"of memory and runs from main memory rather than cache)")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"], metavar="DTYPE",
                        help="float32 and/or float64 (default: both)")
    parser.add_argument("--repeat", type=int, default=7, help="timings per figure; the median is reported (>= 5)")
    parser.add_argument("--no-torch", action="store_true", help="skip torch.optim even when installed")
    parser.add_argument("--no-numpy", action="store_true", help="skip the NumPy formulas (they are slow)")
    parser.add_argument("--out", default="benchmarks/results", help="directory for bench.json and bench.png")
    args = parser.parse_args(argv)
    for value, valid, what in ((args.optimizers, OPTIMIZERS, "--optimizers"), (args.sizes, SIZES, "--sizes"),
                               (args.dtypes, ("float32", "float64"), "--dtypes")):
        bad = [v for v in value if v not in valid]
        if bad:
            parser.error(f"{what}: unknown {bad}; valid choices: {', '.join(valid)}")
    if args.repeat < 5:
        parser.error(f"--repeat {args.repeat}: expected at least 5")
    if not _kernels.available():
        parser.error("adamkit bench needs Numba (is ADAMKIT_NO_NUMBA set?)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = run(args.optimizers, args.sizes, args.dtypes, args.repeat, torch=not args.no_torch,
                  numpy_ref=not args.no_numpy)
    write_atomic(out / "bench.json", json.dumps(results, indent=1))
    plot(results, out / "bench.png")
    print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
