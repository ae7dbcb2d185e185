"""Data-parallel training over MPI (mpi4py): averaged gradients, and optionally sharded optimizer state.

Every rank (process) holds the same parameters and computes gradients on its own part of the data;
:class:`DistributedOptimizer` averages them with one collective per step and applies the update, so the
parameters stay bit-identical on every rank::

    # mpiexec -n 4 python train.py        (or: srun -n 4 python train.py)
    import adamkit as ak
    from adamkit.distributed import DistributedOptimizer
    opt = DistributedOptimizer(ak.Adam(params, lr=1e-3), shard_state=True)
    for batch in my_part_of_the_data:
        loss, grads = loss_and_grad(params, batch)
        opt.step(grads, weight=len(batch))      # weighted mean over ranks, then the Adam step

How a step works. The gradients of all leaves are packed into one contiguous buffer per dtype (the
*global flat vector* of that dtype: the leaves in ``optimizer.names`` order, each raveled), each scaled
by the rank's ``weight``. Three numbers ride along at the end of the buffer: the weight, a non-finite
flag and ``weight * loss``, so the total weight, the non-finite decision and the mean loss come out of
the same collective.

* ``shard_state=False``: ``Allreduce`` (sum) of the buffer; every rank divides by the total weight and
  runs the wrapped optimizer on the averaged gradients. State is replicated. The parameters stay
  bit-identical because every rank receives the same sum (MPICH's and Open MPI's allreduce algorithms
  combine the same partial sums on every rank; :meth:`DistributedOptimizer.check_synchronized` checks).
* ``shard_state=True`` (ZeRO stage 1): rank ``r`` owns the ``r``-th of ``P`` contiguous, nearly equal
  parts of each flat vector. ``Reduce_scatter`` (sum) leaves each rank the summed gradients of its part
  only; an inner optimizer of the same class and hyperparameters, built over 1-D views of the rank's
  part (one view per parameter group and dtype: a group's leaves of one dtype are contiguous in the
  flat vector), updates that part and holds the only state for it; ``Allgatherv`` brings every rank
  the whole updated vector, copied back into the parameter arrays. Optimizer-state memory per rank is
  1/P of the whole; the update is the same elementwise arithmetic as unsharded, so results agree to
  rounding (bit for bit when the reductions sum in the same order, which they do for P <= 2).

At construction the ranks compare their optimizers (class, parameter names, shapes, dtypes,
hyperparameters, non-finite policy, ``shard_state``); a mismatch raises the same ``ValueError`` on every
rank instead of hanging in a collective. Rank 0's parameters (and its optimizer state, if it has
stepped) are then broadcast so every rank starts identical. An uncaught exception on any rank aborts
the whole job with its message (:func:`install_excepthook`; :func:`abort_on_exception` for a block).

Checkpoints are written by rank 0 in the format of :meth:`adamkit.Optimizer.save` (state gathered
from the shards), so they load into a distributed run on any number of ranks, sharded or not, and into
a plain single-process optimizer.

mpi4py is imported only when something here is used; install it with ``pip install 'adamkit[mpi]'``,
which also brings the MPICH library from PyPI (no system MPI needed).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import numbers
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from . import _checkpoint, _tree
from ._clip import global_norm
from ._optimizer import Optimizer, _coerce_grad, _resolve_lr, state_dict_from_files, state_dict_to_files

__all__ = ["DistributedOptimizer", "ReducedGradients", "as_distributed", "install_excepthook", "abort_on_exception", "split_evenly", "mpi"]

_EXTRA = 5  # trailing slots of each segment of the carrier buffer: weight, non-finite flag, weight * loss,
# 1 if this rank gave a loss, 1 if this rank asks every rank to stop (an interrupted fit)
_ROOT = 0


def mpi() -> Any:
    """The ``mpi4py.MPI`` module, or an ``ImportError`` saying how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(
            "adamkit.distributed needs mpi4py and an MPI library: pip install 'adamkit[mpi]' "
            f"(which installs mpi4py and the MPICH wheel); importing mpi4py failed with: {exc}"
        ) from None
    return MPI


def split_evenly(n: int, size: int) -> tuple[list[int], list[int]]:
    """``(counts, displs)`` of ``n`` items cut into ``size`` contiguous parts, the first ``n % size``
    one item longer: the split used for the state shards and for a global mini-batch in ``fit``."""
    base, extra = divmod(int(n), int(size))
    counts = [base + (r < extra) for r in range(size)]
    displs = [0] * size
    for r in range(1, size):
        displs[r] = displs[r - 1] + counts[r - 1]
    return counts, displs


# --------------------------------------------------------------------------------------------------
# Aborting the job when one rank fails


def _report_and_abort(comm: Any, exc_type: type, exc: BaseException, tb: Any) -> None:
    rank, size = comm.Get_rank(), comm.Get_size()
    try:
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        sys.stderr.write("".join(f"[rank {rank}] {line}\n" for line in text.rstrip("\n").split("\n")))
        sys.stderr.write(f"[rank {rank}] adamkit.distributed: uncaught {exc_type.__name__} on rank {rank} "
                         f"of {size}; aborting the MPI job\n")
        sys.stderr.flush()
        # the launcher forwards each rank's output asynchronously and stops forwarding when the job is
        # aborted: give it a moment, or the message may be lost (seen under load with MPICH's hydra)
        time.sleep(1.0)
    finally:
        comm.Abort(1)
        # MPI_Abort should not return, but MPICH's can return before the launcher kills this process
        # (seen here, rarely): then nothing of this rank may run on, as if the exception were handled.
        os._exit(1)


def install_excepthook(comm: Any = None) -> None:
    """Make an uncaught exception on this rank print its traceback and abort every rank of ``comm``.

    Without it, the other ranks would wait forever in their next collective. Installed by
    :class:`DistributedOptimizer` (when there is more than one rank); does nothing on a single rank.
    ``python -m mpi4py train.py`` has the same effect for a whole script.
    """
    MPI = mpi()
    comm = MPI.COMM_WORLD if comm is None else comm
    if comm.Get_size() == 1 or getattr(sys.excepthook, "_adamkit_abort", False):
        return

    def hook(exc_type, exc, tb):
        _report_and_abort(comm, exc_type, exc, tb)

    hook._adamkit_abort = True  # type: ignore[attr-defined]
    sys.excepthook = hook


