"""Time one optimizer step against its memory-traffic limit and torch.optim (same as `adamkit bench`).

    python benchmarks/bench_step.py                      # everything but 1e8 (about 20 minutes)
    python benchmarks/bench_step.py --sizes 1e8 --no-numpy --out benchmarks/results/main_memory  # ~10 min
    python benchmarks/bench_step.py --optimizers adam --sizes 1e3 1e7 2000x500 --dtypes float32
"""

import sys

from adamkit._bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
