"""adamkit: exact, fast first-order optimizers (Adam and its family) for NumPy arrays.

    import adamkit as ak
    opt = ak.Adam({"w": w, "b": b}, lr=1e-2)
    opt.step({"w": gw, "b": gb})     # w and b are updated in place
"""

from . import schedules
from ._optimizer import Optimizer
from ._optimizers import OPTIMIZERS, SGD, Adagrad, Adam, Adamax, AdamW, NAdam, RAdam, RMSprop, optimizer_class
from ._clip import clip_by_global_norm, global_norm
from ._minimize import as_scipy_method, minimize
from ._fit import History, epoch_batches, fit
from ._problems import PROBLEMS, Problem, Variant, problems
from ._compare import Method, Results, compare, load_results

__version__ = "0.1.0"

__all__ = [
    "Optimizer",
    "SGD",
    "Adagrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "Adamax",
    "NAdam",
    "RAdam",
    "OPTIMIZERS",
    "optimizer_class",
    "schedules",
    "minimize",
    "as_scipy_method",
    "clip_by_global_norm",
    "global_norm",
    "fit",
    "History",
    "epoch_batches",
    "Problem",
    "Variant",
    "PROBLEMS",
    "problems",
    "compare",
    "Results",
    "Method",
    "load_results",
]


def __getattr__(name: str):
    # adamkit.distributed and adamkit.DistributedOptimizer load on first use: `import adamkit` never needs mpi4py
    if name in ("distributed", "DistributedOptimizer"):
        import importlib

        module = importlib.import_module(".distributed", __name__)
        return module if name == "distributed" else module.DistributedOptimizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
