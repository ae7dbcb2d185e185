"""The shared layer of every optimizer: parameter structures and groups, state, validation, non-finite
policy, schedules, ``state_dict`` and checkpoints.

A concrete optimizer (see ``_optimizers.py``) only declares its hyperparameters (the signature of its
``__init__``), validates them, names its state slots, computes the per-step scalars (bias corrections
and the like, in float64) and gives one readable NumPy reference rule. Everything else lives here.

State layout: within each parameter group the leaves are split by dtype into *buckets*; each state slot
of a bucket (``exp_avg``, ``exp_avg_sq``, ...) is one contiguous 1-D buffer, and each leaf sees a
reshaped view of its part. The user's parameter arrays are never copied: they are updated in place.
"""

from __future__ import annotations

import inspect
import math
import operator
import numbers
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from . import _checkpoint, _kernels, _tree
from . import schedules as _schedules

NONFINITE_POLICIES = ("raise", "skip", "ignore")
_FORMAT_VERSION = 1
_PARAM_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# --------------------------------------------------------------------------------------------------
# Hyperparameter checks shared by the optimizers. Each names the argument, the value and the expectation.


def check_real(name: str, value: Any, *, minimum: float | None = 0.0, maximum: float | None = None,
               open_min: bool = False, open_max: bool = False, why: str = "") -> float:
    """A finite real number in ``[minimum, maximum]`` (an end excluded when ``open_min``/``open_max``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}={value!r}: expected a real number")
    v = float(value)
    lo = "-inf" if minimum is None else minimum
    hi = "inf" if maximum is None else maximum
    expect = f"a finite number in {'(' if open_min else '['}{lo}, {hi}{')' if open_max else ']'}{why}"
    if not math.isfinite(v) or (minimum is not None and (v < minimum or (open_min and v == minimum))):
        raise ValueError(f"{name}={value!r}: expected {expect}")
    if maximum is not None and (v > maximum or (open_max and v == maximum)):
        raise ValueError(f"{name}={value!r}: expected {expect}")
    return v


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}={value!r}: expected True or False")
    return bool(value)


def check_betas(value: Any) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"betas={value!r}: expected a pair (beta1, beta2), each in [0, 1)")
    return (check_real("betas[0]", value[0], maximum=1.0, open_max=True),
            check_real("betas[1]", value[1], maximum=1.0, open_max=True))


def check_lr(value: Any) -> float | Callable[[int], float]:
    """``lr`` is a number >= 0 or a schedule: a callable of the step count."""
    if callable(value):
        return value
    return check_real("lr", value)


def _resolve_lr(lr: Any, count: int) -> float:
    if not callable(lr):
        return lr
    value = lr(count)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0.0 <= float(value) < math.inf):
        raise ValueError(f"lr schedule {lr!r} returned {value!r} at step count {count}: expected a finite number >= 0")
    return float(value)


# --------------------------------------------------------------------------------------------------


class _Bucket:
    """The leaves of one group that share a dtype; each state slot is one flat buffer over all of them.

    A *fused* bucket (C-contiguous leaves, Numba available) is updated by one kernel call per step,
    which reads every parameter and gradient where it lies, through a table of data addresses; others
    by the reference rule, leaf by leaf.
    """

    __slots__ = ("dtype", "index", "params", "names", "sizes", "offsets", "size", "flat", "views",
                 "fused", "pa", "ga", "items", "parallel", "chunk", "ndim", "dims", "dim_start", "descr")

    def __init__(self, dtype: np.dtype, index: list[int], params: list[np.ndarray], names: list[str],
                 fused: bool):
        self.dtype = dtype
        self.index = index  # positions of these leaves in the group's leaf list
        self.params = params
        self.names = names
        self.sizes = [p.size for p in params]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.size = int(self.offsets[-1])
        self.flat: dict[str, np.ndarray] = {}
        self.views: list[dict[str, np.ndarray]] = [{} for _ in params]
        self.fused = fused
        if fused:
            self.pa = _kernels.addresses(params)  # parameters never move: they are updated in place
            self.ga = np.zeros(len(params), np.int64)  # this step's gradients, filled by locate()
            self.parallel = self.size >= _kernels.PARALLEL_MIN
            self.chunk = _kernels.chunk_size(self.size, _kernels.threads()) if self.parallel else _kernels.CHUNK
            self.items = _kernels.work_items(self.sizes, self.chunk)
            # what locate() expects of each gradient: its parameter's shape and dtype object
            self.ndim = np.array([p.ndim for p in params], np.int64)
            self.dims = np.array([d for p in params for d in p.shape], np.int64).reshape(-1)
            self.dim_start = np.concatenate([[0], np.cumsum(self.ndim)[:-1]]).astype(np.int64)
            self.descr = np.array([id(p.dtype) for p in params], np.int64)

    def add_slot(self, slot: str, fill: float) -> None:
        buf = np.full(self.size, fill, dtype=self.dtype)
        self.flat[slot] = buf
        for k, p in enumerate(self.params):
            self.views[k][slot] = buf[self.offsets[k]:self.offsets[k + 1]].reshape(p.shape)

    def locate(self, grads: list) -> bool:
        """Fill ``self.ga`` with the data addresses of ``grads`` and return True when every gradient
        is an ndarray of its parameter's shape and dtype, C-contiguous and aligned (checked by one
        compiled loop, so thousands of arrays cost microseconds); else return False. Nothing is copied:
        the kernels read the gradients where they are."""
        if not _kernels.layout_ok():
            return False
        objects = np.fromiter(map(id, grads), np.int64, len(grads))
        return _kernels.resolve(objects, self.ndim, self.dims, self.dim_start, self.descr, _NDARRAY,
                                self.ga) < 0

    def locate_checked(self, grads: list[np.ndarray]) -> list[np.ndarray]:
        """``locate`` for gradients already checked and converted by ``_coerce_grad``: those that are not
        C-contiguous and aligned are copied; returns the arrays the kernel will read (keep them alive)."""
        grads = [x if x.flags.c_contiguous and x.flags.aligned else np.require(x, requirements="CA")
                 for x in grads]
        self.ga[:] = _kernels.addresses(grads)
        return grads

    def first_nonfinite(self, grads: list[np.ndarray]) -> str | None:
        """The name of the first leaf whose gradient has a NaN or an infinity, or None (fused buckets:
        the gradients ``locate`` found)."""
        if self.fused:
            like = _kernels.empty(self.dtype)
            if self.parallel and not _kernels.count_nonfinite(self.ga, self.items, like):
                return None
            j = _kernels.first_nonfinite(self.ga, self.items, like)
            return None if j < 0 else self.names[j]
        for name, x in zip(self.names, grads):
            with np.errstate(over="ignore", invalid="ignore"):
                total = np.add.reduce(x, axis=None)
            # a finite sum proves every entry finite; otherwise look closer (the sum may just overflow)
            if not math.isfinite(total) and not np.isfinite(x).all():
                return name
        return None


_NDARRAY = id(np.ndarray)


class _Group:
    """One parameter group: its user-facing dict, its leaves and buckets, and its scalar state."""

    __slots__ = ("spec", "treedef", "leaves", "names", "buckets", "all_fused", "shapes", "dtypes", "scalars",
                 "grads_name", "_seen", "_hp", "_slots_ok")

    def __init__(self, spec: dict, treedef: _tree.TreeDef, leaves: list[np.ndarray], names: list[str],
                 fused: bool):
        self.spec = spec
        self.treedef = treedef
        self.leaves = leaves
        self.names = names
        by_kind: dict[tuple, list[int]] = {}
        for i, p in enumerate(leaves):
            by_kind.setdefault((p.dtype, fused and p.flags.c_contiguous), []).append(i)
        self.buckets = [_Bucket(dt, idx, [leaves[i] for i in idx], [names[i] for i in idx], fu)
                        for (dt, fu), idx in by_kind.items()]
        self.all_fused = all(b.fused for b in self.buckets)
        self.shapes = [p.shape for p in leaves]
        self.dtypes = [p.dtype for p in leaves]
        self.scalars: dict[str, Any] = {}
        self.grads_name = "grads"  # how error messages name this group's gradients
        self._slots_ok = True  # False when a changed configuration may need a new state slot
        self._seen: tuple | None = None
        self._hp: dict[str, Any] = {}

    def bucket_grads(self, grads: list) -> tuple:
        """``(bucket, its gradients)`` for every bucket, each gradient checked against its parameter.

        Fused buckets locate their gradients by address (``_Bucket.locate``: one compiled check, no copy).
        Anything else, or a gradient that does not pass, takes the Python route: each gradient is checked
        and converted by ``_coerce_grad`` (which names the argument in its errors) and, when fused, located.
        """
        if self.all_fused:
            work = (((self.buckets[0], grads),) if len(self.buckets) == 1
                    else tuple((b, [grads[i] for i in b.index]) for b in self.buckets))
            if all(b.locate(x) for b, x in work):
                return work
        grads = list(grads)
        if not self._grads_match(grads):
            for i, (p, x) in enumerate(zip(self.leaves, grads)):
                if type(x) is not np.ndarray or x.dtype is not p.dtype or x.shape != p.shape:
                    grads[i] = _coerce_grad(self.names[i], p, x)
        work = []
        for b in self.buckets:
            x = grads if len(self.buckets) == 1 else [grads[i] for i in b.index]
            work.append((b, b.locate_checked(x) if b.fused else x))
        return tuple(work)

    def _grads_match(self, grads: list) -> bool:
        """True when every gradient is an ndarray of its parameter's shape and dtype (checked in C loops,
        which matters for thousands of arrays); else each is checked and converted one by one."""
        if len(grads) < 8:
            return False
        return (set(map(type, grads)) == _ARRAY_ONLY and list(map(_SHAPE, grads)) == self.shapes
                and list(map(_DTYPE, grads)) == self.dtypes)


_SHAPE = operator.attrgetter("shape")
_DTYPE = operator.attrgetter("dtype")
_ARRAY_ONLY = {np.ndarray}


class Optimizer:
    """Base class of adamkit's optimizers. See :class:`adamkit.Adam` for the common interface.

    Subclasses declare their hyperparameters as keyword arguments of ``__init__`` (names and defaults
    are read from the signature), and implement ``validate``, ``slots``, ``constants`` and
    ``reference``; ``state_slots`` and ``group_scalars`` (optional) let ``load_state_dict`` check a
    state_dict's slots and group scalars too.
    """

    defaults: ClassVar[dict[str, Any]] = {}
    #: The fused kernel of ``_kernels`` that implements ``reference`` exactly (None: reference only).
    #: A subclass inherits it only by naming it again, so overriding the rule never runs a stale kernel.
    fused_kernel: ClassVar[str | None] = None
    #: Hyperparameters fixed by the class (e.g. AdamW's decoupled weight decay), not arguments.
    fixed: ClassVar[dict[str, Any]] = {}
    #: Every state slot any configuration may use (``slots`` gives those one configuration needs), so
    #: that ``load_state_dict`` refuses others; None (a subclass that does not say): not checked.
    state_slots: ClassVar[tuple[str, ...] | None] = None
    #: Per-group scalars kept besides ``step`` (see ``constants``' ``next_scalars``), each with the
    #: check ``load_state_dict`` applies to it: ``check(name, value) -> value``; None: loaded unchecked.
    group_scalars: ClassVar[dict[str, Callable[[str, Any], Any]] | None] = None
    #: Set when another object holds this optimizer's state (a sharded DistributedOptimizer): then
    #: ``step``, ``state_dict``, ``load_state_dict``, ``save``, ``load`` and ``reset_state`` refuse.
    _moved_to: str | None = None

    def _refuse_if_moved(self, what: str) -> None:
        if self._moved_to is not None:
            raise RuntimeError(f"{what}: this optimizer's state is held by {self._moved_to}; call {what} on that "
                               f"object instead")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        sig = inspect.signature(cls.__init__)
        cls.defaults = {n: p.default for n, p in sig.parameters.items()
                        if n not in ("self", "params", "nonfinite")}
        cls._get_hyperparameters = staticmethod(operator.itemgetter(*cls.defaults))
        if "fused_kernel" not in cls.__dict__:
            cls.fused_kernel = None

    # ---- the parts a concrete optimizer provides --------------------------------------------------

    @classmethod
    def validate(cls, hp: dict[str, Any]) -> dict[str, Any]:  # pragma: no cover - abstract
        """Check a group's hyperparameters; return them normalised (floats, tuples)."""
        raise NotImplementedError

    @staticmethod
    def slots(hp: dict[str, Any]) -> dict[str, float]:  # pragma: no cover - abstract
        """The state slots this configuration needs, with their initial value."""
        raise NotImplementedError

    @staticmethod
    def constants(hp: dict[str, Any], t: int, scalars: dict[str, Any]) -> dict[str, Any]:
        """Per-step scalars (float64) for step ``t`` (1 on the first step); may set ``next_scalars``."""
        return {}

    @staticmethod
    def reference(p: np.ndarray, g: np.ndarray, s: dict[str, np.ndarray], c: dict[str, Any]) -> None:
        raise NotImplementedError  # pragma: no cover - abstract

    # ---- construction -----------------------------------------------------------------------------

    def __init__(self, params: Any, hyperparameters: dict[str, Any]):
        nonfinite = hyperparameters.get("nonfinite", "raise")
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite={nonfinite!r}: expected one of {', '.join(map(repr, NONFINITE_POLICIES))}")
        self.nonfinite = nonfinite
        base = {k: hyperparameters[k] for k in self.defaults}
        self.validate({**base, **self.fixed})

        self.params = params
        self._grouped = _is_group_list(params)
        specs = params if self._grouped else [{"params": params}]
        self.param_groups: list[dict[str, Any]] = []
        self._groups: list[_Group] = []
        fused = self.fused_kernel is not None and _kernels.available()
        for gi, spec in enumerate(specs):
            if not isinstance(spec, dict) or "params" not in spec:
                raise TypeError(f"params[{gi}]: expected a dict with a 'params' entry (a parameter group)")
            unknown = sorted(set(spec) - set(self.defaults) - {"params"})
            if unknown:
                raise ValueError(
                    f"params[{gi}]: unknown hyperparameter(s) {unknown}; {type(self).__name__} accepts "
                    f"{', '.join(self.defaults)}"
                )
            group = {**base, **spec}
            leaves, names, treedef = _tree.flatten(spec["params"], prefix=f"[{gi}]" if self._grouped else "")
            where = f"params[{gi}]['params']" if self._grouped else "params"
            if not leaves:
                raise ValueError(f"{where}: expected at least one array, got an empty {type(spec['params']).__name__}")
            for name, p in zip(names, leaves):
                _check_param(name, p)
            self.param_groups.append(group)
            self._groups.append(_Group(group, treedef, leaves, names, fused))
            if self._grouped:
                self._groups[-1].grads_name = f"grads[{gi}]"
        all_leaves = [p for g in self._groups for p in g.leaves]
        all_names = [n for g in self._groups for n in g.names]
        _check_unique_names(all_names)
        _check_distinct(all_leaves, all_names)

        self.step_count = 0
        self.skipped_steps = 0
        for g in self._groups:
            hp = self._hyperparameters(g)
            self._init_state(g, hp)

    def _init_state(self, g: _Group, hp: dict[str, Any]) -> None:
        g.scalars = {"step": 0}
        for b in g.buckets:
            b.flat.clear()
            for v in b.views:
                v.clear()
        self._ensure_slots(g, hp)

    def _ensure_slots(self, g: _Group, hp: dict[str, Any]) -> None:
        for slot, fill in self.slots(hp).items():
            for b in g.buckets:
                if slot not in b.flat:
                    b.add_slot(slot, fill)

    def _hyperparameters(self, g: _Group) -> dict[str, Any]:
        """The group's validated hyperparameters, re-checked only when the user changed them."""
        spec = g.spec
        try:
            seen = self._get_hyperparameters(spec)
        except KeyError:
            seen = None
        if seen != g._seen or seen is None:
            missing = sorted(set(self.defaults) - set(spec))
            if missing:
                raise ValueError(f"param group: hyperparameter(s) {missing} were removed; "
                                 f"{type(self).__name__} needs {', '.join(self.defaults)}")
            unknown = sorted(set(spec) - set(self.defaults) - {"params"})
            if unknown:
                raise ValueError(f"param group: unknown hyperparameter(s) {unknown}; "
                                 f"{type(self).__name__} accepts {', '.join(self.defaults)}")
            hp = self.validate({**{k: spec[k] for k in self.defaults}, **self.fixed})
            _check_eps(spec, hp, g)
            g._hp = hp
            # a snapshot: a list changed in place (betas[0] = ...) must compare unequal next time
            g._seen = None if seen is None else tuple(list(v) if isinstance(v, list) else v for v in seen)
            g._slots_ok = False  # a changed configuration may need a new slot (amsgrad=True): see step
        return g._hp

    # ---- the step ---------------------------------------------------------------------------------

    def step(self, grads: Any) -> None:
        """Apply one update to every parameter, in place, from ``grads`` (mirroring ``params``).

        Everything is checked (structure, shapes, kinds, hyperparameters and, unless
        ``nonfinite="ignore"``, finiteness) before anything is written.
        """
        if self._moved_to is not None:
            self._refuse_if_moved("step")
        groups = self._groups
        if self._grouped:
            if not isinstance(grads, (list, tuple)) or len(grads) != len(groups):
                raise ValueError(f"grads: expected a list with one entry per parameter group ({len(groups)}), "
                                 f"got {_tree._describe(grads)}"
                                 + (f" of {len(grads)} entries" if isinstance(grads, (list, tuple)) else ""))
            per_group = grads
        else:
            per_group = (grads,)
        count = self.step_count
        plans = []
        for g, gg in zip(groups, per_group):
            hp = self._hyperparameters(g)
            work = g.bucket_grads(g.treedef.flatten_like(gg, g.grads_name))
            lr = hp["lr"]
            if callable(lr):
                hp = {**hp, "lr": _resolve_lr(lr, count)}
            t = g.scalars["step"] + 1
            c = self.constants(hp, t, g.scalars)  # for every group before any is updated
            c.update(hp)
            plans.append((g, hp, work, t, c))

        if self.nonfinite != "ignore":
            for _, _, work, _, _ in plans:
                for b, x in work:
                    bad = b.first_nonfinite(x)
                    if bad is None:
                        continue
                    if self.nonfinite == "skip":
                        self.skipped_steps += 1
                        return
                    raise FloatingPointError(
                        f"non-finite gradient for parameter {bad!r} at step {count + 1}; nothing was changed "
                        f"(pass nonfinite='skip' to skip such steps)")

        kernel = self.fused_kernel
        for g, hp, work, t, c in plans:
            if not g._slots_ok:
                self._ensure_slots(g, hp)
                g._slots_ok = True
            for b, x in work:
                if b.fused:
                    _kernels.run(kernel, b.pa, b.ga, b.items, b.parallel, b.flat, c, b.dtype)
                else:
                    self._update_bucket(b, x, c)
            if "next_scalars" in c:
                g.scalars.update(c["next_scalars"])
            g.scalars["step"] = t
        self.step_count = count + 1

    def _update_bucket(self, b: _Bucket, grads: list[np.ndarray], c: dict[str, Any]) -> None:
        """Update every leaf of a bucket; the readable reference rule, leaf by leaf."""
        ref = self.reference
        for p, g, s in zip(b.params, grads, b.views):
            ref(p, g, s, c)

    def gradient_buffers(self) -> Any:
        """Zeroed arrays mirroring ``params`` (like torch's ``p.grad``) to compute gradients into, in place.

        Several arrays of a group and dtype are views of one contiguous buffer laid out as the
        optimizer's state, so a step streams through the gradients in the order it streams through the
        state. (``step`` reads any C-contiguous gradients where they lie; these only spare allocating
        them.) The same arrays are returned every call.
        """
        if getattr(self, "_grad_buffers", None) is None:
            per_group = []
            for g in self._groups:
                leaves: list = [None] * len(g.leaves)
                for b in g.buckets:
                    buf = np.zeros(b.size, b.dtype)
                    for k, (i, p) in enumerate(zip(b.index, b.params)):
                        leaves[i] = buf[b.offsets[k]:b.offsets[k + 1]].reshape(p.shape)
                per_group.append(g.treedef.unflatten(leaves))
            self._grad_buffers = per_group if self._grouped else per_group[0]
        return self._grad_buffers

    # ---- information --------------------------------------------------------------------------------

    @property
    def state(self) -> dict[str, dict[str, np.ndarray]]:
        """Live views of the state: ``{leaf name: {slot: array shaped like the parameter}}``."""
        return {n: dict(v) for g in self._groups for b in g.buckets for n, v in zip(b.names, b.views)}

    @property
    def names(self) -> list[str]:
        """The leaf names, in order (see ``adamkit._tree``)."""
        return [n for g in self._groups for n in g.names]

    def learning_rate(self, group: int = 0) -> float:
        """The learning rate the next step will use in parameter group ``group`` (schedules resolved)."""
        if isinstance(group, (bool, np.bool_)) or not isinstance(group, numbers.Integral):
            raise TypeError(f"group={group!r}: expected an integer")
        if not 0 <= group < len(self._groups):
            raise IndexError(f"group={group!r}: expected 0 <= group < {len(self._groups)}")
        return _resolve_lr(self._hyperparameters(self._groups[group])["lr"], self.step_count)

    def reset_state(self) -> None:
        """Forget the moments and restart the bias-correction step count ``t`` at 0.

        ``step_count`` (which drives learning-rate schedules) keeps counting.
        """
        self._refuse_if_moved("reset_state")
        hps = [self._hyperparameters(g) for g in self._groups]  # all checked before any state is reset
        for g, hp in zip(self._groups, hps):
            self._init_state(g, hp)

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={self.param_groups[0][k]!r}" for k in self.defaults)
        n = sum(p.size for g in self._groups for p in g.leaves)
        return f"{type(self).__name__}({n} parameters in {len(self.names)} arrays, {hp})"

    # ---- state_dict and checkpoints -----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """A snapshot of the state as plain data (dicts, lists, ndarrays, numbers), keyed by leaf name."""
        self._refuse_if_moved("state_dict")
        groups = []
        for gspec in self.param_groups:
            d = {k: _plain_hyperparameter(gspec[k]) for k in self.defaults}
            groups.append(d)
        return {
            "optimizer": type(self).__name__,
            "format": _FORMAT_VERSION,
            "step_count": self.step_count,
            "skipped_steps": self.skipped_steps,
            "param_groups": [{**d, "names": list(g.names)} for d, g in zip(groups, self._groups)],
            "group_state": [dict(g.scalars) for g in self._groups],
            "state": {n: {k: v.copy() for k, v in s.items()} for n, s in self.state.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a ``state_dict`` after checking it fits this optimizer; on error nothing changes."""
        self._refuse_if_moved("load_state_dict")
        sd = state_dict
        if not isinstance(sd, dict) or "optimizer" not in sd:
            raise ValueError("state_dict: expected a dict made by Optimizer.state_dict()")
        kind = type(self).__name__
        if sd["optimizer"] != kind:
            raise ValueError(f"state_dict is for optimizer {sd['optimizer']!r}; this optimizer is {kind!r}")
        if sd.get("format") != _FORMAT_VERSION:
            raise ValueError(f"state_dict format {sd.get('format')!r}: expected {_FORMAT_VERSION}")
        for key, expected in (("param_groups", list), ("group_state", list), ("state", dict)):
            if key in sd and not isinstance(sd[key], (list, tuple) if expected is list else dict):
                raise ValueError(f"state_dict[{key!r}]: expected a {expected.__name__}, got {type(sd[key]).__name__}")
        lacking = [k for k in ("param_groups", "group_state", "state") if k not in sd]
        lacking += [f"param_groups[{i}]['names']" for i, pg in enumerate(sd.get("param_groups", ()))
                    if not isinstance(pg, dict) or "names" not in pg]
        if lacking:
            raise ValueError(f"state_dict lacks {', '.join(map(repr, lacking))}; expected a dict made by "
                             f"Optimizer.state_dict()")
        pgs, gstates, state = sd["param_groups"], sd["group_state"], sd["state"]
        if len(pgs) != len(self._groups) or len(gstates) != len(self._groups):
            raise ValueError(f"state_dict has {len(pgs)} parameter groups; this optimizer has {len(self._groups)}")
        new_specs = []
        new_scalars = []
        for gi, (pg, g) in enumerate(zip(pgs, self._groups)):
            if not isinstance(pg["names"], (list, tuple)) or list(pg["names"]) != g.names:
                raise ValueError(f"state_dict group {gi} has parameters {pg['names']!r}; "
                                 f"this optimizer has {g.names}")
            missing = sorted(set(self.defaults) - set(pg))
            if missing:
                raise ValueError(f"state_dict group {gi} lacks hyperparameter(s) {missing}")
            spec = {k: _restore_hyperparameter(k, pg[k], self.param_groups[gi][k]) for k in self.defaults}
            hp = self.validate({**spec, **self.fixed})
            _check_eps(spec, hp, g)
            need = self.slots(hp)
            for b in g.buckets:
                for name, p in zip(b.names, b.params):
                    s = state.get(name)
                    if not isinstance(s, dict):
                        raise ValueError(f"state_dict has no state for parameter {name!r}")
                    lacking = sorted(set(need) - set(s))
                    if lacking:
                        raise ValueError(f"state_dict state for parameter {name!r} lacks slot(s) {lacking}")
                    unknown = sorted(set(s) - set(self.state_slots or s), key=str)
                    if unknown:
                        raise ValueError(f"state_dict state for parameter {name!r} has slot(s) {unknown} that "
                                         f"{kind} does not use; it uses {', '.join(self.state_slots)}")
                    for slot, arr in s.items():
                        arr = np.asarray(arr)
                        if arr.shape != p.shape or arr.dtype != p.dtype:
                            raise ValueError(
                                f"state_dict state {name!r}/{slot!r}: expected shape {p.shape} and dtype "
                                f"{p.dtype}, got shape {arr.shape} and dtype {arr.dtype}")
            gs = gstates[gi]
            if not isinstance(gs, dict) or not _is_count(gs.get("step")):
                raise ValueError(f"state_dict group_state[{gi}]: expected a dict with an integer 'step' >= 0")
            scalars = {"step": int(gs["step"])}
            for key, value in gs.items():
                if key == "step":
                    continue
                if self.group_scalars is None:
                    scalars[key] = value
                elif key not in self.group_scalars:
                    raise ValueError(f"state_dict group_state[{gi}] has {key!r}, which {kind} does not keep; "
                                     f"expected 'step'{''.join(', ' + repr(k) for k in self.group_scalars)}")
                else:
                    scalars[key] = self.group_scalars[key](f"state_dict group_state[{gi}][{key!r}]", value)
            new_specs.append(spec)
            new_scalars.append(scalars)
        extra = sorted(set(state) - set(self.names))
        if extra:
            raise ValueError(f"state_dict has state for unknown parameter(s) {extra}")
        for key in ("step_count", "skipped_steps"):
            if not _is_count(sd.get(key)):
                raise ValueError(f"state_dict[{key!r}]={sd.get(key)!r}: expected an integer >= 0")

        # Everything fits: commit.
        for spec, g, scalars in zip(new_specs, self._groups, new_scalars):
            g.spec.update(spec)
            g._seen = None
            for b in g.buckets:
                slots = {slot for name in b.names for slot in state[name]}
                for slot in slots:
                    if slot not in b.flat:
                        b.add_slot(slot, 0.0)
                for k, name in enumerate(b.names):
                    for slot, arr in state[name].items():
                        np.copyto(b.views[k][slot], np.asarray(arr))
            g.scalars = scalars
        self.step_count = int(sd["step_count"])
        self.skipped_steps = int(sd["skipped_steps"])

    def save(self, path: str | Path) -> Path:
        """Write the state to one ``.npz`` file, atomically (temporary file, then rename)."""
        return _checkpoint.save_npz(path, *state_dict_to_files(self.state_dict()))

    def load(self, path: str | Path) -> None:
        """Restore the state written by :meth:`save` (checked as in :meth:`load_state_dict`)."""
        arrays, meta = _checkpoint.load_npz(path)
        self.load_state_dict(state_dict_from_files(arrays, meta, path))


def state_dict_to_files(sd: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and the JSON description :meth:`Optimizer.save` writes for a ``state_dict``."""
    arrays: dict[str, np.ndarray] = {}
    index: dict[str, dict[str, str]] = {}
    for name, slots in sd["state"].items():
        index[name] = {}
        for slot, arr in slots.items():
            key = f"a{len(arrays)}"
            arrays[key] = arr
            index[name][slot] = key
    meta = {k: v for k, v in sd.items() if k != "state"}
    return arrays, {"kind": "optimizer", **meta, "state": index}


def state_dict_from_files(arrays: dict[str, np.ndarray], meta: dict[str, Any], path: Any) -> dict[str, Any]:
    """Rebuild a ``state_dict`` from the arrays and description written by :meth:`Optimizer.save`."""
    try:
        if meta.get("kind") != "optimizer":
            raise KeyError("kind")
        state = {name: {slot: arrays[key] for slot, key in slots.items()} for name, slots in meta["state"].items()}
    except (KeyError, AttributeError, TypeError) as exc:
        raise ValueError(f"checkpoint {str(path)!r} does not hold optimizer state ({exc!r} missing)") from None
    return {**{k: v for k, v in meta.items() if k not in ("kind", "state")}, "state": state}


def _check_eps(spec: dict[str, Any], hp: dict[str, Any], g: _Group) -> None:
    """``eps`` must stay a usable divisor in every dtype of the group: nonzero and with a finite
    reciprocal (NAdam and RAdam compute ``1/(sqrt(v) + eps)``; an infinite one times a zero gradient is
    NaN), and finite itself."""
    eps = hp.get("eps")
    if eps is None:
        return
    for dt in sorted({b.dtype for b in g.buckets}, key=str):
        least = 1.0 / float(np.finfo(dt).max)
        if not least <= eps <= float(np.finfo(dt).max):
            raise ValueError(f"eps={spec['eps']!r}: out of range for the {dt} parameters; expected a number from "
                             f"{least:.3g} (1/eps must be finite) to {float(np.finfo(dt).max):.3g}")


def _is_count(v: Any) -> bool:
    """An integer >= 0 (not a bool)."""
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) and v >= 0


def _plain_hyperparameter(v: Any) -> Any:
    if isinstance(v, _schedules.Schedule):
        return v.config()
    if callable(v):
        return {"schedule": "callable", "name": getattr(v, "__qualname__", repr(v))}
    if isinstance(v, (tuple, list)):
        return [_plain_hyperparameter(x) for x in v]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):  # NumPy scalars, Fractions: the float the optimizer computes with
        return float(v)
    return v