@contextlib.contextmanager
def abort_on_exception(comm: Any = None) -> Iterator[None]:
    """``with abort_on_exception(): ...``: an exception leaving the block aborts every rank of ``comm``
    (``MPI.COMM_WORLD`` by default) after printing its traceback. ``sys.exit(0)`` passes through."""
    MPI = mpi()
    comm = MPI.COMM_WORLD if comm is None else comm
    try:
        yield
    except SystemExit as exc:
        if exc.code in (None, 0) or comm.Get_size() == 1:
            raise
        _report_and_abort(comm, type(exc), exc, exc.__traceback__)
    except BaseException as exc:
        if comm.Get_size() == 1:
            raise
        _report_and_abort(comm, type(exc), exc, exc.__traceback__)


# --------------------------------------------------------------------------------------------------
# Layout: where every leaf lives in the flat vector of its dtype, and each rank's part of it


class _Flat:
    """The leaves of one dtype, raveled end to end in ``optimizer.names`` order, cut into segments.

    Unsharded there is one segment (the whole vector); sharded, segment ``r`` is rank ``r``'s part.
    The gradient buffer holds every segment followed by ``extra`` slots (only in the carrier dtype).
    """

    def __init__(self, dtype: np.dtype, leaves: list[int], sizes: list[int], nseg: int, extra: int):
        self.dtype = dtype
        self.leaves = leaves  # global leaf indices
        self.starts = dict(zip(leaves, np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist()))
        self.sizes = dict(zip(leaves, sizes))
        self.size = int(sum(sizes))
        self.counts, self.displs = split_evenly(self.size, nseg)
        self.extra = extra
        self.seg_counts = [c + extra for c in self.counts]  # segment lengths in the gradient buffer
        # packing plan: (leaf, start in leaf, stop in leaf, position in the gradient buffer)
        self.plan: list[tuple[int, int, int, int]] = []
        for k in leaves:
            a, b = self.starts[k], self.starts[k] + self.sizes[k]
            for r in range(nseg):
                lo, hi = max(a, self.displs[r]), min(b, self.displs[r] + self.counts[r])
                if lo < hi:
                    self.plan.append((k, lo - a, hi - a, lo + extra * r))
        self.buffer_size = self.size + nseg * extra

    def extra_positions(self, seg: int) -> int:
        return self.displs[seg] + self.counts[seg] + self.extra * seg


def _is_group_list(params: Any) -> bool:
    return (isinstance(params, (list, tuple)) and len(params) > 0
            and all(isinstance(x, dict) and "params" in x for x in params))


def _describe_hp(v: Any) -> Any:
    """A comparable, picklable description of a hyperparameter value (schedules by their config)."""
    if hasattr(v, "config") and callable(v):
        try:
            return ("schedule", repr(v.config()))
        except Exception:  # pragma: no cover - a schedule whose config fails
            pass
    if callable(v):  # a user's schedule: by name and by its values at three step counts (called 3 times)
        values = []
        for count in (0, 10, 1000):
            try:
                values.append(repr(v(count)))
            except Exception as exc:  # noqa: BLE001 - the same failure on every rank compares equal
                values.append(type(exc).__name__)
        return ("callable", getattr(v, "__module__", "?"), getattr(v, "__qualname__", type(v).__name__),
                tuple(values))
    if isinstance(v, (tuple, list)):
        return tuple(_describe_hp(x) for x in v)
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, numbers.Real):
        return float(v)
    return repr(v)


def _first_difference(a: dict, b: dict, rb: int) -> str | None:
    """Where rank ``rb``'s signature ``b`` differs from rank 0's ``a``, in words, or None."""
    for key, what in (("optimizer", "optimizer class"), ("nonfinite", "nonfinite policy"),
                      ("shard_state", "shard_state")):
        if a[key] != b[key]:
            return f"{what} is {a[key]!r} on rank 0 and {b[key]!r} on rank {rb}"
    if len(a["groups"]) != len(b["groups"]):
        return f"rank 0 has {len(a['groups'])} parameter group(s) and rank {rb} has {len(b['groups'])}"
    for gi, (ga, gb) in enumerate(zip(a["groups"], b["groups"])):
        if ga["names"] != gb["names"]:
            extra_a = [n for n in ga["names"] if n not in gb["names"]]
            extra_b = [n for n in gb["names"] if n not in ga["names"]]
            if extra_a or extra_b:
                only = [f"only on rank {who}: {names}" for who, names in ((0, extra_a), (rb, extra_b)) if names]
                return f"parameter names differ in group {gi}: {'; '.join(only)}"
            return f"parameters of group {gi} are in a different order: rank 0 {ga['names']}, rank {rb} {gb['names']}"
        for n, sa, sb, da, db in zip(ga["names"], ga["shapes"], gb["shapes"], ga["dtypes"], gb["dtypes"]):
            if sa != sb:
                return f"parameter {n!r} has shape {tuple(sa)} on rank 0 and {tuple(sb)} on rank {rb}"
            if da != db:
                return f"parameter {n!r} has dtype {np.dtype(da)} on rank 0 and {np.dtype(db)} on rank {rb}"
        for k in ga["hyperparameters"]:
            va, vb = ga["hyperparameters"][k], gb["hyperparameters"].get(k)
            if va != vb:
                return f"hyperparameter {k!r} of group {gi} is {va!r} on rank 0 and {vb!r} on rank {rb}"
    return None


def _nonfinite_in(buf: np.ndarray) -> bool:
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.add.reduce(buf, axis=None)
    # a finite sum proves every entry finite; otherwise look closer (the sum may just overflow)
    return not math.isfinite(total) and not np.isfinite(buf).all()


def _check_weight(weight: Any) -> float:
    if weight is None:
        return 1.0
    if isinstance(weight, (bool, np.bool_)) or not isinstance(weight, numbers.Real) \
            or not math.isfinite(float(weight)) or float(weight) < 0:
        raise ValueError(f"weight={weight!r}: expected a finite number >= 0 (e.g. the local batch size)")
    return float(weight)


def _check_loss(loss: Any) -> float | None:
    if loss is None:
        return None
    if isinstance(loss, np.ndarray) and loss.size == 1:
        loss = loss.reshape(()).item()
    if isinstance(loss, (bool, np.bool_)) or not isinstance(loss, numbers.Real):
        raise TypeError(f"loss={loss!r}: expected a real number (this rank's mean loss) or None")
    return float(loss)


# --------------------------------------------------------------------------------------------------


