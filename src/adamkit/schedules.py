"""Learning-rate schedules: plain callables of the step count.

A schedule is called with ``count``, the number of steps already applied (0 on the first step), and
returns the learning rate for that step. Any callable ``f(count) -> float`` works as ``lr``; the
schedules here also describe themselves (``config()``), so optimizers save them with their state and
restore them on load::

    opt = ak.Adam(params, lr=ak.schedules.cosine(1e-2, total_steps=1000, warmup_steps=100))

``largest_stable_lr(hessian)`` gives the course notes' fixed step ``1/lambda_max`` for a quadratic.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

__all__ = [
    "Schedule",
    "constant",
    "step_decay",
    "exponential",
    "cosine",
    "inverse_sqrt",
    "inverse_time",
    "from_config",
    "largest_stable_lr",
]


def _check(name: str, value: Any, *, positive: bool = False, integer: bool = False, at_most_one: bool = False):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}={value!r}: expected a number")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name}={value!r}: expected a finite number {'> 0' if positive else '>= 0'}")
    if integer and value != int(value):
        raise ValueError(f"{name}={value!r}: expected an integer")
    if at_most_one and value > 1:
        raise ValueError(f"{name}={value!r}: expected a number in [0, 1]")
    return int(value) if integer else float(value)


class Schedule:
    """Base class: subclasses set ``kind`` and implement ``__call__(count)``; their ``params`` are saved."""

    kind = ""

    def __init__(self, **params: Any):
        self.params = params

    def __call__(self, count: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def config(self) -> dict:
        """A JSON-able description, restored by :func:`from_config`."""
        return {"schedule": self.kind, **self.params}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.kind}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash(repr(self))


class _Constant(Schedule):
    kind = "constant"

    def __call__(self, count: int) -> float:
        return self.params["lr"]


class _StepDecay(Schedule):
    kind = "step_decay"

    def __call__(self, count: int) -> float:
        p = self.params
        return p["lr"] * p["gamma"] ** (count // p["step_size"])


class _Exponential(Schedule):
    kind = "exponential"

    def __call__(self, count: int) -> float:
        return self.params["lr"] * self.params["gamma"] ** count


class _Cosine(Schedule):
    kind = "cosine"

    def __call__(self, count: int) -> float:
        p = self.params
        lr, total, warm, final = p["lr"], p["total_steps"], p["warmup_steps"], p["final_lr"]
        if count < warm:
            return lr * (count + 1) / warm
        progress = min(1.0, (count - warm) / max(1, total - warm))
        return final + 0.5 * (lr - final) * (1.0 + math.cos(math.pi * progress))


class _InverseSqrt(Schedule):
    kind = "inverse_sqrt"

    def __call__(self, count: int) -> float:
        return self.params["lr"] / math.sqrt(count + 1)


class _InverseTime(Schedule):
    kind = "inverse_time"

    def __call__(self, count: int) -> float:
        return self.params["t0"] / (count + self.params["t1"])


def constant(lr: float) -> Schedule:
    """``lr`` at every step."""
    return _Constant(lr=_check("lr", lr))


def step_decay(lr: float, step_size: int, gamma: float = 0.1) -> Schedule:
    """``lr * gamma ** (count // step_size)`` (torch's ``StepLR``, counted in steps)."""
    return _StepDecay(
        lr=_check("lr", lr),
        step_size=_check("step_size", step_size, positive=True, integer=True),
        gamma=_check("gamma", gamma, at_most_one=True),
    )


def exponential(lr: float, gamma: float) -> Schedule:
    """``lr * gamma ** count``."""
    return _Exponential(lr=_check("lr", lr), gamma=_check("gamma", gamma, at_most_one=True))


def cosine(lr: float, total_steps: int, warmup_steps: int = 0, final_lr: float = 0.0) -> Schedule:
    """Linear warm-up ``lr*(count+1)/warmup_steps``, then cosine decay from ``lr`` to ``final_lr``.

    After ``total_steps`` the rate stays at ``final_lr``.
    """
    total = _check("total_steps", total_steps, positive=True, integer=True)
    warm = _check("warmup_steps", warmup_steps, integer=True)
    if warm > total:
        raise ValueError(f"warmup_steps={warmup_steps!r}: expected at most total_steps={total}")
    return _Cosine(lr=_check("lr", lr), total_steps=total, warmup_steps=warm, final_lr=_check("final_lr", final_lr))


def inverse_sqrt(lr: float) -> Schedule:
    """``lr / sqrt(t)`` with ``t = count + 1`` (the step size of Kingma & Ba's convergence analysis)."""
    return _InverseSqrt(lr=_check("lr", lr))


def inverse_time(t0: float = 5.0, t1: float = 50.0) -> Schedule:
    """The course notes' ``t0 / (t + t1)`` with ``t = count``, e.g. ``t0=5, t1=50``."""
    return _InverseTime(t0=_check("t0", t0), t1=_check("t1", t1, positive=True))


_BUILDERS: dict[str, Callable[..., Schedule]] = {
    "constant": constant,
    "step_decay": step_decay,
    "exponential": exponential,
    "cosine": cosine,
    "inverse_sqrt": inverse_sqrt,
    "inverse_time": inverse_time,
}


def from_config(config: dict) -> Schedule:
    """Rebuild a schedule from :meth:`Schedule.config` output (validating it again)."""
    if not isinstance(config, dict) or config.get("schedule") not in _BUILDERS:
        raise ValueError(
            f"schedule config {config!r}: expected a dict with 'schedule' one of {sorted(_BUILDERS)}"
        )
    kwargs = {k: v for k, v in config.items() if k != "schedule"}
    try:
        return _BUILDERS[config["schedule"]](**kwargs)
    except TypeError as exc:
        raise ValueError(f"schedule config {config!r}: {exc}") from None


def largest_stable_lr(hessian: Any) -> float:
    """``1 / lambda_max`` of a symmetric positive semi-definite Hessian (the course notes' fixed step).

    Gradient descent on a quadratic diverges for ``lr > 2 / lambda_max``; ``1 / lambda_max`` is the
    notes' safe choice. For OLS with design matrix ``X`` (n rows), the Hessian is ``2/n * X.T @ X``.
    """
    h = np.asarray(hessian, dtype=float)
    if h.ndim != 2 or h.shape[0] != h.shape[1] or h.size == 0:
        raise ValueError(f"hessian: expected a square 2-D matrix, got shape {h.shape}")
    if not np.all(np.isfinite(h)):
        raise ValueError("hessian: expected finite entries")
    if not np.allclose(h, h.T, rtol=1e-10, atol=1e-12 * max(1.0, float(np.abs(h).max()))):
        raise ValueError("hessian: expected a symmetric matrix")
    lam = float(np.linalg.eigvalsh(h)[-1])
    if lam <= 0:
        raise ValueError(f"hessian: largest eigenvalue is {lam!r}; expected a positive one")
    return 1.0 / lam