def _restore_hyperparameter(key: str, saved: Any, current: Any) -> Any:
    if isinstance(saved, dict) and "schedule" in saved:
        if saved["schedule"] == "callable":
            if not callable(current) or isinstance(current, _schedules.Schedule):
                raise ValueError(
                    f"state_dict {key}: saved with a custom schedule {saved.get('name')!r} that cannot be "
                    f"restored from a file; construct the optimizer with that callable as {key}")
            return current
        return _schedules.from_config(saved)
    if isinstance(saved, list):
        return tuple(saved)
    return saved


# --------------------------------------------------------------------------------------------------
# Parameter and gradient checks.


def _is_group_list(params: Any) -> bool:
    return (isinstance(params, (list, tuple)) and len(params) > 0
            and all(isinstance(x, dict) and "params" in x for x in params))


def _check_param(name: str, p: Any) -> None:
    if not isinstance(p, np.ndarray):
        raise TypeError(f"parameter {name!r}: expected a writable float32 or float64 numpy array, "
                        f"got {type(p).__name__}")
    if p.dtype not in _PARAM_DTYPES:
        raise TypeError(f"parameter {name!r}: expected a float32 or float64 array, got dtype {p.dtype}")
    if not p.flags.writeable:
        raise ValueError(f"parameter {name!r}: expected a writable array, got a read-only one")