class ReducedGradients:
    """The gradients averaged over the ranks by :meth:`DistributedOptimizer.reduce`, not yet applied.

    ``loss`` is the weighted mean loss (None if no loss was given), ``weight`` the total weight,
    ``nonfinite_ranks`` how many ranks had a NaN or infinity in their gradient (counted when the state is
    sharded and the policy is not ``"ignore"``; else 0). :meth:`norm` and :meth:`clip` see the whole
    averaged gradient; with sharded state each is one more (scalar) collective, so call them on every
    rank. Pass the object to :meth:`DistributedOptimizer.step` to apply the update.
    """

    __slots__ = ("_owner", "_generation", "loss", "weight", "nonfinite_ranks", "stop_ranks", "_culprit",
                 "_norm_value")

    def __init__(self, owner: "DistributedOptimizer", generation: int, loss: float | None, weight: float,
                 nonfinite_ranks: int, culprit: str | None, stop_ranks: int = 0):
        self._owner, self._generation = owner, generation
        self.loss, self.weight, self.nonfinite_ranks = loss, weight, nonfinite_ranks
        self.stop_ranks = stop_ranks
        self._culprit = culprit
        self._norm_value: float | None = None

    def _check(self) -> None:
        if self._generation != self._owner._generation:
            raise ValueError("these reduced gradients were already applied or replaced by a later reduce()")

    def norm(self) -> float:
        """The global 2-norm of the averaged gradient (cached)."""
        self._check()
        if self._norm_value is None:
            self._norm_value = self._owner._norm()
        return self._norm_value

    def clip(self, max_norm: float) -> float:
        """Scale the averaged gradient to global norm at most ``max_norm``, by torch's (and
        :func:`adamkit.clip_by_global_norm`'s) formula ``max_norm / (norm + 1e-6)``; return the norm
        before clipping. A non-finite norm leaves the gradient unchanged."""
        if isinstance(max_norm, bool) or not isinstance(max_norm, numbers.Real) \
                or not (0 < float(max_norm) < math.inf):
            raise ValueError(f"max_norm={max_norm!r}: expected a finite number > 0")
        norm = self.norm()
        coef = float(max_norm) / (norm + 1e-6)
        if math.isfinite(norm) and coef < 1.0:
            self._owner._scale(coef)
        return norm

    def __repr__(self) -> str:
        return f"ReducedGradients(loss={self.loss!r}, weight={self.weight!r}, nonfinite_ranks={self.nonfinite_ranks})"


