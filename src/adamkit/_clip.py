"""Gradient clipping by global norm over a structure of arrays (as ``torch.nn.utils.clip_grad_norm_``).

The global norm is the 2-norm of all entries of all leaves together, computed in float64 without
overflow. Clipping multiplies every leaf by ``max_norm / (norm + 1e-6)`` when that factor is below 1
(torch's formula, including its 1e-6); otherwise the gradients are returned unchanged. A non-finite norm
leaves the gradients unchanged (scaling would turn an infinity into NaN); the optimizer's ``nonfinite``
policy then decides what happens.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from . import _tree

__all__ = ["global_norm", "clip_by_global_norm"]


def _norm(x: Any, name: str = "tree") -> float:
    """The 2-norm of one array, in float64, rescaled when the squares would overflow."""
    if not isinstance(x, np.ndarray):
        if not isinstance(x, (numbers.Real, np.generic, list, tuple)) or isinstance(x, (str, bytes)):
            raise TypeError(f"{name}: expected a real array, got {type(x).__name__}")
        x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected a real array (float or integer), got dtype {x.dtype}")
    if x.size == 0:
        return 0.0
    flat = np.asarray(x).reshape(-1)  # a subclass (memmap, matrix, masked array) as a plain array
    if flat.dtype != np.float64:
        flat = flat.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        s = float(flat @ flat)
    if s < math.inf:
        return math.sqrt(s)
    m = float(np.max(np.abs(flat)))
    if not math.isfinite(m):
        return m  # inf, or nan when some entry is nan
    scaled = flat / m
    return m * math.sqrt(float(scaled @ scaled))


def global_norm(tree: Any, *, name: str = "tree") -> float:
    """The 2-norm of all entries of all arrays in ``tree`` (an array, or nested dicts/lists/tuples).

    Computed as the norm of the per-array norms (as torch does), without overflow. ``name`` is what
    error messages call ``tree`` (a leaf that is not a real array raises ``TypeError``).
    """
    if type(tree) is np.ndarray:
        return _norm(tree, name)
    leaves, names, _ = _tree.flatten(tree, prefix=name)
    if not leaves:
        raise ValueError(f"{name}: expected at least one array, got {_tree._describe(tree)} without arrays")
    if len(leaves) == 1:
        return _norm(leaves[0], names[0])
    return math.hypot(*map(_norm, leaves, names))


def clip_by_global_norm(tree: Any, max_norm: float, *, name: str = "tree") -> tuple[Any, float]:
    """Return ``(clipped, norm)``: ``tree`` scaled so its global norm is at most ``max_norm``.

    ``norm`` is the global norm before clipping. Leaves are new arrays when scaled; when no scaling is
    needed (or the norm is not finite) the original structure is returned as is.

    Example::

        >>> import numpy as np, adamkit as ak
        >>> g, n = ak.clip_by_global_norm({"w": np.array([3.0, 0.0]), "b": np.array([4.0])}, 1.0)
        >>> round(n, 6), np.round(g["w"], 6).tolist(), np.round(g["b"], 6).tolist()
        (5.0, [0.6, 0.0], [0.8])
    """
    if isinstance(max_norm, bool) or not isinstance(max_norm, numbers.Real) \
            or not (0 < float(max_norm) < math.inf):
        raise ValueError(f"max_norm={max_norm!r}: expected a finite number > 0")
    norm = global_norm(tree, name=name)
    coef = float(max_norm) / (norm + 1e-6)
    if not math.isfinite(norm) or coef >= 1.0:
        return tree, norm
    leaves, _, treedef = _tree.flatten(tree)
    scaled = []
    for x in leaves:
        a = np.asarray(x)
        scaled.append(a * a.dtype.type(coef) if a.dtype.kind == "f" else a * coef)
    return treedef.unflatten(scaled), norm
