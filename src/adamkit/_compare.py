"""The comparison harness: ``compare(problems, optimizers)`` under the DeepOBS protocol.

Protocol (Schneider, Balles & Hennig, DeepOBS, ICLR 2019), per problem and optimizer:

1. Tuning: every learning rate of one log-spaced grid (the same grid for every optimizer) is run from
   the first ``tune_seeds`` seeds (at least three). A run that diverges or turns NaN is a recorded
   failure with an infinite loss.
2. Selection: the learning rate with the smallest *median* final loss over those seeds.
3. Reporting: the chosen setting is rerun on all ``seeds`` with full recording (loss curve, effective
   step sizes) and reported as mean and spread. Runs are deterministic functions of the seed, so a rerun
   of a tuning seed must give the tuning result bit for bit; this is checked and recorded.

Per problem and optimizer it reports performance (final loss and the problem's metrics, mean and spread),
speed (gradient evaluations until the loss first reaches the problem's target, not wall time) and
tuneability (the final loss against the learning rate, and the width in decades of the contiguous
learning-rate range around its chosen rate whose loss is good: within ``factor`` of the best loss any
optimizer reached on the problem, as excess over the problem's known minimum where it has one, or at
most the problem's target).

Every run gets its own ``numpy.random.Generator`` seeded from ``(seed, crc32(problem name))``: for a
given seed every optimizer and learning rate starts from the same point and sees the same mini-batches.
Work is spread over processes (``jobs``); results do not depend on ``jobs``.
"""

from __future__ import annotations

import ast
import json
import math
import multiprocessing as mp
import os
import platform
import sys
import time
import warnings
import zlib
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from . import _tree
from ._files import write_atomic
from ._optimizers import OPTIMIZERS, optimizer_class
from ._problems import PROBLEMS, Problem, Variant, check_lrs
from ._problems import problems as _builtin_problems

#: A run whose loss exceeds this factor times ``max(1, |initial loss|)`` is stopped as diverged.
DIVERGENCE_FACTOR = 1e6
#: How many first steps of a traced problem record their update size and loss.
FIRST_STEPS = 100
#: About how many points a recorded run's loss curve has (a fixed number: results never depend on timing).
CHECKPOINTS = 60
RESULTS_FORMAT = 1


# --------------------------------------------------------------------------------------------------
# Methods: an optimizer with fixed options, under a label.


@dataclass(frozen=True)
class Method:
    """An optimizer configuration to compare: ``label``, optimizer name, keyword options (besides lr)."""

    label: str
    optimizer: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def build(self, params: Any, lr: Any):
        return optimizer_class(self.optimizer)(params, lr=lr, **dict(self.options))

    def to_dict(self) -> dict:
        return {"label": self.label, "optimizer": self.optimizer, "options": _jsonable(dict(self.options))}


#: The named methods ``compare`` and ``adamkit compare --optimizers`` accept.
METHODS: dict[str, Method] = {
    "sgd": Method("sgd", "sgd"),
    "momentum": Method("momentum", "sgd", {"momentum": 0.9}),
    "nesterov": Method("nesterov", "sgd", {"momentum": 0.9, "nesterov": True}),
    "adagrad": Method("adagrad", "adagrad"),
    "rmsprop": Method("rmsprop", "rmsprop"),
    "adam": Method("adam", "adam"),
    "amsgrad": Method("amsgrad", "adam", {"amsgrad": True}),
    "adamw": Method("adamw", "adamw"),
    "adamax": Method("adamax", "adamax"),
    "nadam": Method("nadam", "nadam"),
    "radam": Method("radam", "radam"),
}
METHOD_HELP = {
    "sgd": "SGD", "momentum": "SGD with momentum 0.9", "nesterov": "SGD with Nesterov momentum 0.9",
    "adagrad": "AdaGrad", "rmsprop": "RMSProp (alpha 0.99)", "adam": "Adam (betas 0.9, 0.999)",
    "amsgrad": "Adam with amsgrad=True", "adamw": "AdamW (weight decay 0.01)", "adamax": "Adamax",
    "nadam": "NAdam", "radam": "RAdam",
}
#: The seed notes' five methods.
DEFAULT_METHODS = ("sgd", "momentum", "adagrad", "rmsprop", "adam")


def parse_method(spec: Any) -> Method:
    """A :class:`Method` from a name (``"adam"``), a call-like string (``"adam(betas=(0.9, 0.9999))"``,
    ``"sgd(momentum=0.5)"``), a :class:`Method` or a ``Variant``, or a ``(label, optimizer, options)`` tuple.
    """
    if isinstance(spec, Method):
        m = spec
    elif isinstance(spec, Variant):
        m = Method(spec.label, spec.optimizer, dict(spec.options))
    elif isinstance(spec, tuple) and len(spec) == 3:
        m = Method(str(spec[0]), str(spec[1]), dict(spec[2]))
    elif isinstance(spec, str):
        text = spec.strip()
        if text.lower() in METHODS:
            return METHODS[text.lower()]
        try:
            node = ast.parse(text, mode="eval").body
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.args):
                raise ValueError
            base = node.func.id.lower()
            opts = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
            if None in opts:
                raise ValueError
        except (SyntaxError, ValueError):
            raise ValueError(f"optimizer {spec!r}: expected a name ({', '.join(METHODS)}) or name(option=value, ...)") from None
        if base not in METHODS:
            raise ValueError(f"optimizer {spec!r}: unknown name {base!r}; expected one of {', '.join(METHODS)}")
        parent = METHODS[base]
        m = Method(text.replace(" ", ""), parent.optimizer, {**parent.options, **opts})
    else:
        raise TypeError(f"optimizer {spec!r}: expected a name, a Method or a (label, optimizer, options) tuple")
    if m.optimizer.lower() not in OPTIMIZERS:
        raise ValueError(f"optimizer {m.optimizer!r} of {m.label!r}: expected one of {', '.join(OPTIMIZERS)}")
    cls = optimizer_class(m.optimizer)
    bad = sorted(set(m.options) - set(cls.defaults) - {"nonfinite"} | ({"lr"} & set(m.options)))
    if bad:
        raise ValueError(f"optimizer {m.label!r}: unknown option(s) {bad}; {cls.__name__} takes "
                         f"{', '.join(k for k in cls.defaults if k != 'lr')} (lr comes from the grid)")
    try:  # let the optimizer check the values now, with its own messages
        m.build(np.zeros(1), 1e-3)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"optimizer {m.label!r}: {exc}") from None
    return Method(m.label, m.optimizer.lower(), dict(m.options))


