"""Time one optimizer step against its memory-traffic limit and torch.optim (same as `adamkit bench`).

    python benchmarks/bench_step.py                      # everything (several minutes)
    python benchmarks/bench_step.py --optimizers adam --sizes 1e3 1e7 2000x500 --dtypes float32
"""

import sys

from adamkit._bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
