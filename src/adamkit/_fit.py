"""``adamkit.fit``: a mini-batch training loop around an adamkit optimizer.

One epoch: draw the epoch's permutation from a seeded generator (:func:`epoch_batches`), then for each
group of ``accumulate`` mini-batches call ``loss_and_grad``, average the gradients, clip them by global
norm, take one optimizer step and record the step. At the end of the epoch: evaluate the validation
metric, update early stopping, write the checkpoint, call the callback.

Consistency under interruption: parameters, optimizer state, the run position and the history change
only inside short *critical sections* (the optimizer step with its bookkeeping, the epoch-end
bookkeeping, a checkpoint write), during which Ctrl-C is deferred to the section's end. So whenever a
``KeyboardInterrupt`` arrives (from the keyboard, or raised by user code), the state is the one after
the last completed step, and the checkpoint written then is exact: a resumed run repeats the
interrupted step and ends with the same bits as an uninterrupted one.
"""

from __future__ import annotations

import builtins
import math
import numbers
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from . import _checkpoint, _tree
from ._clip import clip_by_global_norm, global_norm
from ._minimize import as_scalar
from ._optimizer import _is_count, _is_group_list, state_dict_from_files

__all__ = ["fit", "History", "epoch_batches"]

CHECKPOINT_FORMAT = 1
_STEP_FIELDS = ("loss", "lr", "grad_norm", "time")
_EPOCH_FIELDS = ("epoch_loss", "val_metric", "epoch_time")


@dataclass
class History:
    """What :func:`fit` records. Per step: ``loss``, ``lr``, ``grad_norm``, ``time``; per epoch:
    ``epoch_loss``, ``val_metric`` (empty without validation data), ``epoch_time``.

    ``loss`` of a step is the sample-weighted mean of its mini-batch losses; ``grad_norm`` the global
    norm of its gradient before clipping; ``lr`` the learning rate of parameter group 0 used by the
    step; ``time`` seconds since training started (summed over resumed runs). ``epoch_loss`` is the
    sample-weighted mean of the epoch's mini-batch losses. ``stop_reason`` is ``"epochs"``,
    ``"early_stopping"``, ``"callback"`` or ``"interrupted"``; ``checkpoint`` the last file written.
    """

    loss: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    grad_norm: list = field(default_factory=list)
    time: list = field(default_factory=list)
    epoch_loss: list = field(default_factory=list)
    val_metric: list = field(default_factory=list)
    epoch_time: list = field(default_factory=list)
    epochs: int = 0
    steps: int = 0
    skipped_steps: int = 0
    best_epoch: int | None = None
    best_metric: float | None = None
    stop_reason: str = ""
    checkpoint: str | None = None

    @property
    def interrupted(self) -> bool:
        return self.stop_reason == "interrupted"

    @property
    def stopped_early(self) -> bool:
        return self.stop_reason == "early_stopping"


def epoch_batches(rng: np.random.Generator, n: int, batch_size: int, *, shuffle: bool = True,
                  drop_last: bool = False) -> list[np.ndarray]:
    """The index arrays of one epoch's global mini-batches, in order.

    The permutation is drawn from ``rng`` (one ``rng.permutation(n)`` per epoch when ``shuffle``), so
    every process seeded alike draws the same batches; a data-parallel layer shards each global batch.
    The last batch is smaller when ``batch_size`` does not divide ``n``, or dropped with ``drop_last``.
    """
    order = rng.permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    return [order[i:i + batch_size] for i in range(0, stop, batch_size)]


# --------------------------------------------------------------------------------------------------


