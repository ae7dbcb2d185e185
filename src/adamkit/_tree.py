"""Parameter structures: a single array, or nested dicts / lists / tuples of arrays.

``flatten`` turns a structure into its leaves, their names and a :class:`TreeDef`; ``TreeDef.flatten_like``
walks another structure (the gradients) that must mirror it, and ``TreeDef.unflatten`` rebuilds one.

Leaf names follow the way a user would index the structure: a bare array is ``"params"``, dict keys
give ``"w"`` and ``"enc.w"``, list or tuple items ``"[0]"`` and ``"layers[0].W"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

ROOT_NAME = "params"


@dataclass(frozen=True)
class TreeDef:
    """The shape of a structure: ``kind`` is ``"leaf"``, ``"dict"``, ``"list"`` or ``"tuple"``."""

    kind: str
    keys: tuple = ()  # dict keys, in insertion order
    children: tuple = ()  # TreeDefs of the children

    def __post_init__(self) -> None:
        # A dict or list whose entries are all arrays (the common case) is walked without recursion.
        object.__setattr__(self, "flat", self.kind != "leaf" and all(c.kind == "leaf" for c in self.children))

    @property
    def num_leaves(self) -> int:
        if self.kind == "leaf":
            return 1
        return sum(c.num_leaves for c in self.children)

    def unflatten(self, leaves: list) -> Any:
        """Rebuild a structure of this shape from ``leaves`` (in ``flatten`` order)."""
        it = iter(leaves)
        out = self._build(it)
        return out

    def _build(self, it):
        if self.kind == "leaf":
            return next(it)
        items = [c._build(it) for c in self.children]
        if self.kind == "dict":
            return dict(zip(self.keys, items))
        return tuple(items) if self.kind == "tuple" else items

    def flatten_like(self, tree: Any, what: str) -> list:
        """The leaves of ``tree``, which must mirror this structure (lists and tuples are interchangeable).

        Raises ``ValueError`` naming ``what`` and the position when the structures differ.
        """
        if self.kind == "leaf" and not isinstance(tree, (dict, list, tuple)):
            return [tree]
        if self.flat:
            if self.kind == "dict":
                if type(tree) is dict and len(tree) == len(self.keys):
                    try:
                        return list(map(tree.__getitem__, self.keys))
                    except KeyError:
                        pass
            elif isinstance(tree, (list, tuple)) and len(tree) == len(self.children):
                return list(tree)
        out: list = []
        self._walk(tree, "", out, what)
        return out

    def _walk(self, tree, path, out, what):
        if self.kind == "leaf":
            if isinstance(tree, (dict, list, tuple)):
                raise ValueError(
                    f"{what}{path or ''}: expected an array (mirroring the parameters), "
                    f"got a {type(tree).__name__}"
                )
            out.append(tree)
            return
        if self.kind == "dict":
            if not isinstance(tree, dict):
                raise ValueError(
                    f"{what}{path}: expected a dict with keys {list(self.keys)} (mirroring the parameters), "
                    f"got {_describe(tree)}"
                )
            if len(tree) != len(self.keys) or any(k not in tree for k in self.keys):
                raise ValueError(
                    f"{what}{path}: expected a dict with keys {sorted(map(str, self.keys))} (mirroring the "
                    f"parameters), got keys {sorted(map(str, tree.keys()))}"
                )
            for k, c in zip(self.keys, self.children):
                c._walk(tree[k], f"{path}[{k!r}]", out, what)
            return
        if not isinstance(tree, (list, tuple)):
            raise ValueError(
                f"{what}{path}: expected a {self.kind} of {len(self.children)} entries (mirroring the "
                f"parameters), got {_describe(tree)}"
            )
        if len(tree) != len(self.children):
            raise ValueError(
                f"{what}{path}: expected a {self.kind} of {len(self.children)} entries (mirroring the "
                f"parameters), got {len(tree)} entries"
            )
        for i, (x, c) in enumerate(zip(tree, self.children)):
            c._walk(x, f"{path}[{i}]", out, what)


def _describe(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"an array of shape {x.shape}"
    return f"a {type(x).__name__}"


def flatten(tree: Any, prefix: str = ""):
    """Return ``(leaves, names, treedef)`` of a structure of arrays.

    Anything that is not a dict, list or tuple is a leaf (validated by the caller).
    """
    leaves: list = []
    names: list[str] = []

    def walk(x, path):
        if isinstance(x, dict):
            keys = tuple(x.keys())
            kids = tuple(walk(x[k], f"{path}.{k}" if path else str(k)) for k in keys)
            return TreeDef("dict", keys, kids)
        if isinstance(x, (list, tuple)):
            kids = tuple(walk(v, f"{path}[{i}]") for i, v in enumerate(x))
            return TreeDef("tuple" if isinstance(x, tuple) else "list", (), kids)
        leaves.append(x)
        names.append(path or (prefix or ROOT_NAME))
        return TreeDef("leaf")

    treedef = walk(tree, prefix)
    return leaves, names, treedef