# --------------------------------------------------------------------------------------------------
# One run.


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(name.encode())]))


def _checkpoints(steps: int, n: int = 80) -> list[int]:
    """Step counts at which a recorded run evaluates its objective: geometric early, then uniform."""
    geo = np.unique(np.round(np.geomspace(1, steps, n // 3)).astype(int))
    lin = np.unique(np.round(np.linspace(0, steps, n - len(geo) + 1)).astype(int))
    return sorted(set(geo.tolist()) | set(lin.tolist()) | {0, steps})


def effective_steps(opt: Any, method: Method, lr: float) -> np.ndarray | None:
    """Per-coordinate effective step size of the step just taken, flattened over all parameters.

    Adam (and AdamW, NAdam, RAdam): ``lr / (sqrt(v_hat) + eps)`` with ``v_hat = v / (1 - beta2^t)``
    (``v`` the running max with amsgrad; no correction with ``bias_correction=False``); AdaGrad
    ``lr_t / (sqrt(sum) + eps)``; RMSProp ``lr / (sqrt(v) + eps)``; Adamax ``lr / u``; SGD ``lr``.
    A coordinate whose accumulator is still exactly 0 (it never had a gradient, as in a sparse problem)
    has no step to speak of and gets NaN.
    """
    name = method.optimizer
    hp = opt.param_groups[0]
    t = opt.step_count - getattr(opt, "skipped_steps", 0)  # the bias-correction step t
    try:
        state = opt.state  # live views, no copy
    except AttributeError:  # pragma: no cover - older cores: the documented state_dict
        state = opt.state_dict()["state"]
    out = []
    for s in state.values():
        if name in ("adam", "adamw", "nadam", "radam"):
            v = s["max_exp_avg_sq"] if hp.get("amsgrad") else s["exp_avg_sq"]
            bc2 = 1.0 - hp["betas"][1] ** t if hp.get("bias_correction", True) else 1.0
            e = np.where(v > 0, lr / (np.sqrt(v / bc2) + hp["eps"]), np.nan)
        elif name == "adagrad":
            acc = s["sum"]
            e = np.where(acc > 0, lr / (1.0 + (t - 1) * hp["lr_decay"]) / (np.sqrt(acc) + hp["eps"]), np.nan)
        elif name == "rmsprop":
            v = s["square_avg"] - s["grad_avg"] ** 2 if hp["centered"] else s["square_avg"]
            e = np.where(s["square_avg"] > 0, lr / (np.sqrt(v) + hp["eps"]), np.nan)
        elif name == "adamax":
            e = lr / (1.0 - hp["betas"][0] ** t) / s["exp_inf"]
        elif name == "sgd":
            e = np.full(s["momentum_buffer"].shape if "momentum_buffer" in s else (1,), lr)
        else:  # pragma: no cover - every registered optimizer is handled above
            return None
        out.append(np.ravel(e))
    return np.concatenate(out)


def run_one(problem: Problem, method: Method, lr: float, seed: int, detail: bool = False,
            checkpoints: int = CHECKPOINTS) -> dict[str, Any]:
    """Run ``method`` at learning rate ``lr`` on ``problem`` from ``seed``; never raises for a bad run.

    Returns a record: ``status`` (``"ok"``, ``"diverged"`` or ``"error"``), ``final_loss`` (None unless
    ok), ``metrics``, ``steps_done``, ``message``, ``seconds``; with ``detail`` also the loss curve
    (``curve_steps``, ``curve``, about ``checkpoints`` points), ``evals_to_target`` (the first step whose
    objective is at most the target; with ``full_loss`` the objective is evaluated at the checkpoints and,
    once one reaches the target, at every step since the previous one, so a dip below the target that is
    over by the next checkpoint goes unseen) and effective step sizes; for a traced problem the first
    steps' update sizes and losses.
    """
    rec: dict[str, Any] = {"problem": problem.name, "method": method.label, "lr": float(lr), "seed": int(seed),
                           "status": "ok", "final_loss": None, "metrics": {}, "steps_done": 0, "message": ""}
    t_start = time.perf_counter()
    T = problem.steps
    rng = _rng(seed, problem.name)
    full = problem.full_loss
    det = not problem.stochastic
    target = problem.target
    ckpts = set(_checkpoints(T, checkpoints)) if detail else set()
    eff_at = set(_checkpoints(T, min(40, checkpoints))) - {0} if detail else set()
    curve_steps: list[int] = []
    curve: list[float] = []
    eff_med: list[float] = []
    eff_steps: list[int] = []
    eff_coords: list[list[float]] = []
    first_upd: list[float] = []
    first_loss: list[float] = []
    trace_first = problem.trace
    keep_coords = detail and problem.trace
    hit: int | None = None
    block: list[float] = []
    tail_n = max(1, T // 20)
    tail: list[float] = []
    t = 0
    try:
        with np.errstate(all="ignore"):
            params = problem.init(rng)
            lr_arg = problem.schedule(lr) if problem.schedule is not None else lr
            lr_at = lr_arg if callable(lr_arg) else (lambda count: lr)
            opt = method.build(params, lr_arg)
            leaves, _, treedef = _tree.flatten(params)
            # snapshots since the last checkpoint, to find the exact step the objective reaches the target
            snap = detail and full is not None and target is not None
            snaps: list[tuple[int, list[np.ndarray]]] = []
            if detail and full is not None:
                v0 = float(full(params))
                curve_steps.append(0)
                curve.append(v0)
                if target is not None and v0 <= target:
                    hit = 0
            limit = None
            for t in range(1, T + 1):
                loss, grads = problem.call(params, rng, t)
                loss = float(loss)
                if limit is None:
                    limit = DIVERGENCE_FACTOR * max(1.0, abs(loss)) if math.isfinite(loss) else 0.0
                    loss_start = loss
                if not math.isfinite(loss) or abs(loss) > limit:
                    raise FloatingPointError(f"loss {loss:.4g} at step {t} (started at {loss_start:.4g})")
                if det and full is None:
                    # the loss at the parameters after t-1 updates
                    if target is not None and hit is None and loss <= target:
                        hit = t - 1
                    if (t - 1) in ckpts:
                        curve_steps.append(t - 1)
                        curve.append(loss)
                if trace_first and t <= FIRST_STEPS:
                    before = [p.copy() for p in leaves]
                    first_loss.append(loss)
                if t > T - tail_n:
                    tail.append(loss)
                if detail and not det and full is None:
                    block.append(loss)
                opt.step(grads)
                if problem.project is not None:
                    problem.project(params)
                if trace_first and t <= FIRST_STEPS:
                    sq = sum(float(np.sum((p - b) ** 2)) for p, b in zip(leaves, before))
                    n = sum(p.size for p in leaves)
                    first_upd.append(math.sqrt(sq / n))
                if snap and t not in ckpts:
                    snaps.append((t, [p.copy() for p in leaves]))
                if t in ckpts:
                    if full is not None:
                        v = float(full(params))
                        if not math.isfinite(v):
                            raise FloatingPointError(f"objective {v} after step {t}")
                        curve_steps.append(t)
                        curve.append(v)
                        if target is not None and hit is None and v <= target:
                            hit = t
                            for s_, copies in snaps:  # the first step in between that reached it
                                if float(full(treedef.unflatten(copies))) <= target:
                                    hit = s_
                                    break
                            snap = False
                        snaps = []
                    elif not det:
                        curve_steps.append(t)
                        curve.append(float(np.mean(block)))
                        block = []
                if t in eff_at:
                    e = effective_steps(opt, method, float(lr_at(t - 1)))
                    if e is not None:
                        eff_steps.append(t)
                        live = e[~np.isnan(e)]
                        eff_med.append(float(np.median(live)) if live.size else math.nan)
                        if keep_coords and e.size <= 64:
                            eff_coords.append(e.tolist())
            rec["steps_done"] = T
            if full is not None:
                final = float(full(params))
            elif det:
                final = float(problem.call(params, rng, T + 1)[0])
                if detail:
                    curve_steps.append(T)
                    curve.append(final)
                    if target is not None and hit is None and final <= target:
                        hit = T
            else:
                final = float(np.mean(tail))
                if detail and target is not None:
                    hit = next((s for s, v in zip(curve_steps, curve) if v <= target), None)
            if not math.isfinite(final) or abs(final) > (limit or math.inf):
                raise FloatingPointError(f"final loss {final}")
            metrics = {}
            if problem.evaluate is not None:  # a run whose evaluation fails is a failed run, loss and all
                for k, v in problem.evaluate(params).items():
                    metrics[k] = float(v)
                    if not math.isfinite(metrics[k]):
                        raise FloatingPointError(f"metric {k!r} = {metrics[k]}")
            rec["final_loss"], rec["metrics"] = final, metrics
    except (FloatingPointError, OverflowError, ZeroDivisionError) as exc:
        rec.update(status="diverged", steps_done=max(t - 1, 0), message=str(exc))
    except Exception as exc:  # a bad run is a recorded failure, never a crash
        rec.update(status="error", steps_done=max(t - 1, 0), message=f"{type(exc).__name__}: {exc}")
    if detail:
        rec.update(curve_steps=curve_steps, curve=curve, evals_to_target=hit,
                   eff_steps=eff_steps, eff_median=eff_med)
        if eff_coords:
            rec["eff_coords"] = eff_coords
    if trace_first:
        rec.update(first_update_rms=first_upd, first_loss=first_loss)
    rec["seconds"] = round(time.perf_counter() - t_start, 4)
    return rec


# --------------------------------------------------------------------------------------------------
# Running many runs over processes.

_WORK: dict[str, Any] = {}


def _worker_init() -> None:
    _WORK["threads"] = _one_thread()
    _WORK["threads"].__enter__()  # for the life of the worker


@contextmanager
def _one_thread() -> Iterator[None]:
    """One BLAS and one Numba thread while comparing (the work is many small runs, spread over
    processes); the previous settings are restored afterwards."""
    stack = ExitStack()
    previous = None
    try:
        from threadpoolctl import threadpool_limits

        stack.enter_context(threadpool_limits(1))
    except Exception:  # pragma: no cover - threadpoolctl ships with scikit-learn
        pass
    try:
        import numba

        previous = numba.get_num_threads()
        numba.set_num_threads(1)
    except Exception:  # pragma: no cover
        previous = None
    try:
        yield
    finally:
        stack.close()
        if previous is not None:
            import numba

            numba.set_num_threads(previous)


def _task(job: tuple[int, int, float, int, bool]) -> tuple[tuple, dict]:
    pi, mi, lr, seed, detail = job
    return job, run_one(_WORK["problems"][pi], _WORK["methods"][mi], lr, seed, detail)


class _Runner:
    """Runs jobs in this process (``jobs=1``) or in a pool of forked processes."""

    def __init__(self, problems: list[Problem], methods: list[Method], jobs: int):
        _WORK["problems"], _WORK["methods"] = problems, methods
        self.bar: Any = None
        self.pool = fork_pool(jobs, _worker_init) if jobs > 1 else None

    def run(self, jobs: list[tuple]) -> dict[tuple, dict]:
        out = {}
        if self.pool is None:
            for job in jobs:
                key, rec = _task(job)
                out[key] = rec
                self.bar.update(1)
        else:
            for key, rec in self.pool.imap_unordered(_task, jobs, chunksize=1):
                out[key] = rec
                self.bar.update(1)
        return out

    def close(self, failed: bool = False) -> None:
        if self.pool is not None:
            if failed:  # e.g. Ctrl-C: stop the workers now rather than let them finish their runs
                self.pool.terminate()
            else:
                self.pool.close()
            self.pool.join()


def fork_pool(n: int, initializer: Any = None) -> Any:
    """A pool of ``n`` forked processes that ignore Ctrl-C (the parent handles it and terminates
    them), or None where processes cannot be forked (the caller then works in-process)."""
    import signal
    import threading

    try:
        ctx = mp.get_context("fork")
    except ValueError:  # pragma: no cover - no fork on this platform
        warnings.warn("adamkit: worker processes need the 'fork' start method; working in one process")
        return None
    main = threading.current_thread() is threading.main_thread()
    # the workers are born ignoring Ctrl-C: no window before an initializer could run
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        return ctx.Pool(n, initializer=initializer)
    finally:
        if handler is not None:
            signal.signal(signal.SIGINT, handler)


def default_jobs() -> int:
    """The number of cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


# --------------------------------------------------------------------------------------------------
# compare


def _as_problems(problems: Any, quick: bool) -> list[Problem]:
    if problems is None:
        return _builtin_problems(quick=quick)
    if isinstance(problems, (str, Problem)):
        problems = [problems]
    out = []
    for p in problems:
        if isinstance(p, str):
            if p not in PROBLEMS:
                raise ValueError(f"problems: unknown problem {p!r}; expected a Problem or one of {', '.join(PROBLEMS)}")
            out.append(PROBLEMS[p](quick=quick))
        elif isinstance(p, Problem):
            out.append(p)
        else:
            raise TypeError(f"problems: expected Problem objects or built-in names, got {p!r}")
    names = [p.name for p in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"problems: duplicate problem name(s) {dup}; each problem needs its own name")
    if not out:
        raise ValueError("problems: expected at least one problem")
    return out


def _as_seeds(seeds: Any) -> list[int]:
    if isinstance(seeds, (bool, str, bytes)):
        raise TypeError(f"seeds={seeds!r}: expected a number of seeds (>= 1) or a list of integer seeds")
    if isinstance(seeds, (int, np.integer)):
        if seeds < 1:
            raise ValueError(f"seeds={seeds!r}: expected a number of seeds >= 1 (the protocol asks for >= 3)")
        return list(range(int(seeds)))
    try:
        out = [int(s) for s in seeds if not isinstance(s, bool) and float(s) == int(s)]
    except (TypeError, ValueError):
        raise TypeError(f"seeds={seeds!r}: expected a number of seeds or a list of integer seeds") from None
    if len(out) != len(list(seeds)) or not out:
        raise ValueError(f"seeds={seeds!r}: expected a non-empty list of integer seeds")
    if len(set(out)) != len(out) or min(out) < 0:
        raise ValueError(f"seeds={seeds!r}: expected distinct integer seeds >= 0")
    return out


def _grid_for(problem: Problem, lrs: Any, quick: bool) -> tuple[float, ...]:
    if lrs is None:
        grid = problem.lrs if problem.lrs is not None else _default_lrs()
        return tuple(grid[::2]) if quick and len(grid) > 4 else tuple(grid)
    if isinstance(lrs, Mapping):
        return _grid_for(problem, lrs.get(problem.name), quick)
    return check_lrs(lrs, "lrs")


def _default_lrs() -> tuple[float, ...]:
    from ._problems import DEFAULT_LRS

    return DEFAULT_LRS


def compare(problems: Any = None, optimizers: Sequence[Any] | None = None, lrs: Any = None,
            seeds: int | Sequence[int] = 3, *, tune_seeds: int | None = None, jobs: int | None = None,
            variants: bool = True, factor: float = 2.0, quick: bool = False,
            progress: bool = True) -> "Results":
    """Compare optimizers on problems under the DeepOBS protocol (see the module docstring).

    Args:
        problems: :class:`Problem` objects or built-in names (``adamkit.PROBLEMS``); None: all built-ins.
        optimizers: names (``adamkit._compare.compare_methods()``, listed by ``adamkit compare --help``), call-like strings such as
            ``"adam(betas=(0.9, 0.9999))"``, or :class:`Method` objects; None: SGD, SGD with momentum,
            AdaGrad, RMSProp and Adam.
        lrs: one learning-rate grid for every problem, a mapping problem name -> grid, or None for each
            problem's own grid. Every optimizer gets the same grid on a problem.
        seeds: how many seeds (0, 1, ...) the chosen setting is reported over, or a list of seeds.
        tune_seeds: how many of the seeds select the learning rate by median final loss (default 3, or
            fewer if fewer seeds are given; fewer than 3 departs from the protocol and is flagged).
        jobs: worker processes (default: the usable cores); the results do not depend on it.
        variants: also run each problem's own extra configurations (e.g. Adam without bias correction
            on the bias-correction problem, AMSGrad on the online problem).
        factor: tuneability counts learning rates whose loss (excess over the problem's floor, if
            known) is within ``factor`` times the best, or that reach the target.
        quick: build named built-ins with their quick budgets and use every other point of their grids.
        progress: show a progress bar on stderr.

    Returns:
        :class:`Results`, with ``table()``, ``plot(dir)``, ``to_json(path)``, ``claims()`` and ``report(dir)``.

    Example, a problem of one's own::

        import adamkit as ak

        def init(rng):                      # the starting point, from the run's generator
            return rng.standard_normal(5)

        def loss_and_grad(x, rng):          # f(x) = |x|^2
            return float(x @ x), 2 * x

        sphere = ak.Problem("sphere", init, loss_and_grad, steps=200, floor=0.0, target=1e-6)
        res = ak.compare([sphere], ["sgd", "momentum", "adam"], lrs=[1e-3, 1e-2, 1e-1, 1.0])
        print(res.table())
        res.report("sphere-report")         # figures, tables, results.json, report.md, report.html
    """
    t0 = time.perf_counter()
    probs = _as_problems(problems, quick)
    if optimizers is None:
        optimizers = DEFAULT_METHODS
    if isinstance(optimizers, (str, Method)):
        optimizers = [optimizers]
    methods = [parse_method(o) for o in optimizers]
    if not methods:
        raise ValueError("optimizers: expected at least one optimizer")
    labels = [m.label for m in methods]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ValueError(f"optimizers: duplicate label(s) {dup}")
    seed_list = _as_seeds(seeds)
    if tune_seeds is None:
        tune_seeds = min(3, len(seed_list))
    if isinstance(tune_seeds, bool) or not isinstance(tune_seeds, (int, np.integer)) or not 1 <= tune_seeds <= len(seed_list):
        raise ValueError(f"tune_seeds={tune_seeds!r}: expected an integer from 1 to the number of seeds ({len(seed_list)})")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 1.0 < factor < math.inf:
        raise ValueError(f"factor={factor!r}: expected a number > 1")
    if jobs is None:
        jobs = default_jobs()
    if isinstance(jobs, bool) or not isinstance(jobs, (int, np.integer)) or jobs < 1:
        raise ValueError(f"jobs={jobs!r}: expected an integer >= 1")
    if isinstance(lrs, Mapping):
        unknown = sorted(set(lrs) - {p.name for p in probs})
        if unknown:
            raise ValueError(f"lrs: grid given for unknown problem(s) {unknown}; problems are {[p.name for p in probs]}")
    grids = {p.name: _grid_for(p, lrs, quick) for p in probs}

    # The methods run on each problem: the compared ones, then the problem's variants.
    all_methods: list[Method] = list(methods)
    per_problem: dict[str, list[int]] = {}
    for p in probs:
        idx = list(range(len(methods)))
        if variants:
            for v in p.variants:
                m = parse_method(v)
                same = [i for i, x in enumerate(all_methods) if x.label == m.label]
                if same:
                    if all_methods[same[0]] != m:
                        raise ValueError(f"problem {p.name!r}: its variant {m.label!r} clashes with another "
                                         f"optimizer of that label; rename one of them")
                    if same[0] not in idx:
                        idx.append(same[0])
                    continue
                all_methods.append(m)
                idx.append(len(all_methods) - 1)
        per_problem[p.name] = idx

    threads = _one_thread()
    threads.__enter__()
    try:
        grad_cost = {}  # measured, to start the long runs first; it never changes a result
        for p in probs:
            grad_cost[p.name] = _dry_check(p, [all_methods[i] for i in per_problem[p.name]])

        tseeds = seed_list[:tune_seeds]
        tuning_jobs = [(pi, mi, lr, s, False) for pi, p in enumerate(probs) for mi in per_problem[p.name]
                       for lr in grids[p.name] for s in tseeds]
        # the most expensive first, so that the processes finish together
        tuning_jobs.sort(key=lambda j: -grad_cost[probs[j[0]].name] * probs[j[0]].steps)
        n_final = sum(len(per_problem[p.name]) for p in probs) * len(seed_list)

        from tqdm import tqdm

        class _Bar(tqdm):
            monitor_interval = 0  # no monitor thread: the worker processes are forked

        jobs = min(jobs, max(1, len(tuning_jobs), n_final))  # no more processes than runs to share
        if jobs > default_jobs():
            warnings.warn(f"compare: jobs={jobs} processes on {default_jobs()} usable core(s); the runs are "
                          f"CPU-bound, so more processes than cores only slow them down", RuntimeWarning,
                          stacklevel=2)
        runner = _Runner(probs, all_methods, jobs)
        failed = True
        bar = None
        try:
            bar = runner.bar = _Bar(total=len(tuning_jobs) + n_final, desc="adamkit compare", unit="run",
                                    disable=not progress, file=sys.stderr, dynamic_ncols=True, leave=False)
            tuned = runner.run(tuning_jobs)
            tuning = [tuned[j] for j in sorted(tuned, key=lambda j: (j[0], per_problem[probs[j[0]].name].index(j[1]), j[2], j[3]))]
            chosen = _select_all(tuning, [p.name for p in probs], {p.name: [all_methods[i].label for i in per_problem[p.name]] for p in probs})
            final_jobs = []
            for pi, p in enumerate(probs):
                for mi in per_problem[p.name]:
                    lr = chosen.get((p.name, all_methods[mi].label))
                    if lr is not None:
                        final_jobs += [(pi, mi, lr, s, True) for s in seed_list]
            bar.total = len(tuning_jobs) + len(final_jobs)
            bar.refresh()
            final_jobs.sort(key=lambda j: -grad_cost[probs[j[0]].name] * probs[j[0]].steps)
            finals = runner.run(final_jobs)
            failed = False
        finally:
            runner.close(failed)
            if bar is not None:
                bar.close()
        final = [finals[j] for j in sorted(finals, key=lambda j: (j[0], per_problem[probs[j[0]].name].index(j[1]), j[3]))]
    finally:
        threads.__exit__(None, None, None)
        _WORK.clear()

    notes = []
    if tune_seeds < 3:
        notes.append(f"the learning rate was chosen over {tune_seeds} seed(s); the DeepOBS protocol asks for at least 3")
    settings = {
        "format": RESULTS_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seeds": seed_list, "tune_seeds": tseeds, "factor": float(factor), "jobs": int(jobs),
        "quick": bool(quick), "variants": bool(variants), "divergence_factor": DIVERGENCE_FACTOR,
        "elapsed_seconds": round(time.perf_counter() - t0, 2),
        "cpu_count": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
        "platform": platform.platform(), "notes": notes,
    }
    from . import __version__

    settings["adamkit"] = __version__
    meta = [_problem_meta(p, grids[p.name], [all_methods[i].label for i in per_problem[p.name]]) for p in probs]
    for m, p in zip(meta, probs):
        m["initial_loss"] = _initial_losses(p, seed_list)
    res = Results(settings, meta, {m.label: m.to_dict() for m in all_methods}, tuning, final)
    unrepro = [f"{r['problem']}/{r['method']}" for r in res.summary() if r.get("reproduced") is False]
    if unrepro:
        msg = (f"for {', '.join(unrepro)}, rerunning a tuning seed did not reproduce its tuning run: the problem "
               f"draws randomness other than from the rng it is given, so these results are not reproducible")
        settings["notes"].append(msg)
        warnings.warn("compare: " + msg, RuntimeWarning, stacklevel=2)
    bad = [r for r in res.tuning + res.final if r["status"] == "error"]
    if bad:
        warnings.warn(f"compare: {len(bad)} run(s) raised an error (not a divergence), e.g. "
                      f"{bad[0]['problem']}/{bad[0]['method']} lr={bad[0]['lr']:g} seed {bad[0]['seed']}: "
                      f"{bad[0]['message']}", RuntimeWarning, stacklevel=2)
    return res


def _dry_check(p: Problem, methods: list[Method]) -> float:
    """Build the problem and every optimizer once, so configuration errors stop before the work starts.

    Returns the measured seconds of a gradient evaluation (to schedule long runs first). This also
    compiles the optimizers' kernels once, before the worker processes are forked.
    """
    rng = _rng(0, p.name)
    try:
        params = p.init(rng)
        p.call(params, rng, 1)
        t = time.perf_counter()
        loss, grads = p.call(params, rng, 2)
        cost = time.perf_counter() - t
        float(loss)
        if p.full_loss is not None:
            float(p.full_loss(params))
    except Exception as exc:
        raise ValueError(f"problem {p.name!r}: init, loss_and_grad or full_loss failed on seed 0: "
                         f"{type(exc).__name__}: {exc}") from exc
    leaves, names, _ = _tree.flatten(params, prefix="init(rng)")
    for name, x in zip(names, leaves):  # the optimizers update these arrays in place
        if not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64):
            raise ValueError(f"problem {p.name!r}: {name} is {_tree._describe(x)}"
                             f"{f' of dtype {x.dtype}' if isinstance(x, np.ndarray) else ''}; expected float32 or "
                             f"float64 arrays (the parameters are updated in place)")
    if p.schedule is not None:
        sched = p.schedule(1e-3)
        if not callable(sched):
            raise ValueError(f"problem {p.name!r}: schedule(lr) returned {sched!r}; expected a callable of the step "
                             f"count")
    for m in methods:
        copy = _copy_tree(params)
        try:
            opt = m.build(copy, 1e-12)
            with np.errstate(all="ignore"):
                opt.step(_copy_tree(grads))
        except FloatingPointError:
            pass
        except (TypeError, ValueError) as exc:
            raise ValueError(f"problem {p.name!r} with optimizer {m.label!r}: {exc}") from exc
    return cost


def _initial_losses(p: Problem, seeds: list[int]) -> dict[str, float | None]:
    """The objective at the starting point of each seed (None for a stochastic problem without full_loss)."""
    out: dict[str, float | None] = {}
    for s in seeds:
        try:
            with np.errstate(all="ignore"):
                v = p.objective(p.init(_rng(s, p.name)))
        except Exception:
            v = None
        out[str(s)] = v if v is not None and math.isfinite(v) else None
    return out


def _copy_tree(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _copy_tree(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_copy_tree(v) for v in x)
    return np.array(x, copy=True)


def _problem_meta(p: Problem, grid: Sequence[float], methods: list[str]) -> dict:
    sched = None
    if p.schedule is not None:
        sched = getattr(p.schedule, "__name__", repr(p.schedule))
    return {"name": p.name, "description": p.description, "steps": p.steps, "target": p.target,
            "floor": p.floor, "stochastic": p.stochastic, "online": p.online, "schedule": sched,
            "lrs": list(grid), "methods": methods, "variants": [v.label for v in p.variants],
            "trace": p.trace, "has_full_loss": p.full_loss is not None, "info": _jsonable(p.info),
            # the claims' experiments are defined on adamkit's own problems, not on a user's of the same name
            "builtin": getattr(p.loss_and_grad, "__module__", None) == "adamkit._problems"}


def _loss_key(x: Any) -> float:
    return math.inf if x is None else float(x)


def _select_all(tuning: list[dict], names: list[str], methods: dict[str, list[str]]) -> dict[tuple, float | None]:
    out = {}
    for name in names:
        for label in methods[name]:
            rows = [r for r in tuning if r["problem"] == name and r["method"] == label]
            out[(name, label)] = select_lr(rows)["chosen"]
    return out


def select_lr(rows: list[dict]) -> dict[str, Any]:
    """Selection by median: for each learning rate the median final loss over seeds (a failure counts as
    infinite); the chosen rate has the smallest median (ties: smaller mean over finite runs, then the
    smaller rate). ``chosen`` is None when every rate failed on at least half of the seeds.
    """
    by_lr: dict[float, list[float]] = {}
    for r in rows:
        by_lr.setdefault(float(r["lr"]), []).append(_loss_key(r["final_loss"]))
    table = []
    for lr in sorted(by_lr):
        vals = by_lr[lr]
        finite = [v for v in vals if math.isfinite(v)]
        table.append({"lr": lr, "median": float(np.median(vals)) if vals else math.inf,
                      "min": min(vals), "max": max(vals), "n": len(vals), "failed": len(vals) - len(finite),
                      "mean_finite": float(np.mean(finite)) if finite else math.inf})
    ok = [row for row in table if math.isfinite(row["median"])]
    chosen = min(ok, key=lambda row: (row["median"], row["mean_finite"], row["lr"]))["lr"] if ok else None
    return {"chosen": chosen, "grid": table}


def good_range(grid: list[dict], best: float, factor: float, floor: float | None,
               target: float | None, reference: float | None = None) -> dict[str, Any]:
    """The contiguous learning rates around ``best`` (a rate of ``grid``) whose median loss is good.

    Good: the excess over ``floor`` (0 if unknown) is at most ``factor`` times the excess of
    ``reference`` (the best loss on the problem; default: this grid's best), or the loss is at most
    ``target``. An excess below ``1e-12`` of the loss scale counts as 0 (rounding).

    Returns ``width`` in decades (log10 of the largest over the smallest good rate; None when ``best``
    itself is not good), the bounds, how many rates, and whether the range touches an end of the grid
    (then the true width may be larger).
    """
    base = 0.0 if floor is None else floor
    lrs = [row["lr"] for row in grid]
    med = [row["median"] for row in grid]
    i = lrs.index(best)
    ref = med[i] if reference is None else min(reference, med[i])
    scale = max([1.0, abs(base)] + [abs(v) for v in med if math.isfinite(v)])
    ref_excess = max(ref - base, 1e-12 * scale)

    def good(v):
        if not math.isfinite(v):
            return False
        return (v - base) <= factor * ref_excess or (target is not None and v <= target)

    if not good(med[i]):
        return {"width": None, "lo": None, "hi": None, "at_edge": False, "count": 0}
    lo = hi = i
    while lo > 0 and good(med[lo - 1]):
        lo -= 1
    while hi < len(lrs) - 1 and good(med[hi + 1]):
        hi += 1
    return {"width": math.log10(lrs[hi] / lrs[lo]), "lo": lrs[lo], "hi": lrs[hi],
            "at_edge": (lo == 0 or hi == len(lrs) - 1) and len(lrs) > 1, "count": hi - lo + 1}


# --------------------------------------------------------------------------------------------------
# Results


def _jsonable(x: Any) -> Any:
    """Plain JSON data: tuples to lists, numpy scalars to Python, non-finite floats to None."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


class Results:
    """What :func:`compare` measured. Everything below is computed from the stored runs, so a result
    loaded with :meth:`from_json` gives the same table, plots and claims.

    Attributes:
        settings: seeds, tuning seeds, factor, jobs, elapsed time, versions.
        problems: one dict per problem (name, steps, target, floor, grid, methods run, ...).
        methods: label -> optimizer and options.
        tuning: the tuning runs (one per problem, method, learning rate and tuning seed).
        final: the reruns of each chosen setting on every seed, with loss curves.
    """

    def __init__(self, settings: dict, problems: list[dict], methods: dict, tuning: list[dict], final: list[dict]):
        self.settings = settings
        self.problems = problems
        self.methods = methods
        self.tuning = tuning
        self.final = final
        self._summary: list[dict] | None = None

    def __repr__(self) -> str:
        return (f"Results({len(self.problems)} problems, {len(self.methods)} optimizers, "
                f"{len(self.tuning)} tuning runs, {len(self.final)} final runs, "
                f"{self.settings.get('elapsed_seconds', 0):.1f} s)")

    # ---- access -------------------------------------------------------------------------------------

    def problem(self, name: str) -> dict:
        for p in self.problems:
            if p["name"] == name:
                return p
        raise KeyError(f"problem {name!r} is not in these results; they hold {[p['name'] for p in self.problems]}")

    def has(self, problem: str, *methods: str) -> bool:
        """True when the built-in ``problem`` was run with every one of ``methods``."""
        try:
            p = self.problem(problem)
        except KeyError:
            return False
        return p.get("builtin", True) and all(m in p["methods"] for m in methods)

    def runs(self, problem: str, method: str, final: bool = False) -> list[dict]:
        src = self.final if final else self.tuning
        return [r for r in src if r["problem"] == problem and r["method"] == method]

    def selection(self, problem: str, method: str) -> dict[str, Any]:
        """The learning-rate selection: per-rate median / min / max over the tuning seeds, and the choice."""
        return select_lr(self.runs(problem, method))

    def row(self, problem: str, method: str) -> dict[str, Any]:
        for r in self.summary():
            if r["problem"] == problem and r["method"] == method:
                return r
        raise KeyError(f"no result for problem {problem!r} and optimizer {method!r}")

    def summary(self) -> list[dict[str, Any]]:
        """One row per problem and optimizer: chosen lr, final loss over seeds, metrics, speed,
        tuneability and failures."""
        if self._summary is not None:
            return self._summary
        rows = []
        factor = self.settings["factor"]
        tune = set(self.settings["tune_seeds"])
        for p in self.problems:
            # the best median final loss any optimizer reached on this problem: tuneability's yardstick
            sels = {label: self.selection(p["name"], label) for label in p["methods"]}
            best = min((row["median"] for sel in sels.values() for row in sel["grid"]), default=math.inf)
            for label in p["methods"]:
                sel = sels[label]
                tr = self.runs(p["name"], label)
                fr = self.runs(p["name"], label, final=True)
                row: dict[str, Any] = {"problem": p["name"], "method": label, "lr": sel["chosen"],
                                       "tuning_runs": len(tr), "tuning_failures": sum(r["status"] != "ok" for r in tr),
                                       "seeds": len(fr)}
                if sel["chosen"] is None:
                    row.update(final_mean=None, final_sd=None, final_median=None, final_min=None, final_max=None,
                               final_failures=0, metrics={}, evals_median=None, reached=0, width=None,
                               width_at_edge=False, lr_at_edge=False, reproduced=None)
                    rows.append(row)
                    continue
                losses = [_loss_key(r["final_loss"]) for r in fr]
                finite = [v for v in losses if math.isfinite(v)]
                row["final_failures"] = len(losses) - len(finite)
                row["final_mean"] = float(np.mean(finite)) if finite else None
                row["final_sd"] = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0 if finite else None
                row["final_median"] = float(np.median(losses)) if losses else None
                row["final_min"] = min(finite) if finite else None
                row["final_max"] = max(finite) if finite else None
                mets: dict[str, list[float]] = {}
                for r in fr:
                    for k, v in r["metrics"].items():
                        if v is not None:
                            mets.setdefault(k, []).append(v)
                row["metrics"] = {k: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}
                                  for k, v in mets.items()}
                hits = [r.get("evals_to_target") for r in fr if r["status"] == "ok"]
                reached = [h for h in hits if h is not None]
                row["reached"] = len(reached)
                row["evals_median"] = float(np.median([h if h is not None else math.inf for h in hits])) if hits else None
                if row["evals_median"] is not None and not math.isfinite(row["evals_median"]):
                    row["evals_median"] = None
                g = good_range(sel["grid"], sel["chosen"], factor, p["floor"], p["target"], reference=best)
                row["width"] = g["width"]
                row["width_at_edge"] = g["at_edge"]
                row["good_lo"], row["good_hi"] = g["lo"], g["hi"]
                grid = p["lrs"]
                row["lr_at_edge"] = len(grid) > 1 and sel["chosen"] in (grid[0], grid[-1])
                # a rerun of a tuning seed must reproduce the tuning run exactly
                tmap = {r["seed"]: r["final_loss"] for r in tr if r["lr"] == sel["chosen"]}
                checks = [tmap[r["seed"]] == r["final_loss"] for r in fr if r["seed"] in tune and r["seed"] in tmap]
                row["reproduced"] = all(checks) if checks else None
                rows.append(row)
        self._summary = rows
        return rows

    def failures(self) -> list[dict]:
        """Every run that diverged or raised, tuning and final."""
        return [r for r in self.tuning + self.final if r["status"] != "ok"]

    # ---- output -------------------------------------------------------------------------------------

    def table(self, fmt: str = "text") -> str:
        """The results table: ``fmt`` is ``"text"`` (aligned columns) or ``"markdown"``."""
        from ._report import results_table

        if fmt not in ("text", "markdown"):
            raise ValueError(f"fmt={fmt!r}: expected 'text' or 'markdown'")
        return results_table(self, fmt)

    def plot(self, directory: str | Path, jobs: int | None = None) -> list[Path]:
        """Write the PNG figures into ``directory`` (created if needed), drawn by ``jobs`` processes
        (default: the usable cores); returns their paths."""
        from ._report import plot_all

        return plot_all(self, Path(directory), jobs)

    def claims(self) -> list[Any]:
        """The seed notes' eight claims, each with its experiment, numbers and verdict (see ``_report``)."""
        from ._report import evaluate_claims

        return evaluate_claims(self)

    def report(self, directory: str | Path, jobs: int | None = None) -> Path:
        """Write the whole report into ``directory``: plots, ``table.txt``, ``table.md``,
        ``results.json``, ``claims.json``, ``report.md`` and a self-contained ``report.html``.
        Returns the path of ``report.html``."""
        from ._report import write_report

        return write_report(self, Path(directory), jobs)

    def to_dict(self) -> dict:
        return _jsonable({"settings": self.settings, "problems": self.problems, "methods": self.methods,
                          "tuning": self.tuning, "final": self.final, "summary": self.summary()})

    def to_json(self, path: str | Path) -> Path:
        """Write everything as standard JSON (non-finite numbers as null); read back with :meth:`from_json`."""
        path = Path(path)
        if path.parent != Path(""):
            path.parent.mkdir(parents=True, exist_ok=True)
        return write_atomic(path, json.dumps(self.to_dict(), allow_nan=False, separators=(",", ":")))

    @classmethod
    def from_json(cls, path: str | Path) -> "Results":
        """Load results written by :meth:`to_json`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"results file {str(path)!r} does not exist") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"results file {str(path)!r} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not {"settings", "problems", "methods", "tuning", "final"} <= set(data):
            raise ValueError(f"results file {str(path)!r} was not written by Results.to_json")
        fmt = data["settings"].get("format")
        if fmt != RESULTS_FORMAT:
            raise ValueError(f"results file {str(path)!r} has format {fmt!r}; this adamkit reads format {RESULTS_FORMAT}")
        res = cls(data["settings"], data["problems"], data["methods"], data["tuning"], data["final"])
        try:  # what a report reads, checked before one is drawn
            res.summary()
            res.claims()
            res.table()
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise ValueError(f"results file {str(path)!r} is incomplete or inconsistent "
                             f"({type(exc).__name__}: {exc})") from None
        return res


def load_results(path: str | Path) -> Results:
    """Load :class:`Results` written by ``Results.to_json`` (``results.json`` in a report directory)."""
    return Results.from_json(path)


def compare_methods() -> dict[str, str]:
    """The optimizer names ``compare`` accepts, with what each is."""
    return dict(METHOD_HELP)