class _SigintGuard:
    """Defers Ctrl-C while a critical section runs (``with guard:``); installed in the main thread only."""

    def __init__(self) -> None:
        self.depth = 0
        self.pending = False
        self.previous: Any = None
        self.defer_only = False  # data-parallel: raise only where a rank can say so to the others ...
        self.interruptible = False  # ... i.e. while it computes its gradients (see fit)

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.previous = signal.signal(signal.SIGINT, self._handler)

    def uninstall(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.depth or (self.defer_only and not self.interruptible):
            self.pending = True
        else:
            raise KeyboardInterrupt

    def __enter__(self) -> None:
        self.depth += 1

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.depth -= 1
        if self.pending and not self.depth and exc_type is None and not self.defer_only:
            self.pending = False
            raise KeyboardInterrupt


@dataclass
class _Run:
    """Where the run is: saved in checkpoints (JSON), restored on resume."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # mini-batches of the current epoch consumed by completed steps
    step: int = 0
    skipped: int = 0
    rng_state: dict = field(default_factory=dict)  # the generator at the start of the current epoch
    epoch_loss_sum: float = 0.0
    epoch_samples: int = 0
    epoch_start: float = 0.0  # elapsed seconds when the current epoch began
    elapsed: float = 0.0  # seconds of training before this call
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    stopped_early: bool = False

    def to_json(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, d: Any) -> "_Run":
        """The run saved in a checkpoint; raises KeyError or TypeError naming the first bad field."""
        if not isinstance(d, dict) or set(d) != set(cls().__dict__):
            raise KeyError("run")

        def real(v: Any) -> bool:  # a NaN loss or metric is recorded as it was
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        count = _is_count
        checks = {"epoch": count, "batch": count, "step": count, "skipped": count, "epoch_samples": count,
                  "bad_epochs": count, "epoch_loss_sum": real, "epoch_start": real, "elapsed": real,
                  "best": lambda v: v is None or real(v), "best_epoch": lambda v: v is None or count(v),
                  "stopped_early": lambda v: isinstance(v, bool), "rng_state": lambda v: isinstance(v, dict)}
        for key, ok in checks.items():
            if not ok(d[key]):
                raise TypeError(f"run[{key!r}]={d[key]!r}")
        return cls(**d)


def fit(loss_and_grad: Callable, optimizer: Any, data: Any, *, batch_size: int, epochs: int,
        seed: int | None = 0, shuffle: bool = True, drop_last: bool = False,
        validation_data: Any = None, metric: Callable | None = None, patience: int | None = None,
        min_delta: float = 0.0, checkpoint: str | Path | None = None, checkpoint_every: int | None = None,
        resume: bool = False, clip_norm: float | None = None, accumulate: int = 1,
        reset_state_each_epoch: bool = False, callback: Callable | None = None,
        progress: bool | None = None, comm: Any = None) -> History:
    """Train ``optimizer.params`` by mini-batch steps over ``data``; return the :class:`History`.

    Args:
        loss_and_grad: ``loss_and_grad(params, batch) -> (loss, grads)``: ``params`` is
            ``optimizer.params`` (updated in place by the steps), ``batch`` has the form of ``data``
            (a tuple of row-subsets, or one array), ``loss`` a scalar (normally the batch's mean loss)
            and ``grads`` mirrors ``params``.
        optimizer: an adamkit optimizer built on the parameters.
        data: a tuple (or list) of arrays sharing their first dimension (one row per sample), or one array.
        batch_size: rows per mini-batch (>= 1; the last batch of an epoch may be smaller).
        epochs: the number of epochs to train in total (with ``resume``, counting the earlier ones).
        seed: seeds the generator that shuffles every epoch (``None``: fresh entropy, still resumable).
        shuffle: ``False`` takes the rows in order. drop_last: drop an epoch's incomplete last batch.
        validation_data: data of the same form, evaluated after every epoch by ``metric(params, batch)
            -> float`` (default: the loss of ``loss_and_grad``) on the whole set at once.
        metric: the validation metric; lower is better.
        patience: stop when the monitored value (the validation metric, else the epoch's training
            loss) has not improved by more than ``min_delta`` for ``patience`` epochs. Default: never.
        checkpoint: a ``.npz`` path; written atomically at the end of every epoch, every
            ``checkpoint_every`` steps, and on Ctrl-C, with the parameters, optimizer state, the
            generator state, the position in the epoch and the history.
        resume: continue from ``checkpoint`` (which must exist): parameters and optimizer state are
            loaded and training goes on where it stopped; the final parameters are bit-identical to
            those of an uninterrupted run. The settings that shape the trajectory (data length,
            batch_size, seed, shuffle, drop_last, accumulate, clip_norm, reset_state_each_epoch) must
            match the checkpoint's. A run that stopped early stays stopped.
        clip_norm: scale each step's gradient to global norm at most ``clip_norm``
            (:func:`adamkit.clip_by_global_norm`, torch's formula).
        accumulate: take one step per ``accumulate`` mini-batches, with their sample-weighted mean
            gradient (the last group of an epoch may be smaller).
        reset_state_each_epoch: call ``optimizer.reset_state()`` before every epoch but the first (the
            course notes' code restarts the moments every epoch); default False, the standard algorithm.
        callback: ``callback(history)`` after every epoch (after its checkpoint); raising
            ``StopIteration`` ends training.
        progress: a tqdm progress bar with the loss; default: on when stderr is a terminal.
        comm: an mpi4py communicator: data-parallel training (:mod:`adamkit.distributed`). Every rank
            calls ``fit`` with the same data and settings; each global mini-batch is split over the
            ranks (:meth:`~adamkit.distributed.DistributedOptimizer.local_part`), the gradients and
            losses are averaged weighted by the local row counts, so the run is that of one process
            with the same global batches. Rank 0 writes the checkpoints and shows the progress bar.
            ``optimizer`` may also be a ``DistributedOptimizer`` (e.g. with ``shard_state=True``).

    A non-finite loss or gradient follows the optimizer's ``nonfinite`` policy: ``"raise"`` (default)
    raises ``FloatingPointError`` naming the epoch and step, with the parameters those after the
    previous step; ``"skip"`` skips the step (counted in ``history.skipped_steps``); ``"ignore"``
    steps anyway. Ctrl-C (``KeyboardInterrupt``) writes the checkpoint of the last completed step and
    returns the history so far with ``stop_reason == "interrupted"``.

    Example (least squares, y = 4 + 3x + noise)::

        >>> import numpy as np, adamkit as ak
        >>> rng = np.random.default_rng(0)
        >>> x = 2 * rng.random((200, 1)); y = 4 + 3 * x + 0.1 * rng.standard_normal((200, 1))
        >>> X = np.c_[np.ones(200), x]
        >>> beta = np.zeros((2, 1))
        >>> def loss_and_grad(b, batch):
        ...     Xb, yb = batch
        ...     r = Xb @ b - yb
        ...     return float((r * r).mean()), 2 / len(yb) * Xb.T @ r
        >>> hist = ak.fit(loss_and_grad, ak.Adam(beta, lr=0.05), (X, y), batch_size=20, epochs=60)
        >>> bool(np.abs(beta.ravel() - [4, 3]).max() < 0.1), len(hist.loss), len(hist.epoch_loss)
        (True, 600, 60)
    """
    # ---- checks (nothing is changed before they all pass) ----
    if not callable(loss_and_grad):
        raise TypeError(f"loss_and_grad={loss_and_grad!r}: expected a callable loss_and_grad(params, batch) "
                        f"-> (loss, grads)")
    missing = [a for a in ("params", "names", "step", "state_dict", "load_state_dict", "learning_rate")
               if not hasattr(optimizer, a)]
    if missing:
        raise TypeError(f"optimizer={optimizer!r}: expected an adamkit optimizer (lacks {', '.join(missing)})")
    arrays, single = _check_data("data", data)
    n = len(arrays[0])
    batch_size = _int("batch_size", batch_size, 1)
    epochs = _int("epochs", epochs, 0)
    if seed is not None:
        seed = _int("seed", seed, 0)
    shuffle = _flag("shuffle", shuffle)
    drop_last = _flag("drop_last", drop_last)
    if drop_last and n < batch_size:
        raise ValueError(f"drop_last=True with batch_size={batch_size} > {n} rows of data: no batch would remain")
    val_arrays = val_single = None
    if validation_data is not None:
        val_arrays, val_single = _check_data("validation_data", validation_data)
        form = [a.shape[1:] for a in arrays]
        if val_single != single or [a.shape[1:] for a in val_arrays] != form:
            raise ValueError(
                f"validation_data: expected the form of data ({'an array' if single else f'{len(arrays)} arrays'} "
                f"with rows of shape {form[0] if single else form}), got "
                f"{'an array' if val_single else f'{len(val_arrays)} arrays'} with rows of shape "
                f"{val_arrays[0].shape[1:] if val_single else [a.shape[1:] for a in val_arrays]}")
    if metric is not None and not callable(metric):
        raise TypeError(f"metric={metric!r}: expected a callable metric(params, batch) -> float")
    if metric is not None and validation_data is None:
        raise ValueError("metric is given but validation_data is None: expected validation data to evaluate it on")
    if patience is not None:
        patience = _int("patience", patience, 1)
    min_delta = _real("min_delta", min_delta, 0.0)
    path = None
    if checkpoint is not None:
        path = Path(checkpoint)
        if path.suffix != ".npz":
            raise ValueError(f"checkpoint={str(checkpoint)!r}: expected a file name ending in '.npz'")
        if not (path.parent if str(path.parent) else Path(".")).is_dir():
            raise ValueError(f"checkpoint={str(checkpoint)!r}: directory {str(path.parent)!r} does not exist")
    if checkpoint_every is not None:
        checkpoint_every = _int("checkpoint_every", checkpoint_every, 1)
        if path is None:
            raise ValueError(f"checkpoint_every={checkpoint_every}: expected a checkpoint path to write to")
    resume = _flag("resume", resume)
    if resume and path is None:
        raise ValueError("resume=True: expected a checkpoint path to resume from")
    if clip_norm is not None:
        clip_norm = _real("clip_norm", clip_norm, 0.0, positive=True)
    accumulate = _int("accumulate", accumulate, 1)
    reset_state_each_epoch = _flag("reset_state_each_epoch", reset_state_each_epoch)
    if reset_state_each_epoch and not hasattr(optimizer, "reset_state"):
        raise TypeError("reset_state_each_epoch=True: the optimizer has no reset_state()")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback={callback!r}: expected a callable callback(history) or None")
    if progress is not None:
        progress = _flag("progress", progress)

    dist = None  # data-parallel over MPI (adamkit.distributed)
    if comm is not None or getattr(optimizer, "comm", None) is not None:
        from .distributed import as_distributed
        optimizer = dist = as_distributed(optimizer, comm)
    leaves = _param_leaves(optimizer)
    names = list(optimizer.names)
    config = {"n": n, "batch_size": batch_size, "seed": seed, "shuffle": shuffle, "drop_last": drop_last,
              "accumulate": accumulate, "clip_norm": clip_norm, "reset_state_each_epoch": reset_state_each_epoch}
    if dist is not None:
        dist.assert_same("fit settings", {**config, "epochs": epochs, "resume": resume, "patience": patience,
                                          "min_delta": min_delta, "checkpoint_every": checkpoint_every})
    entropy = seed if dist is None or seed is not None else dist.comm.bcast(np.random.SeedSequence().entropy)
    rng = np.random.default_rng(entropy)  # with comm: the same batches on every rank
    run = _Run(rng_state=rng.bit_generator.state)
    history = History()
    if resume:
        run, history = _load(path, optimizer, leaves, names, config)  # all checked, then committed
    if path is not None and resume:
        history.checkpoint = str(path)

    # ---- the loop ----
    nonfinite = getattr(optimizer, "nonfinite", "raise")
    params = optimizer.params
    nb = n // batch_size if drop_last else -(-n // batch_size)  # mini-batches per epoch
    show = (progress if progress is not None else _is_terminal()) and (dist is None or dist.rank == 0)
    guard = _SigintGuard()
    t0 = time.perf_counter()

    def elapsed() -> float:
        return run.elapsed + (time.perf_counter() - t0)

    def save() -> None:
        if path is not None:
            run_json = {**run.to_json(), "elapsed": elapsed()}
            _save(path, optimizer, leaves, names, config, run_json, history)
            history.checkpoint = str(path)

    bar = tqdm(total=epochs * nb, initial=min(run.epoch * nb + run.batch, epochs * nb), disable=not show,
               unit="batch", dynamic_ncols=True, leave=True)
    guard.install()
    guard.defer_only = dist is not None
    try:
        if run.stopped_early:
            history.stop_reason = "early_stopping"
        while run.epoch < epochs and not history.stop_reason:
            e = run.epoch
            rng.bit_generator.state = run.rng_state
            batches = epoch_batches(rng, n, batch_size, shuffle=shuffle, drop_last=drop_last)
            next_state = rng.bit_generator.state
            if show:
                bar.set_description(f"epoch {e + 1}/{epochs}", refresh=False)
            if reset_state_each_epoch and e > 0 and run.batch == 0:
                with guard:
                    optimizer.reset_state()  # idempotent: safe to repeat after a resume
            while run.batch < len(batches):
                group = batches[run.batch:run.batch + accumulate]
                if dist is not None:  # this rank's rows of each mini-batch, then averaged over the ranks
                    stop = guard.pending  # Ctrl-C: every rank stops before the same step (the flag rides along)
                    local = [i for i in map(dist.local_part, group) if len(i)]
                    loss, grads, rows = 0.0, None, 0
                    if local and not stop:
                        try:
                            guard.interruptible = True  # a Ctrl-C here is this rank's stop request
                            loss, grads, rows = _accumulated(loss_and_grad, params, arrays, single, local)
                        except KeyboardInterrupt:
                            stop, loss, grads, rows = True, 0.0, None, 0
                        finally:
                            guard.interruptible = False
                    grads = dist.reduce(grads, weight=rows, loss=loss, stop=stop)  # optimizer.step applies it
                    if grads.stop_ranks:
                        raise KeyboardInterrupt
                    loss, rows = grads.loss, int(grads.weight)
                    norm = grads.clip(clip_norm) if clip_norm is not None else grads.norm()
                else:
                    loss, grads, rows = _accumulated(loss_and_grad, params, arrays, single, group)
                    if clip_norm is not None:
                        grads, norm = clip_by_global_norm(grads, clip_norm, name="loss_and_grad's grads")
                    else:
                        norm = global_norm(grads, name="loss_and_grad's grads")
                finite = math.isfinite(loss) and math.isfinite(norm)
                if not finite and nonfinite == "raise":
                    what = f"loss {loss!r}" if not math.isfinite(loss) else f"gradient (global norm {norm!r})"
                    raise FloatingPointError(
                        f"non-finite {what} in epoch {e + 1}, step {run.step + 1} (mini-batches {run.batch}.."
                        f"{run.batch + len(group) - 1} of the epoch); the parameters are those after step "
                        f"{run.step} (give the optimizer nonfinite='skip' to skip such steps)")
                with guard:
                    if finite or nonfinite == "ignore":
                        lr = float(optimizer.learning_rate())
                        optimizer.step(grads)
                        run.step += 1
                        history.loss.append(loss)
                        history.lr.append(lr)
                        history.grad_norm.append(norm)
                        history.time.append(elapsed())
                        run.epoch_loss_sum += loss * rows
                        run.epoch_samples += rows
                    else:
                        run.skipped += 1
                    run.batch += len(group)
                    history.steps, history.skipped_steps = run.step, run.skipped
                    if checkpoint_every is not None and finite and run.step % checkpoint_every == 0:
                        save()
                if show:
                    bar.update(len(group))
                    bar.set_postfix(loss=f"{loss:.4g}", refresh=False)

            # ---- end of epoch ----
            epoch_loss = run.epoch_loss_sum / run.epoch_samples if run.epoch_samples else math.nan
            val = None
            if val_arrays is not None and dist is None:
                val = _validate(loss_and_grad, metric, params, val_arrays, val_single)
            elif dist is not None:  # rank 0 evaluates; every rank gets its value, or raises its error
                failure = None
                if val_arrays is not None and dist.rank == 0:
                    try:
                        val = _validate(loss_and_grad, metric, params, val_arrays, val_single)
                    except Exception as exc:  # noqa: BLE001 - raised again below, on every rank
                        failure = exc
                val, kind, message = dist.comm.bcast(
                    (val, None, None) if failure is None else (None, type(failure).__name__, str(failure)), root=0)
                if failure is not None:
                    raise failure
                if kind is not None:
                    cls = getattr(builtins, kind, None)
                    cls = cls if isinstance(cls, type) and issubclass(cls, Exception) else RuntimeError
                    raise cls(f"{message} (raised on rank 0 while evaluating validation_data)")
            monitored = val if val is not None else epoch_loss
            with guard:
                history.epoch_loss.append(epoch_loss)
                if val is not None:
                    history.val_metric.append(val)
                history.epoch_time.append(elapsed() - run.epoch_start)
                if run.best is None or monitored < run.best - min_delta:
                    run.best, run.best_epoch, run.bad_epochs = monitored, e + 1, 0
                else:
                    run.bad_epochs += 1
                if patience is not None and run.bad_epochs >= patience:
                    run.stopped_early = True
                    history.stop_reason = "early_stopping"
                run.epoch, run.batch, run.rng_state = e + 1, 0, next_state
                run.epoch_loss_sum, run.epoch_samples, run.epoch_start = 0.0, 0, elapsed()
                history.epochs, history.best_epoch, history.best_metric = run.epoch, run.best_epoch, run.best
                save()
            if show:
                bar.set_postfix(loss=f"{epoch_loss:.4g}", **({"val": f"{val:.4g}"} if val is not None else {}))
            stop_here = False
            if callback is not None:
                try:
                    callback(history)
                except StopIteration:
                    stop_here = True
                except KeyboardInterrupt:
                    if dist is None:
                        raise
                    guard.pending = True  # stops every rank at the next step
            if dist is not None:  # any rank's callback (a rank may have none) stops every rank
                stop_here = bool(dist.comm.allreduce(int(stop_here), op=dist._MPI.MAX))  # noqa: SLF001
            if stop_here:
                history.stop_reason = "callback"
        if dist is not None and dist.comm.allreduce(int(guard.pending), op=dist._MPI.MAX):  # noqa: SLF001
            raise KeyboardInterrupt  # a Ctrl-C after the last step's collective: every rank stops alike
        if not history.stop_reason:
            history.stop_reason = "epochs"
    except KeyboardInterrupt:
        history.stop_reason = "interrupted"
        with guard:
            save()
    finally:
        guard.uninstall()
        bar.close()
    history.epochs, history.steps, history.skipped_steps = run.epoch, run.step, run.skipped
    history.best_epoch, history.best_metric = run.best_epoch, run.best
    return history


# --------------------------------------------------------------------------------------------------
# Helpers of the loop


def _validate(loss_and_grad: Callable, metric: Callable | None, params: Any, arrays: list[np.ndarray],
              single: bool) -> float:
    """The validation value: ``metric(params, batch)``, or the loss of ``loss_and_grad``, on all the data."""
    vbatch = arrays[0] if single else tuple(arrays)
    return (as_scalar(metric(params, vbatch), "metric") if metric is not None
            else _call(loss_and_grad, params, vbatch)[0])


def _call(loss_and_grad: Callable, params: Any, batch: Any) -> tuple[float, Any]:
    out = loss_and_grad(params, batch)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise ValueError(f"loss_and_grad returned {type(out).__name__}: expected a pair (loss, grads)")
    return as_scalar(out[0], "loss_and_grad (the loss)"), out[1]


def _batch(arrays: list[np.ndarray], single: bool, idx: np.ndarray) -> Any:
    return arrays[0][idx] if single else tuple(a[idx] for a in arrays)


def _accumulated(loss_and_grad: Callable, params: Any, arrays: list[np.ndarray], single: bool,
                 group: list[np.ndarray]) -> tuple[float, Any, int]:
    """(loss, grads, rows) of one step: the sample-weighted means over the step's mini-batches."""
    if len(group) == 1:
        loss, grads = _call(loss_and_grad, params, _batch(arrays, single, group[0]))
        return loss, grads, len(group[0])
    total, loss_sum, acc, treedef = 0, 0.0, None, None
    for k, idx in enumerate(group):
        loss, grads = _call(loss_and_grad, params, _batch(arrays, single, idx))
        w = len(idx)
        if acc is None:
            leaves, _, treedef = _tree.flatten(grads)
            acc = [np.asarray(g) * w for g in leaves]
        else:
            # added leaf by leaf where the first mini-batch's grads have them (dict keys by name, not by
            # position); a structure that differs is refused
            leaves = treedef.flatten_like(grads, f"loss_and_grad's grads for mini-batch {k + 1} of {len(group)} "
                                                 f"(accumulate), against those for the first")
            for i, g in enumerate(leaves):
                g = np.asarray(g)
                if g.shape != acc[i].shape:
                    raise ValueError(f"loss_and_grad's grads for mini-batch {k + 1} of {len(group)} (accumulate): "
                                     f"an array of shape {g.shape} where the first mini-batch's has {acc[i].shape}")
                acc[i] = acc[i] + g * w
        total += w
        loss_sum += loss * w
    return loss_sum / total, treedef.unflatten([a / total for a in acc]), total


def _is_terminal() -> bool:
    try:
        return bool(sys.stderr is not None and sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


def _param_leaves(optimizer: Any) -> list[np.ndarray]:
    """The parameter arrays, in the order of ``optimizer.names``."""
    params = optimizer.params
    if _is_group_list(params):
        leaves = [x for spec in params for x in _tree.flatten(spec["params"])[0]]
    else:
        leaves = _tree.flatten(params)[0]
    if len(leaves) != len(optimizer.names):
        raise ValueError(f"optimizer: {len(leaves)} parameter arrays but {len(optimizer.names)} names")
    return leaves


# --------------------------------------------------------------------------------------------------
# Argument checks


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}={value!r}: expected an integer >= {minimum}")
    if value < minimum:
        raise ValueError(f"{name}={value!r}: expected an integer >= {minimum}")
    return int(value)


def _real(name: str, value: Any, minimum: float, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)) \
            or float(value) < minimum or (positive and float(value) == minimum):
        raise ValueError(f"{name}={value!r}: expected a finite number {'>' if positive else '>='} {minimum:g}")
    return float(value)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}={value!r}: expected True or False")
    return bool(value)


def _check_data(name: str, data: Any) -> tuple[list[np.ndarray], bool]:
    if isinstance(data, np.ndarray):
        items, single = [data], True
    elif isinstance(data, (tuple, list)) and len(data) > 0:
        items, single = list(data), False
    else:
        raise TypeError(f"{name}: expected an array or a tuple of arrays sharing their first dimension, "
                        f"got {_tree._describe(data)}")
    arrays = []
    for i, a in enumerate(items):
        where = name if single else f"{name}[{i}]"
        if not isinstance(a, np.ndarray):
            try:
                a = np.asarray(a)
            except (ValueError, TypeError) as exc:
                raise TypeError(f"{where}: expected an array ({exc})") from None
        if a.ndim == 0:
            raise ValueError(f"{where}: expected an array with a first dimension (one row per sample), got a scalar")
        arrays.append(a)
    lengths = [len(a) for a in arrays]
    if len(set(lengths)) > 1:
        raise ValueError(f"{name}: arrays of different lengths {lengths}; expected all to share their first "
                         f"dimension (one row per sample)")
    if lengths[0] == 0:
        raise ValueError(f"{name}: expected at least one row, got arrays of length 0")
    return arrays, single


# --------------------------------------------------------------------------------------------------
# Checkpoints: one .npz (written atomically by _checkpoint.save_npz) with the parameters ("param<i>"),
# the optimizer state ("opt<k>", indexed as Optimizer.save does), the history ("hist_<field>") and a
# JSON description: the settings, the parameter names, the optimizer's state_dict scalars and the run.


def _save(path: Path, optimizer: Any, leaves: list[np.ndarray], names: list[str], config: dict,
          run_json: dict, history: History) -> None:
    sd = optimizer.state_dict()  # data-parallel: gathered on rank 0, None elsewhere
    if sd is None:
        return
    arrays: dict[str, np.ndarray] = {f"param{i}": p for i, p in enumerate(leaves)}
    index: dict[str, dict[str, str]] = {}
    k = 0
    for name, slots in sd["state"].items():
        index[name] = {}
        for slot, arr in slots.items():
            arrays[f"opt{k}"] = arr
            index[name][slot] = f"opt{k}"
            k += 1
    for f in _STEP_FIELDS + _EPOCH_FIELDS:
        arrays[f"hist_{f}"] = np.asarray(getattr(history, f), dtype=np.float64)
    opt_meta = {**{key: v for key, v in sd.items() if key != "state"}, "kind": "optimizer", "state": index}
    meta = {"kind": "fit", "format": CHECKPOINT_FORMAT, "config": config, "params": names,
            "optimizer": opt_meta, "run": run_json}
    _checkpoint.save_npz(path, arrays, meta)


def _load(path: Path, optimizer: Any, leaves: list[np.ndarray], names: list[str],
          config: dict) -> tuple[_Run, History]:
    """Read and check a fit checkpoint; only when everything fits, load it into the optimizer and params."""
    arrays, meta = _checkpoint.load_npz(path)  # FileNotFoundError, or ValueError for a damaged file
    where = f"checkpoint {str(path)!r}"
    if not isinstance(meta, dict) or meta.get("kind") != "fit":
        kind = meta.get("kind") if isinstance(meta, dict) else None
        raise ValueError(f"{where} is not a fit checkpoint (it holds {kind!r}); not loaded")
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{where} has format {meta.get('format')!r}: expected {CHECKPOINT_FORMAT}; not loaded")
    try:
        saved = meta["config"]
        diff = [f"{k}={saved.get(k)!r} in the checkpoint, {v!r} now" for k, v in config.items() if saved.get(k) != v]
        if diff:
            raise ValueError(f"{where} was written with other settings ({'; '.join(diff)}); resume needs the same "
                             f"settings to continue the same run; not loaded")
        if list(meta["params"]) != names:
            raise ValueError(f"{where} holds parameters {list(meta['params'])}; the optimizer has {names}; not loaded")
        values = []
        for i, (p, name) in enumerate(zip(leaves, names)):
            a = arrays[f"param{i}"]
            if a.shape != p.shape or a.dtype != p.dtype:
                raise ValueError(f"{where}: parameter {name!r} has shape {a.shape} and dtype {a.dtype}; expected "
                                 f"shape {p.shape} and dtype {p.dtype}; not loaded")
            values.append(a)
        sd = state_dict_from_files(arrays, meta["optimizer"], path)
        run = _Run.from_json(meta["run"])
        np.random.default_rng().bit_generator.state = run.rng_state  # checks the generator state
        history = History(**{f: [float(v) for v in arrays[f"hist_{f}"]] for f in _STEP_FIELDS + _EPOCH_FIELDS})
        if len(history.loss) != run.step or len(history.epoch_loss) != run.epoch:
            raise KeyError("history")
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{where} is incomplete or inconsistent ({exc!r} missing or malformed); not loaded") from None
    optimizer.load_state_dict(sd)  # checks everything before changing anything
    for p, a in zip(leaves, values):
        np.copyto(p, a)
    history.epochs, history.steps, history.skipped_steps = run.epoch, run.step, run.skipped
    history.best_epoch, history.best_metric = run.best_epoch, run.best
    return run, history
