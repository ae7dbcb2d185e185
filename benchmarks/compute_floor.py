"""How fast could each fused kernel be if memory were free? Its arithmetic floor against its traffic limit.

For every optimizer and dtype, time ``nonfinite="ignore"`` steps on one array of ``PARALLEL_MIN - 1``
elements (32,767) and on one of 1,000: small enough that parameter, gradient and state sit in the
core's L2 cache, and below ``PARALLEL_MIN`` so the kernel runs on one thread. The difference divided
by the difference in elements is the time per element without the fixed per-step cost; divided by
the number of threads the 1e7 step uses, it is what the arithmetic alone costs on all cores
(``floor``). Divided by the limit kernel's time per element at 1e7 (``benchmarks/results/bench.json``, same machine) it says how close to the traffic
limit the kernel can get: a floor near or above 1.0 means the kernel is bound by its divisions and
square roots, not by memory, on this machine.

    python benchmarks/compute_floor.py [--bench benchmarks/results/bench.json]
"""

from __future__ import annotations

import argparse
import functools
import json

import numba
import numpy as np

import adamkit as ak
from adamkit import _bench, _kernels

SMALL, LARGE = 1_000, _kernels.PARALLEL_MIN - 1  # the largest bucket that runs on the calling thread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", default="benchmarks/results/bench.json", help="a bench.json with 1e7 rows")
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    rows = {(r["optimizer"], r["dtype"]): r for r in json.load(open(args.bench))["rows"] if r["size"] == "1e7"}
    threads = numba.get_num_threads()
    print(f"{'optimizer':9s} {'dtype':8s} {'ns/elem, 1 thread':>18s} {'floor / limit':>14s} {'measured / limit':>17s}")
    for name, cls in ak.OPTIMIZERS.items():
        for dtype in (np.dtype(np.float32), np.dtype(np.float64)):
            row = rows.get((name, str(dtype)))
            if row is None:
                continue
            fns = {}
            for n in (SMALL, LARGE):
                grads = [np.random.default_rng(0).standard_normal(n).astype(dtype)]
                opt = cls([np.zeros(n, dtype)], **_bench.CONFIGS.get(name, {}), nonfinite="ignore")
                fns[str(n)] = functools.partial(opt.step, grads)
            ms = _bench._interleaved_medians(fns, args.repeat)
            per_elem = (ms[str(LARGE)] - ms[str(SMALL)]) / (LARGE - SMALL)  # ms per element on one thread
            limit = row["ms"]["limit"] / row["elements"]
            measured = row["ms"]["adamkit unchecked"] / row["ms"]["limit"]
            print(f"{name:9s} {str(dtype):8s} {per_elem * 1e6:18.3f} {per_elem / threads / limit:14.2f} {measured:17.2f}")


if __name__ == "__main__":
    main()