class DistributedOptimizer:
    """Data-parallel wrapper of an adamkit optimizer over an MPI communicator.

    Args:
        optimizer: an adamkit optimizer built on every rank over the same parameter structure (same
            names, shapes, dtypes, hyperparameters). Its parameters are updated in place as usual.
            With ``shard_state=True`` it serves as a template: its state moves into this rank's
            shard and it must not be stepped directly any more.
        comm: an mpi4py intracommunicator; ``MPI.COMM_WORLD`` by default.
        shard_state: keep optimizer state only for this rank's 1/P of the parameters (ZeRO stage 1).
        abort_on_error: install :func:`install_excepthook` (when there is more than one rank).

    Every method that communicates (the constructor, ``step``, ``state_dict``, ``load_state_dict``,
    ``save``, ``load``, ``reset_state``, ``check_synchronized``) must be called by every rank, in the
    same order.
    """

    def __init__(self, optimizer: Optimizer, comm: Any = None, shard_state: bool = False, *,
                 abort_on_error: bool = True):
        MPI = mpi()
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer={optimizer!r}: expected an adamkit optimizer (e.g. adamkit.Adam(params))")
        if comm is None:
            comm = MPI.COMM_WORLD
        if not isinstance(comm, MPI.Intracomm):
            raise TypeError(f"comm={comm!r}: expected an mpi4py intracommunicator such as MPI.COMM_WORLD")
        if not isinstance(shard_state, (bool, np.bool_)):
            raise TypeError(f"shard_state={shard_state!r}: expected True or False")
        self._MPI = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.optimizer = optimizer
        self.shard_state = bool(shard_state)
        self._generation = 0

        # the parameter structure, group by group (public API only: param_groups and names)
        opt = optimizer
        self._grouped = _is_group_list(opt.params)
        self._treedefs: list[_tree.TreeDef] = []
        self._leaves: list[np.ndarray] = []
        self._group_of: list[int] = []
        for gi, pg in enumerate(opt.param_groups):
            leaves, _, treedef = _tree.flatten(pg["params"])
            self._treedefs.append(treedef)
            self._leaves.extend(leaves)
            self._group_of.extend([gi] * len(leaves))
        self.names: list[str] = list(opt.names)
        if len(self.names) != len(self._leaves):  # pragma: no cover - guards a change of the core
            raise RuntimeError("DistributedOptimizer: could not match the optimizer's leaves with its names")
        self._keys = list(type(opt).defaults)
        self._nonfinite = getattr(opt, "nonfinite", "raise")

        # 1. the ranks agree on everything, or all raise the same error
        sig = self._signature()
        sigs = comm.allgather(sig)
        moved = [r for r, sg in enumerate(sigs) if sg["moved"]]
        if moved:
            raise ValueError(f"optimizer: on rank(s) {moved} its state is held by {sigs[moved[0]]['moved']}; wrap "
                             f"a fresh optimizer, or go on with that DistributedOptimizer")
        for r in range(1, self.size):
            diff = _first_difference(sigs[0], sigs[r], r)
            if diff is not None:
                raise ValueError(
                    f"DistributedOptimizer: the ranks' optimizers disagree: {diff}. Every rank must build the "
                    f"same optimizer class over the same parameter names, shapes and dtypes, with the same "
                    f"hyperparameters, nonfinite policy and shard_state")
        if abort_on_error:
            install_excepthook(comm)

        # 2. the flat vectors, one per dtype; the carrier (float64 if any) holds the extra slots
        by_dtype: dict[np.dtype, list[int]] = {}
        for k, p in enumerate(self._leaves):
            by_dtype.setdefault(p.dtype, []).append(k)
        dtypes = list(by_dtype)
        carrier = np.dtype(np.float64) if np.dtype(np.float64) in by_dtype else dtypes[0]
        nseg = self.size if self.shard_state else 1
        self._flats = [_Flat(dt, idx, [self._leaves[k].size for k in idx], nseg, _EXTRA if dt == carrier else 0)
                       for dt, idx in by_dtype.items()]
        self._carrier = next(f for f in self._flats if f.extra)
        self._mpitype = {f.dtype: MPI.DOUBLE if f.dtype == np.float64 else MPI.FLOAT for f in self._flats}
        self._gbuf = {f.dtype: np.zeros(f.buffer_size, f.dtype) for f in self._flats}
        self._flatview = [p.reshape(-1) if p.flags.c_contiguous else None for p in self._leaves]

        # 3. every rank starts from rank 0's parameters
        pbuf = {f.dtype: np.empty(f.size, f.dtype) for f in self._flats}
        for f in self._flats:
            self._pack_params(f, pbuf[f.dtype])
            comm.Bcast([pbuf[f.dtype], self._mpitype[f.dtype]], root=_ROOT)
            self._unpack_params(f, pbuf[f.dtype])

        if self.shard_state:
            self._pbuf = pbuf
            self._rbuf = {f.dtype: np.zeros(f.counts[self.rank] + f.extra, f.dtype) for f in self._flats}
            self._build_inner()
        else:
            self._avg = self._averaged_views()

        # 4. ... and from rank 0's optimizer state if it has stepped (another rank's is not taken)
        root_history = sigs[_ROOT]["history"]
        stepped = [r for r, sg in enumerate(sigs) if sg["history"]]
        if stepped and not root_history:
            raise ValueError(f"DistributedOptimizer: the optimizer of rank(s) {stepped} has taken steps and rank "
                             f"0's has not; the ranks start from rank 0's parameters and state, so wrap the "
                             f"optimizers before their first step (or step rank 0's too)")
        if root_history:
            self.load_state_dict(optimizer.state_dict() if self.rank == _ROOT else None)
        if self.shard_state:
            _release_state(optimizer)
            optimizer._moved_to = "a DistributedOptimizer with shard_state=True"  # its state lives in the shards

    # ---- construction helpers -------------------------------------------------------------------------

    def _signature(self) -> dict:
        opt = self.optimizer
        groups = []
        names = iter(self.names)
        k = 0
        for gi, pg in enumerate(opt.param_groups):
            n = sum(1 for g in self._group_of if g == gi)
            leaves = self._leaves[k:k + n]
            k += n
            groups.append({
                "names": [next(names) for _ in range(n)],
                "shapes": [tuple(p.shape) for p in leaves],
                "dtypes": [p.dtype.str for p in leaves],
                "hyperparameters": {key: _describe_hp(pg[key]) for key in self._keys},
            })
        return {"optimizer": f"{type(opt).__module__}.{type(opt).__qualname__}", "nonfinite": self._nonfinite,
                "shard_state": self.shard_state, "groups": groups,
                "history": bool(opt.step_count or opt.skipped_steps), "moved": opt._moved_to}

    def _averaged_views(self) -> Any:
        """The gradient structure handed to the wrapped optimizer: leaf-shaped views of the buffers."""
        views = []
        for k, p in enumerate(self._leaves):
            f = self._flat_of(k)
            a = f.starts[k]
            views.append(self._gbuf[f.dtype][a:a + p.size].reshape(p.shape))
        per_group, k = [], 0
        for td in self._treedefs:
            n = td.num_leaves
            per_group.append(td.unflatten(views[k:k + n]))
            k += n
        return per_group if self._grouped else per_group[0]

    def _flat_of(self, k: int) -> _Flat:
        dt = self._leaves[k].dtype
        return next(f for f in self._flats if f.dtype == dt)

    def _build_inner(self) -> None:
        """This rank's optimizer: one 1-D view per (group, dtype) of the rank's part of the flat vector."""
        opt, r = self.optimizer, self.rank
        self._pieces: list[list[tuple[_Flat, int, int]]] = []  # per inner group: (flat, start, stop)
        self._inner_groups: list[int] = []  # original group index of each inner group
        specs = []
        for gi, pg in enumerate(opt.param_groups):
            pieces = []
            for f in self._flats:
                ks = [k for k in f.leaves if self._group_of[k] == gi]
                if not ks:
                    continue
                a = f.starts[ks[0]]
                b = f.starts[ks[-1]] + f.sizes[ks[-1]]
                lo, hi = max(a, f.displs[r]), min(b, f.displs[r] + f.counts[r])
                if lo < hi or (a == b and r == _ROOT):  # an all-empty run belongs to rank 0
                    pieces.append((f, lo, max(lo, hi)) if lo < hi else (f, a, a))
            if pieces:
                self._pieces.append(pieces)
                self._inner_groups.append(gi)
                specs.append({"params": [self._pbuf[f.dtype][lo:hi] for f, lo, hi in pieces],
                              **{key: pg[key] for key in self._keys}})
        self._inner_grads = [[self._rbuf[f.dtype][lo - f.displs[r]:hi - f.displs[r]] for f, lo, hi in pieces]
                             for pieces in self._pieces]
        self._inner = type(opt)(specs, nonfinite="ignore") if specs else None

    # ---- information ----------------------------------------------------------------------------------

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The wrapped optimizer's groups; change hyperparameters here (same change on every rank)."""
        return self.optimizer.param_groups

    @property
    def params(self) -> Any:
        """The wrapped optimizer's parameters (updated in place, identical on every rank)."""
        return self.optimizer.params

    @property
    def nonfinite(self) -> str:
        """The wrapped optimizer's policy for a non-finite gradient."""
        return self._nonfinite

    @property
    def step_count(self) -> int:
        return self.optimizer.step_count

    @property
    def skipped_steps(self) -> int:
        return self.optimizer.skipped_steps

    def learning_rate(self, group: int = 0) -> float:
        """The learning rate the next step will use in ``group`` (schedules resolved)."""
        groups = self.optimizer.param_groups
        if isinstance(group, bool) or not isinstance(group, numbers.Integral) or not 0 <= group < len(groups):
            raise IndexError(f"group={group!r}: expected 0 <= group < {len(groups)}")
        lr = groups[group]["lr"]
        return float(lr(self.step_count)) if callable(lr) else float(lr)

    @property
    def state_nbytes(self) -> int:
        """Bytes of optimizer state (moment buffers) held by this rank."""
        opt = self._inner if self.shard_state else self.optimizer
        if opt is None:
            return 0
        return sum(a.nbytes for s in opt.state.values() for a in s.values())

    @property
    def comm_bytes(self) -> dict[str, int]:
        """Bytes moved per step: ``payload`` (reduced buffers, plus gathered parameters when sharded) and
        ``sent_per_rank`` as the bandwidth-optimal (ring) algorithms send it: 2(P-1)/P of the payload
        for an allreduce, (P-1)/P for a reduce-scatter and for an all-gather."""
        P = self.size
        grads = sum(f.buffer_size * f.dtype.itemsize for f in self._flats)
        if not self.shard_state:
            return {"payload": grads, "sent_per_rank": int(2 * (P - 1) * grads / P)}
        params = sum(f.size * f.dtype.itemsize for f in self._flats)
        return {"payload": grads + params, "sent_per_rank": int((P - 1) * (grads + params) / P)}

    @property
    def collectives_per_step(self) -> int:
        """One per dtype unsharded; two per dtype (reduce-scatter, all-gather) sharded, plus one scalar
        allreduce when sharded and checking non-finite values (the reduced sum may overflow)."""
        check = self.shard_state and self._nonfinite != "ignore"
        return len(self._flats) * (2 if self.shard_state else 1) + (1 if check else 0)

    def local_part(self, batch: Any) -> Any:
        """This rank's contiguous share of a global mini-batch (its first dimension), cut as
        :func:`split_evenly` cuts it: rank ``r`` of ``P`` gets rows ``displs[r]:displs[r] + counts[r]``.
        Give ``weight=len(local_part)`` to :meth:`step` so the step is the global batch's mean. A tuple
        of sequences of one length (``(X, y)``: arrays, lists, ...) gives the tuple of their shares; a
        tuple of tuples, of numbers, or a list is cut as one sequence (pass a list of samples)."""
        if isinstance(batch, tuple) and batch and all(
                hasattr(b, "__len__") and not isinstance(b, (tuple, str, bytes)) for b in batch):
            lengths = [len(b) for b in batch]
            if len(set(lengths)) != 1:
                raise ValueError(f"batch: a tuple of arrays of lengths {lengths}; expected one length (the rows)")
            parts = [self.local_part(b) for b in batch]
            return type(batch)(*parts) if hasattr(batch, "_fields") else tuple(parts)
        counts, displs = split_evenly(len(batch), self.size)
        return batch[displs[self.rank]:displs[self.rank] + counts[self.rank]]

    def assert_same(self, what: str, value: Any) -> None:
        """Raise the same ``ValueError`` on every rank unless every rank passes an equal ``value``
        (compared by ``repr``); ``what`` names it in the message. One small collective."""
        values = self.comm.allgather(repr(value))
        for r, v in enumerate(values):
            if v != values[0]:
                raise ValueError(f"{what} differ between the ranks: {values[0]} on rank 0, {v} on rank {r}; "
                                 f"expected the same on every rank")

    def __repr__(self) -> str:
        mode = "sharded state" if self.shard_state else "replicated state"
        return f"DistributedOptimizer({self.optimizer!r}, rank {self.rank} of {self.size}, {mode})"

    # ---- the step -------------------------------------------------------------------------------------

    def step(self, local_grads: Any, weight: Any = None, loss: Any = None) -> float | None:
        """Average ``local_grads`` over the ranks (weighted by ``weight``), then apply one update.

        Args:
            local_grads: this rank's gradients, mirroring the parameters (as for ``optimizer.step``);
                or the :class:`ReducedGradients` returned by :meth:`reduce` (then give no weight or loss).
            weight: this rank's weight, e.g. its local batch size; the step uses
                ``sum_r weight_r * grads_r / sum_r weight_r``. Default 1 on every rank: the plain mean.
                A rank with weight 0 contributes nothing (its gradients are not read; may be None).
            loss: this rank's mean loss on its batch, optional; pass it on every rank or on none.

        Returns:
            The weighted mean of ``loss`` over the ranks (carried by the same collective), or None.
        """
        if isinstance(local_grads, ReducedGradients):
            if weight is not None or loss is not None:
                raise TypeError("step(reduced): weight and loss were given to reduce(); expected none here")
            red = local_grads
            if red._owner is not self or red._generation != self._generation:
                raise ValueError("step(reduced): these gradients are not the latest reduce() of this optimizer, "
                                 "or were already applied")
            if red.stop_ranks:
                raise ValueError(f"step(reduced): {red.stop_ranks} rank(s) asked to stop in this reduce(); "
                                 f"such gradients are not applied")
        else:
            red = self.reduce(local_grads, weight, loss)
        self._generation += 1  # the buffers now belong to the next reduce()
        self._apply(red)
        return red.loss

    def reduce(self, local_grads: Any, weight: Any = None, loss: Any = None, *,
               stop: bool = False) -> "ReducedGradients":
        """The collective half of :meth:`step`: average the gradients over the ranks, apply nothing.

        Returns a :class:`ReducedGradients` (mean loss, total weight, global norm, clipping) to pass to
        :meth:`step`. Valid until the next ``reduce`` or ``step``. ``stop=True`` on any rank (with weight 0
        there) sets ``stop_ranks`` on every rank: how ``adamkit.fit`` stops all ranks after the same step
        when one is interrupted; such reduced gradients are not applied.
        """
        w = _check_weight(weight)
        loss_value = _check_loss(loss)
        if self.shard_state:  # the same hyperparameter errors on every rank, before any collective
            for g in self.optimizer._groups:  # noqa: SLF001 - the template has every dtype of every group
                _resolve_lr(self.optimizer._hyperparameters(g)["lr"], self.step_count)  # noqa: SLF001
        grads = self._local_leaves(local_grads) if w > 0 else None
        MPI, comm = self._MPI, self.comm
        check = self.shard_state and self._nonfinite != "ignore"

        bad = 0.0
        for f in self._flats:
            buf = self._gbuf[f.dtype]
            if grads is None:
                buf.fill(0)
                continue
            for k, la, lb, pos in f.plan:
                g = grads[k]
                dst = buf[pos:pos + lb - la]
                if la == 0 and lb == g.size:
                    dst = dst.reshape(g.shape)
                else:
                    g = g.reshape(-1)[la:lb]
                if w == 1.0:
                    np.copyto(dst, g)
                else:
                    np.multiply(g, w, out=dst)
            for seg in range(len(f.counts) if f.extra else 0):
                e = f.extra_positions(seg)
                buf[e:e + _EXTRA] = 0
            if check and not bad and _nonfinite_in(buf):
                bad = 1.0
        c = self._carrier
        cbuf = self._gbuf[c.dtype]
        for seg in range(len(c.counts)):
            e = c.extra_positions(seg)
            cbuf[e:e + _EXTRA] = (w, bad, w * loss_value if loss_value is not None and w > 0 else 0.0,
                                  1.0 if loss_value is not None else 0.0, 1.0 if stop else 0.0)

        self._generation += 1
        if not self.shard_state:
            for f in self._flats:
                comm.Allreduce(MPI.IN_PLACE, [self._gbuf[f.dtype], self._mpitype[f.dtype]], op=MPI.SUM)
            e = c.extra_positions(0)
            total_w, total_bad, total_loss, n_loss, n_stop = (float(x) for x in cbuf[e:e + _EXTRA])
            data = [self._gbuf[f.dtype][:f.size] for f in self._flats]
        else:
            for f in self._flats:
                comm.Reduce_scatter([self._gbuf[f.dtype], self._mpitype[f.dtype]],
                                    [self._rbuf[f.dtype], self._mpitype[f.dtype]],
                                    recvcounts=f.seg_counts, op=MPI.SUM)
            n = c.counts[self.rank]
            total_w, total_bad, total_loss, n_loss, n_stop = (float(x) for x in self._rbuf[c.dtype][n:n + _EXTRA])
            data = [self._rbuf[f.dtype][:f.counts[self.rank]] for f in self._flats]
        if n_stop:
            return ReducedGradients(self, self._generation, None, total_w, 0, None, stop_ranks=int(n_stop))
        if 0 < n_loss < self.size:
            raise ValueError(f"loss: given on {int(n_loss)} of {self.size} ranks; expected on every rank or on none")
        if not total_w > 0:
            raise ValueError(f"weight: the weights of all {self.size} ranks sum to {total_w}; expected a positive "
                             f"total (a weight of 0 is allowed on some ranks, not on all)")
        if total_w != 1.0:
            for x in data:
                np.divide(x, total_w, out=x)
        if check and not total_bad:  # finite on every rank, but the sum may have overflowed
            here = 1.0 if any(_nonfinite_in(x) for x in data) else 0.0
            total_bad = float(self.comm.allreduce(here, op=MPI.SUM))
        culprit = None
        if total_bad and grads is not None:
            culprit = next((self.names[k] for k, g in enumerate(grads) if _nonfinite_in(np.asarray(g))), None)
        return ReducedGradients(self, self._generation, total_loss / total_w if loss_value is not None else None,
                                total_w, int(total_bad), culprit)

    def _apply(self, red: "ReducedGradients") -> None:
        if not self.shard_state:
            self.optimizer.step(self._avg)  # identical input on every rank: identical decisions
            return
        count = self.step_count
        if red.nonfinite_ranks and self._nonfinite != "ignore":
            if self._nonfinite == "skip":
                self.optimizer.skipped_steps += 1
                return
            here = f"; on rank {self.rank} in parameter {red._culprit!r}" if red._culprit else ""
            raise FloatingPointError(
                f"non-finite gradient on {red.nonfinite_ranks} of {self.size} ranks at step {count + 1}{here}; "
                f"nothing was changed (pass nonfinite='skip' to the optimizer to skip such steps)")
        for f in self._flats:
            self._pack_params(f, self._pbuf[f.dtype], own_only=True)  # the user may have changed them
        if self._inner is not None:
            self._sync_hyperparameters()
            self._inner.step(self._inner_grads)
        self.optimizer.step_count = count + 1
        MPI = self._MPI
        for f in self._flats:
            self.comm.Allgatherv(MPI.IN_PLACE, [self._pbuf[f.dtype], f.counts, f.displs, self._mpitype[f.dtype]])
            self._unpack_params(f, self._pbuf[f.dtype])

    def _norm(self) -> float:
        """The global 2-norm of the averaged gradient (as :func:`adamkit.global_norm`, without overflow)."""
        if not self.shard_state:
            return global_norm(self._avg)
        mine = global_norm([self._rbuf[f.dtype][:f.counts[self.rank]] for f in self._flats])
        return math.hypot(*self.comm.allgather(mine))  # the same list, so the same bits, on every rank

    def _scale(self, coef: float) -> None:
        for f in self._flats:
            x = self._rbuf[f.dtype][:f.counts[self.rank]] if self.shard_state else self._gbuf[f.dtype][:f.size]
            np.multiply(x, f.dtype.type(coef), out=x)

    def _local_leaves(self, local_grads: Any) -> list[np.ndarray]:
        if self._grouped:
            ng = len(self._treedefs)
            if not isinstance(local_grads, (list, tuple)) or len(local_grads) != ng:
                got = (f"a {type(local_grads).__name__} of {len(local_grads)} entries"
                       if isinstance(local_grads, (list, tuple)) else f"a {type(local_grads).__name__}")
                raise ValueError(f"local_grads: expected a list with one entry per parameter group ({ng}), got {got}")
            per_group = local_grads
        else:
            per_group = (local_grads,)
        out: list[np.ndarray] = []
        for td, gg in zip(self._treedefs, per_group):
            out.extend([gg] if td.kind == "leaf" else td.flatten_like(gg, "local_grads"))
        for k, (p, x) in enumerate(zip(self._leaves, out)):
            if type(x) is not np.ndarray or x.dtype is not p.dtype or x.shape != p.shape:
                out[k] = _coerce_grad(self.names[k], p, x, prefix="local_grads: ")
        return out

    def _pack_params(self, f: _Flat, buf: np.ndarray, own_only: bool = False) -> None:
        lo, hi = (f.displs[self.rank], f.displs[self.rank] + f.counts[self.rank]) if own_only else (0, f.size)
        for k in f.leaves:
            a, n = f.starts[k], f.sizes[k]
            s, e = max(a, lo), min(a + n, hi)
            if s >= e:
                continue
            p, v = self._leaves[k], self._flatview[k]
            if s == a and e == a + n:
                buf[a:a + n].reshape(p.shape)[...] = p
            else:
                buf[s:e] = (v if v is not None else p.reshape(-1))[s - a:e - a]

    def _unpack_params(self, f: _Flat, buf: np.ndarray) -> None:
        for k in f.leaves:
            a, n = f.starts[k], f.sizes[k]
            p = self._leaves[k]
            p[...] = buf[a:a + n].reshape(p.shape)

    def _sync_hyperparameters(self) -> None:
        """Carry changes the user made to ``param_groups`` (e.g. a new lr) into this rank's shard."""
        for j, gi in enumerate(self._inner_groups):
            src, dst = self.optimizer.param_groups[gi], self._inner.param_groups[j]
            for key in self._keys:
                if dst[key] is not src[key]:
                    dst[key] = src[key]

    # ---- state ----------------------------------------------------------------------------------------

    def reset_state(self) -> None:
        """Forget the moments everywhere (as :meth:`adamkit.Optimizer.reset_state`); no communication."""
        if not self.shard_state:
            self.optimizer.reset_state()
        elif self._inner is not None:
            self._sync_hyperparameters()
            self._inner.reset_state()

    def check_synchronized(self) -> bool:
        """True on every rank when every rank's parameters are bit-identical (compares digests)."""
        h = hashlib.blake2b(digest_size=16)
        for p in self._leaves:
            h.update(np.ascontiguousarray(p).tobytes())
        digests = self.comm.allgather(h.digest())
        return all(d == digests[0] for d in digests)

    def state_dict(self) -> dict[str, Any] | None:
        """The whole optimizer state, gathered on rank 0 (None on the other ranks); the format of
        :meth:`adamkit.Optimizer.state_dict`, keyed by leaf name with full shapes."""
        if not self.shard_state:
            return self.optimizer.state_dict() if self.rank == _ROOT else None
        if self._inner is not None:
            self._sync_hyperparameters()
        inner_sd = self._inner.state_dict() if self._inner is not None else None
        local: dict[int, dict] = {}
        if inner_sd is not None:
            inner_names = iter(self._inner.names)
            for j, gi in enumerate(self._inner_groups):
                names = [next(inner_names) for _ in self._pieces[j]]
                pg = {k: v for k, v in inner_sd["param_groups"][j].items() if k != "names"}
                local[gi] = {"hp": pg, "group_state": inner_sd["group_state"][j],
                             "slots": sorted(inner_sd["state"][names[0]]), "names": names}
        metas = self.comm.allgather({"format": inner_sd["format"] if inner_sd else None,
                                     "groups": {gi: {k: v for k, v in m.items() if k != "names"}
                                                for gi, m in local.items()}})
        groups: dict[int, dict] = {}
        for m in metas:
            for gi, info in m["groups"].items():
                groups.setdefault(gi, info)
        fmt = next(m["format"] for m in metas if m["format"] is not None)
        all_slots = sorted({s for info in groups.values() for s in info["slots"]})
        root = self.rank == _ROOT
        state: dict[str, dict[str, np.ndarray]] = {n: {} for n in self.names} if root else {}
        r = self.rank
        for f in self._flats:
            for slot in all_slots:
                part = np.zeros(f.counts[r], f.dtype)
                for j, gi in enumerate(self._inner_groups):
                    if slot not in local[gi]["slots"]:
                        continue
                    for (pf, lo, hi), name in zip(self._pieces[j], local[gi]["names"]):
                        if pf is f and hi > lo:
                            part[lo - f.displs[r]:hi - f.displs[r]] = inner_sd["state"][name][slot]
                whole = np.empty(f.size, f.dtype) if root else None
                self.comm.Gatherv([part, self._mpitype[f.dtype]],
                                  [whole, f.counts, f.displs, self._mpitype[f.dtype]] if root else None, root=_ROOT)
                if root:
                    for k in f.leaves:
                        if slot in groups[self._group_of[k]]["slots"]:
                            a = f.starts[k]
                            state[self.names[k]][slot] = whole[a:a + f.sizes[k]].reshape(self._leaves[k].shape)
        if not root:
            return None
        ng = len(self.optimizer.param_groups)
        names_of = [[n for n, g in zip(self.names, self._group_of) if g == gi] for gi in range(ng)]
        return {
            "optimizer": type(self.optimizer).__name__,
            "format": fmt,
            "step_count": self.optimizer.step_count,
            "skipped_steps": self.optimizer.skipped_steps,
            "param_groups": [{**groups[gi]["hp"], "names": names_of[gi]} for gi in range(ng)],
            "group_state": [dict(groups[gi]["group_state"]) for gi in range(ng)],
            "state": state,
        }

    def load_state_dict(self, state_dict: dict[str, Any] | None) -> None:
        """Restore a whole-state ``state_dict`` (read on rank 0; the other ranks may pass None) made by
        :meth:`state_dict` on any number of ranks or by a single-process optimizer. Checked on rank 0;
        an error is raised on every rank and nothing changes."""
        root = self.rank == _ROOT
        meta, err = (self._check_full_state_dict(state_dict) if root else (None, None))
        meta, err = self.comm.bcast((meta, err), root=_ROOT)
        if err is not None:
            raise ValueError(err)
        r = self.rank
        slots = sorted({s for gs in meta["slots"] for s in gs})
        if self.shard_state:
            restored = self._restore_hyperparameters(meta)  # same checks, same result on every rank
        parts: dict[tuple, np.ndarray] = {}
        for f in self._flats:
            for slot in slots:
                whole = None
                if root:
                    whole = np.zeros(f.size, f.dtype)
                    for k in f.leaves:
                        s = state_dict["state"][self.names[k]].get(slot)
                        if s is not None:
                            a = f.starts[k]
                            whole[a:a + f.sizes[k]] = np.asarray(s).reshape(-1)
                if self.shard_state:
                    part = np.empty(f.counts[r], f.dtype)
                    self.comm.Scatterv([whole, f.counts, f.displs, self._mpitype[f.dtype]] if root else None,
                                       [part, self._mpitype[f.dtype]], root=_ROOT)
                else:
                    part = whole if root else np.empty(f.size, f.dtype)
                    self.comm.Bcast([part, self._mpitype[f.dtype]], root=_ROOT)
                parts[(f.dtype, slot)] = part
        head = {"optimizer": meta["optimizer"], "format": meta["format"], "step_count": meta["step_count"],
                "skipped_steps": meta["skipped_steps"]}
        if not self.shard_state:
            state = {}
            for k, name in enumerate(self.names):
                f = self._flat_of(k)
                a = f.starts[k]
                state[name] = {s: parts[(f.dtype, s)][a:a + f.sizes[k]].reshape(self._leaves[k].shape)
                               for s in meta["slots"][self._group_of[k]]}
            self.optimizer.load_state_dict({**head, "param_groups": meta["param_groups"],
                                            "group_state": meta["group_state"], "state": state})
            return
        if self._inner is not None:
            inner_names = iter(self._inner.names)
            state, pgs, gss = {}, [], []
            for j, gi in enumerate(self._inner_groups):
                for f, lo, hi in self._pieces[j]:
                    state[next(inner_names)] = {s: parts[(f.dtype, s)][lo - f.displs[r]:hi - f.displs[r]]
                                                for s in meta["slots"][gi]}
                pgs.append({**{k: v for k, v in meta["param_groups"][gi].items() if k != "names"},
                            "names": self._inner_names_of(j)})
                gss.append(meta["group_state"][gi])
            self._inner.load_state_dict({**head, "skipped_steps": 0, "param_groups": pgs,
                                         "group_state": gss, "state": state})
        for gi, hp in enumerate(restored):
            self.optimizer.param_groups[gi].update(hp)
        if self._inner is not None:
            self._sync_hyperparameters()
        self.optimizer.step_count = int(meta["step_count"])
        self.optimizer.skipped_steps = int(meta["skipped_steps"])

    def _inner_names_of(self, j: int) -> list[str]:
        start = sum(len(p) for p in self._pieces[:j])
        return self._inner.names[start:start + len(self._pieces[j])]

    def _check_full_state_dict(self, sd: Any) -> tuple[dict | None, str | None]:
        """On rank 0: the structure of a whole-state ``state_dict`` against the parameters."""
        kind = type(self.optimizer).__name__
        if not isinstance(sd, dict) or not {"optimizer", "param_groups", "group_state", "state"} <= set(sd):
            return None, "state_dict: expected a dict made by Optimizer.state_dict() or DistributedOptimizer.state_dict()"
        if sd["optimizer"] != kind:
            return None, f"state_dict is for optimizer {sd['optimizer']!r}; this optimizer is {kind!r}"
        ng = len(self.optimizer.param_groups)
        pgs, gss, state = sd["param_groups"], sd["group_state"], sd["state"]
        if not isinstance(pgs, list) or not isinstance(gss, list) or len(pgs) != ng or len(gss) != ng:
            return None, f"state_dict has {len(pgs) if isinstance(pgs, list) else '?'} parameter groups; this optimizer has {ng}"
        if not isinstance(state, dict):
            return None, "state_dict['state']: expected a dict keyed by parameter name"
        slots_of = []
        for gi in range(ng):
            names = [n for n, g in zip(self.names, self._group_of) if g == gi]
            if not isinstance(pgs[gi], dict) or list(pgs[gi].get("names", [])) != names:
                got = pgs[gi].get("names") if isinstance(pgs[gi], dict) else pgs[gi]
                return None, f"state_dict group {gi} has parameters {got}; this optimizer has {names}"
            group_slots = None
            for name in names:
                s = state.get(name)
                if not isinstance(s, dict):
                    return None, f"state_dict has no state for parameter {name!r}"
                if group_slots is None:
                    group_slots = sorted(s)
                elif sorted(s) != group_slots:
                    return None, (f"state_dict state for parameter {name!r} has slots {sorted(s)}; the other "
                                  f"parameters of group {gi} have {group_slots}")
                p = self._leaves[self.names.index(name)]
                for slot, arr in s.items():
                    arr = np.asarray(arr)
                    if arr.shape != p.shape or arr.dtype != p.dtype:
                        return None, (f"state_dict state {name!r}/{slot!r}: expected shape {p.shape} and dtype "
                                      f"{p.dtype}, got shape {arr.shape} and dtype {arr.dtype}")
            hp = {**{k: self.optimizer.param_groups[gi][k] for k in self._keys},
                  **{k: v for k, v in pgs[gi].items() if k in self._keys and k != "lr"}}
            try:
                need = type(self.optimizer).slots({k: tuple(v) if isinstance(v, list) else v for k, v in hp.items()})
            except Exception:  # left to the optimizer's own checks
                need = {}
            lacking = sorted(set(need) - set(group_slots or []))
            if lacking:
                return None, f"state_dict state for parameter {names[0]!r} lacks slot(s) {lacking}"
            slots_of.append(group_slots or [])
        extra = sorted(set(state) - set(self.names))
        if extra:
            return None, f"state_dict has state for unknown parameter(s) {extra}"
        for key in ("step_count", "skipped_steps"):
            if not isinstance(sd.get(key), numbers.Integral) or sd[key] < 0:
                return None, f"state_dict[{key!r}]={sd.get(key)!r}: expected an integer >= 0"
        meta = {k: sd.get(k) for k in ("optimizer", "format", "step_count", "skipped_steps")}
        meta["param_groups"] = [dict(pg) for pg in pgs]
        meta["group_state"] = [dict(gs) if isinstance(gs, dict) else gs for gs in gss]
        meta["slots"] = slots_of
        return meta, None

    def _restore_hyperparameters(self, meta: dict) -> list[dict[str, Any]]:
        """Check the saved hyperparameters and group state with the optimizer's own ``load_state_dict``
        on a one-element stand-in per group; return the restored hyperparameters (schedules rebuilt)."""
        opt = self.optimizer
        # one element per dtype of each group, so that dtype-dependent checks (eps) see the group's dtypes
        dts = [sorted({self._leaves[k].dtype for k in range(len(self._leaves)) if self._group_of[k] == gi}, key=str)
               for gi in range(len(opt.param_groups))]
        specs = [{"params": [np.zeros(1, dt) for dt in dts[gi]], **{k: pg[k] for k in self._keys}}
                 for gi, pg in enumerate(opt.param_groups)]
        stand_in = type(opt)(specs, nonfinite="ignore")
        names = [g.names for g in stand_in._groups]
        sd = {k: meta[k] for k in ("optimizer", "format", "step_count", "skipped_steps")}
        sd["param_groups"] = [{**pg, "names": names[gi]} for gi, pg in enumerate(meta["param_groups"])]
        sd["group_state"] = meta["group_state"]
        sd["state"] = {n: {s: np.zeros(1, dt) for s in meta["slots"][gi]}
                       for gi in range(len(specs)) for n, dt in zip(names[gi], dts[gi])}
        try:
            stand_in.load_state_dict(sd)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"state_dict does not fit this optimizer: {exc}") from None
        return [{k: pg[k] for k in self._keys} for pg in stand_in.param_groups]

    # ---- checkpoints ----------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Gather the state and write it on rank 0, atomically, in the format of ``Optimizer.save``."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"path={str(path)!r}: expected a file name ending in '.npz'")
        sd = self.state_dict()
        err = None
        if self.rank == _ROOT:
            try:
                _checkpoint.save_npz(path, *state_dict_to_files(sd))
            except Exception as exc:  # reported on every rank
                err = exc
        err = self.comm.bcast(err, root=_ROOT)
        if err is not None:
            raise err
        return path

    def load(self, path: str | Path) -> None:
        """Read a file written by :meth:`save` (or ``Optimizer.save``) on rank 0 and restore it everywhere."""
        sd, err = None, None
        if self.rank == _ROOT:
            try:
                arrays, meta = _checkpoint.load_npz(path)
                sd = state_dict_from_files(arrays, meta, path)
            except Exception as exc:  # reported on every rank
                err = exc
        err = self.comm.bcast(err, root=_ROOT)
        if err is not None:
            raise err
        self.load_state_dict(sd)


def as_distributed(optimizer: Any, comm: Any = None) -> DistributedOptimizer:
    """``optimizer`` itself if it is a :class:`DistributedOptimizer` (on ``comm``, when given), else a
    replicated-state :class:`DistributedOptimizer` wrapping it on ``comm``. Used by ``adamkit.fit``."""
    if isinstance(optimizer, DistributedOptimizer):
        if comm is not None and comm is not optimizer.comm and comm != optimizer.comm:
            raise ValueError(f"comm={comm!r}: the DistributedOptimizer given runs on another communicator "
                             f"({optimizer.comm!r}); pass comm=None or the same one")
        return optimizer
    return DistributedOptimizer(optimizer, comm)


def _release_state(optimizer: Optimizer) -> None:
    """Free the template optimizer's state buffers once they live in the shards (memory 1/P).

    Reaches into the core's buckets; if their layout changes this quietly does nothing (the template
    then keeps its own, unused, copy) rather than break a run.
    """
    try:
        for g in optimizer._groups:  # noqa: SLF001
            for b in g.buckets:
                b.flat.clear()
                for v in b.views:
                    v.clear()
    except (AttributeError, TypeError):  # pragma: no cover - depends on the core's internals
        pass
