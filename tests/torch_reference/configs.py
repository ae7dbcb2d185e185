"""The one table of torch-parity configurations, shared by ``make_fixtures.py`` and ``test_torch_parity.py``.

Every entry names an optimizer class (the same name in ``torch.optim`` and ``adamkit``) and keyword
arguments accepted by both with the same meaning. The problem is the same for every entry: parameters
of a few shapes, initialised from ``PARAM_SEED``, driven for ``STEPS`` steps by the gradients of
:func:`make_grads`: ``sign * 10**uniform(-6, 3)`` with some exact zeros (and one coordinate whose
gradient is exactly zero for the first ``ZERO_PREFIX`` steps, so state slots that stay 0 are exercised).

Gradients are generated in float64 by NumPy and cast to the parameter dtype before either library sees
them (torch's ``.grad`` has the parameter's dtype). The fixture stores them too, so the fixture test does
not depend on NumPy's random streams staying the same across versions.

Learning rates are chosen so that parameters stay O(1) over the 500 steps (checked by the fixture test);
"default" means torch's defaults except where the default lr would throw SGD's parameters far away
with gradients up to 1e3. ``bias_correction=False`` (adamkit only) has no torch counterpart and is not here.

This module imports only NumPy.
"""

from __future__ import annotations

import json

import numpy as np

STEPS = 500
#: Steps (1-based, after the update) whose parameters the fixture keeps: the first few densely (the
#: first-step special cases, RAdam's switch to the adaptive step after step 5), then sparsely.
CHECKPOINTS = (1, 2, 3, 4, 5, 6, 7, 8, 10, 15, 20, 30, 50, 75, 100, 150, 200, 250, 300, 350, 400, 450, 500)
#: Parameter shapes: a matrix, a vector and a 0-d scalar (12 elements in all).
SHAPES = ((2, 3), (5,), ())
DTYPES = ("float32", "float64")
PARAM_SEED = 20240611
GRAD_SEED = 20240612
ZERO_FRACTION = 0.1
ZERO_PREFIX = 100  # coordinate 0 of the matrix gets exactly zero gradient for this many first steps

