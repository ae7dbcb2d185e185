"""Could the update read the gradient from cache, right after the non-finite check has read it?

The default step reads every gradient once to check it, then runs the update, which reads it again.
If the caches kept the gradient between the two reads, the second would cost little and the checked
step could come close to the unchecked one. This script measures whether they do: for each size, it
reads a large array (to empty the caches of the arrays below), then reads an array of that size
twice in a row, with the kernel the benchmark uses for "read" (``_bench._read_threads``: all threads,
chunked and prefetched like the check). It prints the median speed of the first ("cold") and of the
second ("again") read. Where "again" is no faster than "cold", the caches did not keep the array.

    python benchmarks/reread.py [--repeat 9] [--flush-mb 1024]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from adamkit import _bench, _kernels

SIZES_MB = (1, 2, 4, 8, 16, 32, 40, 64, 128, 256)  # 40 MB: the gradient of a 1e7 float32 step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--flush-mb", type=int, default=1024, help="the array read to empty the caches")
    args = parser.parse_args()
    flush = np.ones(args.flush_mb * 2**20 // 4, np.float32)
    threads = _kernels.threads()
    print(f"{'MB':>5s} {'cold GB/s':>10s} {'again GB/s':>11s} {'again / cold':>13s}")
    for mb in SIZES_MB:
        x = np.ones(mb * 2**20 // 4, np.float32)
        chunk = _kernels.chunk_size(x.size, threads)
        _bench._read_threads(x, chunk)  # compile, fault the pages in
        cold, again = [], []
        for _ in range(args.repeat):
            _bench._read_threads(flush, _kernels.CHUNK)
            t0 = time.perf_counter()
            _bench._read_threads(x, chunk)
            t1 = time.perf_counter()
            _bench._read_threads(x, chunk)
            t2 = time.perf_counter()
            cold.append(t1 - t0)
            again.append(t2 - t1)
        c, a = statistics.median(cold), statistics.median(again)
        gb = x.nbytes / 1e9
        print(f"{mb:5d} {gb / c:10.1f} {gb / a:11.1f} {c / a:13.2f}")


if __name__ == "__main__":
    main()
