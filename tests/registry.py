"""One registry describing every optimizer, for the registry-driven tests (torch's ``OptimizerInfo`` is the model).

An entry gives the class, several configurations (keyword arguments besides ``lr``), the error cases
(keyword arguments, exception type, regex of the message), the state slots a configuration must have,
an independent scalar implementation of the update written from ``../shared/CONVENTIONS.md`` (the
"hand" rule, one coordinate at a time in Python floats, deliberately not shaped like the library's
code), and learning rates that make it converge on a parabola and on Rosenbrock.

Adding an optimizer = adding one ``OptimizerInfo`` to ``REGISTRY``; every test in ``test_*.py`` that is
parametrized over the registry then covers it. (``test_properties.py`` also insists on two steps of every
optimizer computed by hand, as literal values: add one there too.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

import adamkit as ak

DTYPES = (np.float32, np.float64)


@dataclass(frozen=True)
class ErrorCase:
    """Constructing the optimizer with ``kwargs`` raises ``exc`` whose message matches ``match``."""

    kwargs: dict
    exc: type
    match: str

    @property
    def id(self) -> str:
        return ",".join(f"{k}={v!r}" for k, v in self.kwargs.items())


@dataclass(frozen=True)
class Rosenbrock:
    """A setting that reaches the minimum (1, 1) of Rosenbrock from (-1, 1) within ``tol``."""

    lr: float
    kwargs: dict = field(default_factory=dict)
    steps: int = 2000
    tol: float = 1e-2


@dataclass(frozen=True)
class OptimizerInfo:
    cls: type
    #: keyword arguments (besides lr) of the configurations every check runs on
    configs: tuple
    #: the error cases specific to this optimizer (the common ones are added by ``errors``)
    own_errors: tuple
    #: the names of the state slots a configuration (all hyperparameters) must have
    slots: Callable[[dict], set]
    #: ``rule(p, g, s, hp, t) -> new p``: one coordinate, Python floats, state ``s`` a dict of floats
    rule: Callable[[float, float, dict, dict, int], float]
    #: a learning rate that reaches the minimum of ``parabola`` in ``PARABOLA_STEPS`` steps
    parabola_lr: float
    rosenbrock: Rosenbrock

    @property
    def name(self) -> str:
        return self.cls.__name__

    @property
    def errors(self) -> tuple:
        return common_errors(self.cls) + self.own_errors

    def hyperparameters(self, kwargs: dict, lr: float | None = None) -> dict:
        """Every hyperparameter of a configuration: the class defaults, ``kwargs``, the fixed ones."""
        hp = {**self.cls.defaults, **kwargs, **self.cls.fixed}
        if lr is not None:
            hp["lr"] = lr
        return hp

    def decoupled(self, kwargs: dict) -> bool:
        hp = self.hyperparameters(kwargs)
        return bool(hp.get("decoupled_weight_decay", False)) and hp["weight_decay"] != 0


# --------------------------------------------------------------------------------------------------
# Error cases shared by every optimizer (each class's arguments decide which apply).


def common_errors(cls: type) -> tuple:
    d = cls.defaults
    out = [
        ErrorCase({"lr": -1e-3}, ValueError, r"^lr=-0\.001: expected a finite number in \[0\.0, inf\]$"),
        ErrorCase({"lr": float("nan")}, ValueError, r"^lr=nan: expected a finite number"),
        ErrorCase({"lr": float("inf")}, ValueError, r"^lr=inf: expected a finite number"),
        ErrorCase({"lr": "0.1"}, TypeError, r"^lr='0\.1': expected a real number$"),
        ErrorCase({"weight_decay": -0.5}, ValueError, r"^weight_decay=-0\.5: expected a finite number in \[0\.0, inf\]"),
        ErrorCase({"weight_decay": None}, TypeError, r"^weight_decay=None: expected a real number"),
        ErrorCase({"maximize": 1}, TypeError, r"^maximize=1: expected True or False$"),
        ErrorCase({"nonfinite": "warn"}, ValueError, r"^nonfinite='warn': expected one of 'raise', 'skip', 'ignore'$"),
    ]
    if "eps" in d:
        out.append(ErrorCase({"eps": -1e-8}, ValueError, r"^eps=-1e-08: expected a finite number in \(0\.0, inf\]"))
        out.append(ErrorCase({"eps": 0.0}, ValueError, r"^eps=0\.0: expected a finite number in \(0\.0, inf\] "
                                                        r"\(with eps = 0, a coordinate whose gradients were all 0"))
    if "betas" in d:
        out += [
            ErrorCase({"betas": (1.0, 0.999)}, ValueError, r"^betas\[0\]=1\.0: expected a finite number in \[0\.0, 1\.0\)$"),
            ErrorCase({"betas": (-0.1, 0.999)}, ValueError, r"^betas\[0\]=-0\.1: expected a finite number in \[0\.0, 1\.0\)$"),
            ErrorCase({"betas": (0.9, 1.0)}, ValueError, r"^betas\[1\]=1\.0: expected a finite number in \[0\.0, 1\.0\)$"),
            ErrorCase({"betas": (0.9, 1.5)}, ValueError, r"^betas\[1\]=1\.5: expected"),
            ErrorCase({"betas": (0.9,)}, ValueError, r"^betas=\(0\.9,\): expected a pair \(beta1, beta2\), each in \[0, 1\)$"),
            ErrorCase({"betas": 0.9}, ValueError, r"^betas=0\.9: expected a pair"),
        ]
    if "decoupled_weight_decay" in d:
        out.append(ErrorCase({"decoupled_weight_decay": "yes"}, TypeError,
                             r"^decoupled_weight_decay='yes': expected True or False$"))
    return tuple(out)


# --------------------------------------------------------------------------------------------------
# The hand rules: one coordinate, Python floats, straight from the formulas in CONVENTIONS.md.


def _prepare(p: float, g: float, hp: dict) -> tuple[float, float]:
    """maximize negates g; coupled weight decay adds wd*p to g; decoupled multiplies p by 1 - lr*wd."""
    if hp["maximize"]:
        g = -g
    wd = hp["weight_decay"]
    if wd:
        if hp.get("decoupled_weight_decay", False):
            p = p * (1.0 - hp["lr"] * wd)
        else:
            g = g + wd * p
    return p, g


def sgd_rule(p, g, s, hp, t):
    p, g = _prepare(p, g, hp)
    mu = hp["momentum"]
    if mu:
        s["buf"] = g if t == 1 else mu * s["buf"] + (1.0 - hp["dampening"]) * g
        d = g + mu * s["buf"] if hp["nesterov"] else s["buf"]
    else:
        d = g
    return p - hp["lr"] * d


def adagrad_rule(p, g, s, hp, t):
    p, g = _prepare(p, g, hp)
    s["sum"] = s.get("sum", hp["initial_accumulator_value"]) + g * g
    clr = hp["lr"] / (1.0 + (t - 1) * hp["lr_decay"])
    return p - clr * g / (math.sqrt(s["sum"]) + hp["eps"])


def rmsprop_rule(p, g, s, hp, t):
    p, g = _prepare(p, g, hp)
    a = hp["alpha"]
    s["v"] = a * s.get("v", 0.0) + (1.0 - a) * g * g
    vt = s["v"]
    if hp["centered"]:
        s["gbar"] = a * s.get("gbar", 0.0) + (1.0 - a) * g
        vt = vt - s["gbar"] ** 2
    d = math.sqrt(vt) + hp["eps"]
    if hp["momentum"] > 0:
        s["buf"] = hp["momentum"] * s.get("buf", 0.0) + g / d
        return p - hp["lr"] * s["buf"]
    return p - hp["lr"] * g / d


def adam_rule(p, g, s, hp, t):
    p, g = _prepare(p, g, hp)
    b1, b2 = hp["betas"]
    s["m"] = b1 * s.get("m", 0.0) + (1.0 - b1) * g
    s["v"] = b2 * s.get("v", 0.0) + (1.0 - b2) * g * g
    v = s["v"]
    if hp["amsgrad"]:
        s["vmax"] = max(s.get("vmax", 0.0), v)
        v = s["vmax"]
    if hp["bias_correction"]:
        mhat, vhat = s["m"] / (1.0 - b1 ** t), v / (1.0 - b2 ** t)
    else:
        mhat, vhat = s["m"], v
    return p - hp["lr"] * mhat / (math.sqrt(vhat) + hp["eps"])


def adamax_rule(p, g, s, hp, t):
    p, g = _prepare(p, g, hp)
    b1, b2 = hp["betas"]
    s["m"] = b1 * s.get("m", 0.0) + (1.0 - b1) * g
    s["u"] = max(b2 * s.get("u", 0.0), abs(g) + hp["eps"])
    return p - hp["lr"] / (1.0 - b1 ** t) * s["m"] / s["u"]


def nadam_rule(p, g, s, hp, t):
    p, g = _prepare(p, g, hp)
    b1, b2 = hp["betas"]
    psi = hp["momentum_decay"]
    mu = b1 * (1.0 - 0.5 * 0.96 ** (t * psi))
    mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * psi))
    s["P"] = s.get("P", 1.0) * mu
    s["m"] = b1 * s.get("m", 0.0) + (1.0 - b1) * g
    s["v"] = b2 * s.get("v", 0.0) + (1.0 - b2) * g * g
    d = math.sqrt(s["v"] / (1.0 - b2 ** t)) + hp["eps"]
    lr, P = hp["lr"], s["P"]
    return p - lr * (1.0 - mu) / (1.0 - P) * g / d - lr * mu_next / (1.0 - P * mu_next) * s["m"] / d


def radam_rule(p, g, s, hp, t):
    p, g = _prepare(p, g, hp)
    b1, b2 = hp["betas"]
    s["m"] = b1 * s.get("m", 0.0) + (1.0 - b1) * g
    s["v"] = b2 * s.get("v", 0.0) + (1.0 - b2) * g * g
    mhat = s["m"] / (1.0 - b1 ** t)
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    rho_t = rho_inf - 2.0 * t * b2 ** t / (1.0 - b2 ** t)
    if rho_t > 5:
        r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        return p - hp["lr"] * mhat * r * math.sqrt(1.0 - b2 ** t) / (math.sqrt(s["v"]) + hp["eps"])
    return p - hp["lr"] * mhat


# --------------------------------------------------------------------------------------------------
# The registry.

_ADAM_SLOTS = lambda hp: {"exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if hp["amsgrad"] else set())  # noqa: E731

REGISTRY: tuple[OptimizerInfo, ...] = (
    OptimizerInfo(
        cls=ak.SGD,
        configs=(
            {},
            {"momentum": 0.9},
            {"momentum": 0.9, "dampening": 0.5},
            {"momentum": 0.9, "nesterov": True},
            {"momentum": 0.5, "weight_decay": 1e-2, "maximize": True},
        ),
        own_errors=(
            ErrorCase({"momentum": -0.9}, ValueError, r"^momentum=-0\.9: expected a finite number in \[0\.0, inf\]"),
            ErrorCase({"nesterov": True}, ValueError,
                      r"^nesterov=True with momentum=0\.0 and dampening=0\.0: expected momentum > 0 and dampening == 0$"),
            ErrorCase({"nesterov": True, "momentum": 0.9, "dampening": 0.1}, ValueError,
                      r"^nesterov=True with momentum=0\.9 and dampening=0\.1: expected momentum > 0 and dampening == 0$"),
            ErrorCase({"nesterov": 1, "momentum": 0.9}, TypeError, r"^nesterov=1: expected True or False$"),
            ErrorCase({"dampening": float("nan")}, ValueError, r"^dampening=nan: expected a finite number"),
        ),
        slots=lambda hp: {"momentum_buffer"} if hp["momentum"] else set(),
        rule=sgd_rule,
        parabola_lr=0.1,
        rosenbrock=Rosenbrock(lr=2e-3, kwargs={"momentum": 0.9}),
    ),
    OptimizerInfo(
        cls=ak.Adagrad,
        configs=(
            {},
            {"lr_decay": 1e-3, "weight_decay": 1e-2},
            {"initial_accumulator_value": 0.1, "maximize": True},
            {"eps": 1e-3},
        ),
        own_errors=(
            ErrorCase({"lr_decay": -1.0}, ValueError, r"^lr_decay=-1\.0: expected a finite number in \[0\.0, inf\]"),
            ErrorCase({"initial_accumulator_value": -0.1}, ValueError,
                      r"^initial_accumulator_value=-0\.1: expected a finite number in \[0\.0, inf\]"),
        ),
        slots=lambda hp: {"sum"},
        rule=adagrad_rule,
        parabola_lr=0.5,
        # AdaGrad's steps shrink like 1/sqrt(t): it crawls along the valley
        rosenbrock=Rosenbrock(lr=0.5, steps=3000, tol=0.1),
    ),
    OptimizerInfo(
        cls=ak.RMSprop,
        configs=(
            {},
            {"centered": True},
            {"momentum": 0.9},
            {"alpha": 0.9, "eps": 1e-6},
            {"centered": True, "momentum": 0.5, "weight_decay": 1e-2, "maximize": True},
        ),
        own_errors=(
            ErrorCase({"alpha": 1.5}, ValueError, r"^alpha=1\.5: expected a finite number in \[0\.0, 1\.0\]$"),
            ErrorCase({"alpha": -0.1}, ValueError, r"^alpha=-0\.1: expected a finite number in \[0\.0, 1\.0\]$"),
            ErrorCase({"momentum": -0.1}, ValueError, r"^momentum=-0\.1: expected a finite number in \[0\.0, inf\]"),
            ErrorCase({"centered": "yes"}, TypeError, r"^centered='yes': expected True or False$"),
        ),
        slots=lambda hp: ({"square_avg"} | ({"grad_avg"} if hp["centered"] else set())
                          | ({"momentum_buffer"} if hp["momentum"] > 0 else set())),
        rule=rmsprop_rule,
        parabola_lr=1e-2,
        rosenbrock=Rosenbrock(lr=1e-4, kwargs={"centered": True, "momentum": 0.9}),
    ),
    OptimizerInfo(
        cls=ak.Adam,
        configs=(
            {},
            {"amsgrad": True},
            {"bias_correction": False},
            {"weight_decay": 1e-2},
            {"weight_decay": 1e-2, "decoupled_weight_decay": True},
            {"maximize": True, "amsgrad": True, "betas": (0.8, 0.99)},
        ),
        own_errors=(
            ErrorCase({"amsgrad": None}, TypeError, r"^amsgrad=None: expected True or False$"),
            ErrorCase({"bias_correction": 0}, TypeError, r"^bias_correction=0: expected True or False$"),
        ),
        slots=_ADAM_SLOTS,
        rule=adam_rule,
        parabola_lr=0.05,
        rosenbrock=Rosenbrock(lr=1e-2),
    ),
    OptimizerInfo(
        cls=ak.AdamW,
        configs=(
            {},
            {"amsgrad": True, "weight_decay": 5e-3},
            {"bias_correction": False, "maximize": True},
        ),
        own_errors=(
            ErrorCase({"amsgrad": "no"}, TypeError, r"^amsgrad='no': expected True or False$"),
            # AdamW's weight decay is decoupled by definition: not an argument
            ErrorCase({"decoupled_weight_decay": False}, TypeError, r"unexpected keyword argument 'decoupled_weight_decay'"),
        ),
        slots=_ADAM_SLOTS,
        rule=adam_rule,
        parabola_lr=0.05,
        rosenbrock=Rosenbrock(lr=1e-2, kwargs={"weight_decay": 1e-3}),
    ),
    OptimizerInfo(
        cls=ak.Adamax,
        configs=(
            {},
            {"weight_decay": 1e-2},
            {"betas": (0.8, 0.99), "maximize": True},
        ),
        own_errors=(),
        slots=lambda hp: {"exp_avg", "exp_inf"},
        rule=adamax_rule,
        parabola_lr=0.05,
        rosenbrock=Rosenbrock(lr=1e-2),
    ),
    OptimizerInfo(
        cls=ak.NAdam,
        configs=(
            {},
            {"momentum_decay": 1e-2, "weight_decay": 1e-2},
            {"weight_decay": 1e-2, "decoupled_weight_decay": True, "maximize": True},
        ),
        own_errors=(
            ErrorCase({"momentum_decay": -4e-3}, ValueError,
                      r"^momentum_decay=-0\.004: expected a finite number in \[0\.0, inf\]"),
        ),
        slots=lambda hp: {"exp_avg", "exp_avg_sq"},
        rule=nadam_rule,
        parabola_lr=0.05,
        rosenbrock=Rosenbrock(lr=5e-3, steps=3000),
    ),
    OptimizerInfo(
        cls=ak.RAdam,
        configs=(
            {},
            {"weight_decay": 1e-2},
            {"weight_decay": 1e-2, "decoupled_weight_decay": True},
            {"maximize": True, "betas": (0.8, 0.99)},
        ),
        own_errors=(),
        slots=lambda hp: {"exp_avg", "exp_avg_sq"},
        rule=radam_rule,
        parabola_lr=0.05,
        # RAdam's first steps are plain (unnormalised) momentum SGD: a small lr survives them
        rosenbrock=Rosenbrock(lr=3e-3, kwargs={"betas": (0.8, 0.99)}),
    ),
)

BY_NAME = {info.name: info for info in REGISTRY}


def config_id(kwargs: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in kwargs.items()) or "defaults"


def all_configs() -> list:
    """``pytest.param(info, kwargs)`` for every registry entry and configuration."""
    import pytest

    return [pytest.param(info, kw, id=f"{info.name}[{config_id(kw)}]") for info in REGISTRY for kw in info.configs]


def all_errors() -> list:
    import pytest

    return [pytest.param(info, case, id=f"{info.name}[{case.id}]") for info in REGISTRY for case in info.errors]


def entries() -> list:
    import pytest

    return [pytest.param(info, id=info.name) for info in REGISTRY]


# --------------------------------------------------------------------------------------------------
# Helpers shared by the test files.


def snapshot(arrays: Any) -> list[tuple]:
    """A bit-exact copy of some arrays (a list, a dict or one array) to compare later."""
    if isinstance(arrays, np.ndarray):
        arrays = [arrays]
    if isinstance(arrays, dict):
        arrays = list(arrays.values())
    return [(a.dtype, a.shape, a.tobytes()) for a in arrays]


def assert_same_tree(a: Any, b: Any, path: str = "") -> None:
    """``a`` and ``b`` are equal: same structure, arrays with the same dtype, shape and bits."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray), path
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert a.tobytes() == b.tobytes(), f"{path}: arrays differ"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{path}: keys {list(a)} != {list(b)}"
        for k in a:
            assert_same_tree(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), path
    else:
        assert type(a) is type(b) and a == b, f"{path}: {a!r} != {b!r}"


def gradients(rng: np.random.Generator, shape: tuple, steps: int, dtype=np.float64) -> list[np.ndarray]:
    """Random gradients with magnitudes from 1e-3 to 1e2 and both signs, some exact zeros."""
    out = []
    for _ in range(steps):
        g = rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 2, shape)
        g[rng.random(shape) < 0.1] = 0.0
        out.append(g.astype(dtype))
    return out