def _check_unique_names(names: list[str]) -> None:
    """Leaf names key the state in ``state_dict`` and checkpoints, so no two may be equal (``{"a.b": x,
    "a": {"b": y}}`` or ``{0: x, "0": y}`` would give two leaves one name)."""
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ValueError(f"params: two parameters are both named {n!r} (names join dict keys with '.' and "
                             f"list positions as [i]); rename a key so that each parameter has its own name")
        seen.add(n)


def _check_distinct(leaves: list[np.ndarray], names: list[str]) -> None:
    """No two parameters may share memory (the same array passed twice, or overlapping views)."""
    bounds = []
    for p, n in zip(leaves, names):
        if p.size:
            lo, hi = np.lib.array_utils.byte_bounds(p) if hasattr(np.lib, "array_utils") else np.byte_bounds(p)
            bounds.append((lo, hi, p, n))
    bounds.sort(key=lambda x: x[0])
    active: list = []  # arrays whose byte range may still overlap later ones
    for lo, hi, p, n in bounds:
        active = [a for a in active if a[1] > lo]
        for _, _, q, m in active:
            if p is q or np.shares_memory(p, q):
                what = "the same array was passed twice" if p is q else "they share memory"
                raise ValueError(f"parameters {m!r} and {n!r}: {what}; each parameter must be a distinct array")
        active.append((lo, hi, p, n))


def _coerce_grad(name: str, p: np.ndarray, g: Any, prefix: str = "") -> np.ndarray:
    """Check one gradient against its parameter; return it as a float array of the parameter's dtype.

    ``prefix`` starts the error messages (the distributed layer names its argument there).
    """
    what = f"{prefix}gradient for parameter {name!r}"
    if not isinstance(g, np.ndarray):
        if isinstance(g, (numbers.Real, np.generic)) and not isinstance(g, (bool, np.bool_)):
            g = np.asarray(g)
        else:
            raise TypeError(f"{what}: expected a float array of shape {p.shape}, got {type(g).__name__}")
    if g.dtype.kind != "f":
        raise TypeError(f"{what}: expected a real floating-point array, got dtype {g.dtype}")
    if g.shape != p.shape:
        raise ValueError(f"{what}: expected shape {p.shape}, got shape {g.shape}")
    if g.dtype != p.dtype:
        with np.errstate(over="ignore"):
            g = g.astype(p.dtype)
    return g