#: (name, optimizer, kwargs). Names are unique; kwargs are valid for torch.optim.<optimizer> and
#: adamkit.<optimizer> alike (torch 2.13: Adam takes decoupled_weight_decay; AdamW does not).
CONFIGS: tuple[tuple[str, str, dict], ...] = (
    # SGD: the default lr 1e-3 with |g| up to 1e3 moves parameters by ~1 per step; 1e-4 keeps them O(1).
    ("sgd-plain", "SGD", {"lr": 1e-4}),
    ("sgd-weight-decay", "SGD", {"lr": 1e-4, "weight_decay": 0.5}),
    ("sgd-momentum", "SGD", {"lr": 1e-5, "momentum": 0.9}),
    ("sgd-momentum-dampening", "SGD", {"lr": 1e-5, "momentum": 0.9, "dampening": 0.5, "weight_decay": 0.1}),
    ("sgd-nesterov", "SGD", {"lr": 1e-5, "momentum": 0.9, "nesterov": True}),
    ("sgd-nesterov-maximize", "SGD", {"lr": 1e-5, "momentum": 0.8, "nesterov": True, "weight_decay": 0.3,
                                      "maximize": True}),
    # Adagrad
    ("adagrad-default", "Adagrad", {}),
    ("adagrad-lr-decay-init-acc", "Adagrad", {"lr": 3e-2, "lr_decay": 1e-2, "initial_accumulator_value": 0.1}),
    ("adagrad-weight-decay-maximize", "Adagrad", {"lr": 3e-2, "weight_decay": 0.2, "eps": 1e-8,
                                                  "maximize": True}),
    # RMSprop
    ("rmsprop-default", "RMSprop", {}),
    ("rmsprop-centered", "RMSprop", {"centered": True, "alpha": 0.9}),
    ("rmsprop-momentum", "RMSprop", {"lr": 1e-3, "momentum": 0.9, "weight_decay": 0.1}),
    ("rmsprop-centered-momentum-maximize", "RMSprop", {"lr": 1e-3, "momentum": 0.5, "centered": True,
                                                       "eps": 1e-6, "weight_decay": 0.1, "maximize": True}),
    # Adam
    ("adam-default", "Adam", {}),
    ("adam-amsgrad", "Adam", {"lr": 1e-2, "amsgrad": True}),
    ("adam-weight-decay", "Adam", {"lr": 1e-2, "weight_decay": 0.5}),
    ("adam-decoupled-weight-decay", "Adam", {"lr": 1e-2, "weight_decay": 0.5, "decoupled_weight_decay": True}),
    ("adam-betas-eps-amsgrad-maximize", "Adam", {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6,
                                                 "amsgrad": True, "weight_decay": 0.1, "maximize": True}),
    # AdamW
    ("adamw-default", "AdamW", {}),
    ("adamw-amsgrad", "AdamW", {"lr": 1e-2, "weight_decay": 0.5, "amsgrad": True}),
    ("adamw-maximize", "AdamW", {"lr": 1e-2, "betas": (0.5, 0.9), "weight_decay": 0.2, "maximize": True}),
    # Adamax
    ("adamax-default", "Adamax", {}),
    ("adamax-weight-decay-maximize", "Adamax", {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-4,
                                                "weight_decay": 0.2, "maximize": True}),
    # NAdam
    ("nadam-default", "NAdam", {}),
    ("nadam-weight-decay", "NAdam", {"lr": 1e-2, "weight_decay": 0.5}),
    ("nadam-decoupled-weight-decay", "NAdam", {"lr": 1e-2, "weight_decay": 0.5, "decoupled_weight_decay": True}),
    ("nadam-momentum-decay-maximize", "NAdam", {"lr": 1e-2, "betas": (0.8, 0.99), "momentum_decay": 2e-2,
                                                "maximize": True}),
    # RAdam: the first steps (rho_t <= 5) are unadapted, lr * m_hat with |g| up to 1e3, hence small lrs.
    # b2 = 0.999 and 0.99: adaptive from step 6 on; b2 = 0.7 (rho_inf = 5.67): from step 10 on.
    ("radam-default", "RAdam", {}),
    ("radam-weight-decay", "RAdam", {"weight_decay": 0.5}),
    ("radam-decoupled-weight-decay", "RAdam", {"weight_decay": 0.5, "decoupled_weight_decay": True}),
    ("radam-betas-maximize", "RAdam", {"betas": (0.9, 0.99), "eps": 1e-6, "maximize": True}),
    ("radam-late-rectification", "RAdam", {"lr": 3e-4, "betas": (0.5, 0.7)}),
)

OPTIMIZER_NAMES = ("SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Adamax", "NAdam", "RAdam")


def config_json(kwargs: dict) -> str:
    """A canonical text of ``kwargs``, stored next to each trajectory to detect a stale fixture."""
    return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}, sort_keys=True)


def n_elements() -> int:
    return sum(int(np.prod(s, dtype=np.int64)) for s in SHAPES)


def split(flat: np.ndarray) -> list[np.ndarray]:
    """Cut a flat vector (or the last axis of a stack of them) into arrays of ``SHAPES``."""
    out, start = [], 0
    for s in SHAPES:
        n = int(np.prod(s, dtype=np.int64))
        out.append(flat[..., start:start + n].reshape(flat.shape[:-1] + tuple(s)))
        start += n
    return out


def flatten(arrays) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])


def make_init() -> np.ndarray:
    """Initial parameters, flat float64 in [-1, 1] (cast to each dtype; exact in float32 by construction)."""
    rng = np.random.default_rng(PARAM_SEED)
    return rng.uniform(-1.0, 1.0, n_elements()).astype(np.float32).astype(np.float64)


def make_grads(steps: int = STEPS) -> np.ndarray:
    """Gradients, shape (steps, n_elements), float64: sign * 10**uniform(-6, 3), about 10% exact zeros.

    They are exactly representable in float32 (rounded there first), so both dtypes see the same numbers.
    """
    rng = np.random.default_rng(GRAD_SEED)
    n = n_elements()
    sign = np.where(rng.random((steps, n)) < 0.5, -1.0, 1.0)
    mag = 10.0 ** rng.uniform(-6.0, 3.0, (steps, n))
    g = sign * mag
    g[rng.random((steps, n)) < ZERO_FRACTION] = 0.0
    g[:ZERO_PREFIX, 0] = 0.0
    return g.astype(np.float32).astype(np.float64)


def tolerance(dtype: str) -> float:
    """The relative tolerance of issue 2: 1e-12 for float64, 1e-5 for float32."""
    return {"float64": 1e-12, "float32": 1e-5}[dtype]
