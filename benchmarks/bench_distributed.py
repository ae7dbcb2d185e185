"""Step time and bytes communicated per step of adamkit.distributed against the number of ranks.

    python benchmarks/bench_distributed.py                       # ranks 1 2 3, sizes 1e5 1e6 1e7, Adam float32
    python benchmarks/bench_distributed.py --ranks 1 2 --sizes 1e6 --repeat 9
    python benchmarks/bench_distributed.py --model-only --bandwidth 12.5e9 --latency 2e-6 --membw 20e9

The driver starts ``mpiexec -n P`` for every P (this file again, with ``--worker``). Each run times,
for every size and for replicated and sharded (ZeRO-1) state: the whole ``step`` (the slowest rank,
median of ``--repeat`` timed steps after warm-up), its two halves (``reduce``: packing and the
collective; ``apply``: the update, plus the all-gather when sharded), the plain single-process optimizer
step for reference (P = 1 only), the bytes moved per step and the optimizer state per rank. The ranks
share this machine's cores and memory, so the "network" is MPICH's shared memory. Results are printed
and written to ``<out>/bench_distributed.json``, with the analytic model of the step time for a cluster
(``model``, below) evaluated for the same sizes.

Numba threads: P = 1 uses all cores; with P > 1 every rank gets ``max(1, cores // P)`` threads.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# bytes of memory traffic per parameter of one fused Adam update, in units of the element size:
# read p, g, m, v and write p, m, v
ADAM_TRAFFIC = 7


def model(P: int, n: float, itemsize: int = 4, *, bandwidth: float, latency: float, membw: float,
          traffic: float = ADAM_TRAFFIC, shard: bool = False) -> dict:
    """Analytic step time (seconds) of one data-parallel step for P ranks, one per node.

    S = n * itemsize bytes of gradients (and of parameters). Ring algorithms:
      allreduce       2 (P-1)/P * S / bandwidth + 2 (P-1) * latency
      reduce-scatter    (P-1)/P * S / bandwidth +   (P-1) * latency      (ZeRO-1: plus an all-gather,
      all-gather        (P-1)/P * S / bandwidth +   (P-1) * latency       the same volume in total)
    Local memory traffic at ``membw`` bytes/s: packing the gradients into the buffer (2S) and the
    division by the total weight (2S, or 2S/P sharded); replicated: the full update (traffic * S; the
    optimizer reads the averaged gradients where they lie, in the buffer); sharded: the update of 1/P of the
    parameters (traffic * S / P), the copy of the rank's parameters into the buffer (2S/P) and the copy
    of the gathered parameters back into the arrays (2S).
    """
    S = n * itemsize
    steps = 2 * (P - 1)  # messages of a ring allreduce, or of reduce-scatter + all-gather
    comm = (2 * (P - 1) / P * S / bandwidth + steps * latency) if P > 1 else 0.0
    if shard:
        local = (2 * S + 2 * S / P + traffic * S / P + 2 * S / P + 2 * S) / membw
    else:
        local = (2 * S + (2 * S if P > 1 else 0) + traffic * S) / membw
    return {"comm": comm, "local": local, "total": comm + local}


# --------------------------------------------------------------------------------------------------
# worker: runs under mpiexec


def _leaves(n: int, dtype) -> dict:
    """A two-layer model's parameters totalling n elements: two matrices and two small vectors."""
    b1, b2 = max(1, n // 1000), max(1, n // 2000)
    w1 = (n - b1 - b2) * 3 // 5
    w2 = n - b1 - b2 - w1
    return {"W1": np.zeros(w1, dtype), "b1": np.zeros(b1, dtype), "W2": np.zeros(w2, dtype),
            "b2": np.zeros(b2, dtype)}


def worker(args) -> None:
    from mpi4py import MPI

    import adamkit as ak
    from adamkit.distributed import DistributedOptimizer

    comm = MPI.COMM_WORLD
    rank, P = comm.Get_rank(), comm.Get_size()
    dtype = np.dtype(args.dtype)
    records = []

    def timed(fn) -> float:
        comm.Barrier()
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        return comm.allreduce(dt, op=MPI.MAX)  # a step is as slow as its slowest rank

    for size in args.sizes:
        n = int(float(size))
        rng = np.random.default_rng(rank)
        params = _leaves(n, dtype)
        grads = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in params.items()}
        rec = {"ranks": P, "n": n, "dtype": dtype.name, "itemsize": dtype.itemsize}
        if P == 1:  # the plain optimizer, no MPI in the step
            opt = ak.Adam(params, lr=1e-3, nonfinite="ignore")
            for _ in range(args.warmup):
                opt.step(grads)
            rec["plain_step_s"] = statistics.median(timed(lambda: opt.step(grads)) for _ in range(args.repeat))
        for shard in (False, True):
            d = DistributedOptimizer(ak.Adam(params, lr=1e-3, nonfinite="ignore"), comm, shard_state=shard)
            for _ in range(args.warmup):
                d.step(grads)
            steps = [timed(lambda: d.step(grads)) for _ in range(args.repeat)]
            halves = []
            for _ in range(args.repeat):
                box = {}
                t_red = timed(lambda: box.setdefault("r", d.reduce(grads)))
                t_app = timed(lambda: d.step(box["r"]))
                halves.append((t_red, t_app))
            key = "sharded" if shard else "replicated"
            rec[key] = {
                "step_s": statistics.median(steps),
                "reduce_s": statistics.median(h[0] for h in halves),
                "apply_s": statistics.median(h[1] for h in halves),
                "collectives_per_step": d.collectives_per_step,
                **{f"comm_{k}": v for k, v in d.comm_bytes.items()},
                "state_bytes_per_rank": comm.allreduce(d.state_nbytes, op=MPI.MAX),
            }
            del d
        records.append(rec)
        if rank == 0:
            print(f"  P={P} n={n:.0e}: replicated {rec['replicated']['step_s'] * 1e3:.2f} ms, "
                  f"sharded {rec['sharded']['step_s'] * 1e3:.2f} ms", flush=True)
    if rank == 0:
        Path(args.worker).write_text(json.dumps(records))


# --------------------------------------------------------------------------------------------------
# driver


def _membw(n: int = 20_000_000) -> float:
    """This machine's copy bandwidth (bytes read + written per second), one thread."""
    a, b = np.ones(n), np.empty(n)
    best = min(_time(lambda: np.copyto(b, a)) for _ in range(5))
    return 2 * a.nbytes / best


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _mpiexec() -> str:
    cand = Path(sys.executable).parent / "mpiexec"
    return str(cand) if cand.exists() else "mpiexec"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--sizes", nargs="+", default=["1e5", "1e6", "1e7"], help="parameters per model")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeat", type=int, default=7, help="timed steps; the median is reported")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--bandwidth", type=float, default=12.5e9, help="model: network bytes/s per link")
    parser.add_argument("--latency", type=float, default=2e-6, help="model: seconds per message")
    parser.add_argument("--membw", type=float, default=None, help="model: memory bytes/s (default: measured)")
    parser.add_argument("--model-ranks", nargs="+", type=int, default=[1, 2, 4, 8, 16, 64])
    parser.add_argument("--model-only", action="store_true", help="print the model, run and write nothing")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    membw = args.membw or _membw()
    itemsize = np.dtype(args.dtype).itemsize
    modelled = []
    for size in args.sizes:
        n = int(float(size))
        for P in args.model_ranks:
            for shard in (False, True):
                m = model(P, n, itemsize, bandwidth=args.bandwidth, latency=args.latency, membw=membw, shard=shard)
                modelled.append({"ranks": P, "n": n, "sharded": shard, **m})
    cores = os.cpu_count() or 1
    results = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {cores} cores",
        "python": platform.python_version(), "numpy": np.__version__,
        "dtype": args.dtype, "optimizer": "Adam", "measured": [],
        "model": {"bandwidth": args.bandwidth, "latency": args.latency, "membw": membw, "rows": modelled},
    }
    try:
        from mpi4py import MPI
        results["mpi"] = MPI.Get_library_version().splitlines()[0].strip()
        results["mpi4py"] = __import__("mpi4py").__version__
    except ImportError:
        results["mpi"] = None

    if not args.model_only:
        for P in args.ranks:
            env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
            env["NUMBA_NUM_THREADS"] = str(cores if P == 1 else max(1, cores // P))
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "records.json"
                cmd = [_mpiexec(), "-n", str(P), sys.executable, str(Path(__file__).resolve()), "--worker", str(out),
                       "--sizes", *args.sizes, "--dtype", args.dtype, "--repeat", str(args.repeat),
                       "--warmup", str(args.warmup)]
                print(" ".join(cmd[:3]), "...", flush=True)
                subprocess.run(cmd, check=True, env=env)
                results["measured"].extend(json.loads(out.read_text()))

        print(f"\n{results['date']}  {results['machine']}  {results.get('mpi')}  Adam {args.dtype}")
        print(f"{'P':>2} {'n':>6} {'plain ms':>9} | {'repl ms':>8} {'reduce':>7} {'apply':>7} {'sent/rank MB':>12} "
              f"{'state MB':>8} | {'shard ms':>8} {'reduce':>7} {'apply':>7} {'sent/rank MB':>12} {'state MB':>8}")
        for rec in results["measured"]:
            r, s = rec["replicated"], rec["sharded"]
            plain = f"{rec['plain_step_s'] * 1e3:9.2f}" if "plain_step_s" in rec else f"{'':>9}"
            print(f"{rec['ranks']:>2} {rec['n']:>6.0e} {plain} | "
                  f"{r['step_s'] * 1e3:8.2f} {r['reduce_s'] * 1e3:7.2f} {r['apply_s'] * 1e3:7.2f} "
                  f"{r['comm_sent_per_rank'] / 1e6:12.2f} {r['state_bytes_per_rank'] / 1e6:8.2f} | "
                  f"{s['step_s'] * 1e3:8.2f} {s['reduce_s'] * 1e3:7.2f} {s['apply_s'] * 1e3:7.2f} "
                  f"{s['comm_sent_per_rank'] / 1e6:12.2f} {s['state_bytes_per_rank'] / 1e6:8.2f}")

    print(f"\nModel for a cluster (one rank per node): bandwidth {args.bandwidth / 1e9:g} GB/s, latency "
          f"{args.latency * 1e6:g} us, memory {membw / 1e9:.1f} GB/s; Adam {args.dtype}; ms per step")
    print(f"{'n':>6} {'P':>4} {'replicated':>11} {'(comm)':>8} {'sharded':>9} {'(comm)':>8}")
    for size in args.sizes:
        n = int(float(size))
        for P in args.model_ranks:
            rep = next(m for m in modelled if m["n"] == n and m["ranks"] == P and not m["sharded"])
            sh = next(m for m in modelled if m["n"] == n and m["ranks"] == P and m["sharded"])
            print(f"{n:>6.0e} {P:>4} {rep['total'] * 1e3:11.3f} {rep['comm'] * 1e3:8.3f} {sh['total'] * 1e3:9.3f} "
                  f"{sh['comm'] * 1e3:8.3f}")

    if args.model_only:  # nothing measured: keep the stored measurements
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_distributed.json").write_text(json.dumps(results, indent=1))
    print(f"\nwrote {out / 'bench_distributed.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
