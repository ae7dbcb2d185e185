"""Test problems for comparing optimizers: the :class:`Problem` type and the built-in suite.

A problem is a seeded objective with a hand-written gradient::

    Problem(name, init, loss_and_grad, steps, ...)
    init(rng) -> params                       # a float array, or a dict / list of them
    loss_and_grad(params, rng) -> (loss, grads)   # grads mirrors params; a stochastic problem
                                                  # draws its mini-batch (or noise) from rng

The comparison harness (:func:`adamkit.compare`) gives every run its own ``numpy.random.Generator``
made from the seed and the problem's name, so the same seed means the same initial point and the same
sequence of mini-batches for every optimizer and learning rate.

The built-in problems (:data:`PROBLEMS`, :func:`problems`) each test one thing the seed notes claim
(see ``issues show 5``): adaptivity on an ill-conditioned quadratic, Rosenbrock's valley, momentum
against gradient noise, sparse gradients, logistic regression and a small network on scikit-learn's
digits (Kingma & Ba sections 6.1-6.2, scaled down), bias correction when beta2 is close to 1 (a small
variational autoencoder, their section 6.4), Reddi, Kale & Kumar's online problem where Adam fails and
AMSGrad does not, and the course notes' regression problems.
"""

from __future__ import annotations

import gzip
import importlib.util
import inspect
import json
import math
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from . import _tree
from . import schedules as _schedules
from ._optimizer import check_bool

Params = Any  # a float ndarray, or a dict / list / tuple of them
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def log_grid(lo: float, hi: float, per_decade: int = 2) -> tuple[float, ...]:
    """Log-spaced learning rates ``10**lo ... 10**hi``, ``per_decade`` points a decade."""
    n = int(round((hi - lo) * per_decade)) + 1
    return tuple(float(f"{10.0 ** e:.6g}") for e in np.linspace(lo, hi, n))


DEFAULT_LRS = log_grid(-4, 0)


@dataclass(frozen=True)
class Variant:
    """An extra optimizer configuration a problem runs next to the compared ones (a claim's experiment).

    ``label`` names it in tables; ``optimizer`` is a name from :data:`adamkit.OPTIMIZERS`;
    ``options`` its keyword arguments (besides ``lr``).
    """

    label: str
    optimizer: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Problem:
    """A seeded objective with a gradient, for :func:`adamkit.compare`.

    Args:
        name: short identifier (letters, digits, ``_ . -``).
        init: ``init(rng) -> params``, the starting point (float arrays, or a dict / list of them).
        loss_and_grad: ``loss_and_grad(params, rng) -> (loss, grads)``; with ``online=True`` it is called
            as ``loss_and_grad(params, rng, t)`` with the step ``t`` (1 on the first).
        steps: the budget, in gradient evaluations (one per optimizer step).
        description: one line, shown by ``adamkit problems``.
        evaluate: ``evaluate(params) -> {metric: value}``, run once at the end (e.g. test accuracy).
        full_loss: ``full_loss(params) -> float``, the exact objective (e.g. on the whole training set).
            It gives the final loss, the loss curves and the time to target. Without it, a deterministic
            problem's objective is the loss ``loss_and_grad`` returns, and a stochastic one uses means of
            the mini-batch losses (the last 5% of the steps for the final loss).
        target: the loss that counts as solved, for "gradient evaluations to reach the target".
        floor: the known minimum of the objective, if any: losses are then compared as excess
            ``loss - floor``.
        stochastic: True when ``loss_and_grad`` draws from ``rng`` (mini-batches or noise).
        project: ``project(params)`` applied in place after every step (a constraint set).
        lrs: the default learning-rate grid (one grid, the same for every optimizer).
        online: pass the step ``t`` to ``loss_and_grad`` (an online problem f_t).
        schedule: ``schedule(lr) -> callable of the step count``, used instead of a constant learning
            rate (e.g. :func:`adamkit.schedules.inverse_sqrt`); the grid then scales the schedule.
        variants: extra optimizer configurations to run on this problem (see :class:`Variant`).
        trace: record per-coordinate effective step sizes and the size of the first updates.
        info: any JSON-able facts about the problem (dimensions, condition number, ...).
    """

    name: str
    init: Callable[[np.random.Generator], Params]
    loss_and_grad: Callable[..., tuple[float, Params]]
    steps: int
    description: str = ""
    evaluate: Callable[[Params], dict[str, float]] | None = None
    full_loss: Callable[[Params], float] | None = None
    target: float | None = None
    floor: float | None = None
    stochastic: bool = False
    project: Callable[[Params], None] | None = None
    lrs: Sequence[float] | None = None
    online: bool = False
    schedule: Callable[[float], Callable[[int], float]] | None = None
    variants: Sequence[Variant] = ()
    trace: bool = False
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"name={self.name!r}: expected a non-empty string of letters, digits, '_', '.' or '-'")
        for arg in ("init", "loss_and_grad"):
            if not callable(getattr(self, arg)):
                raise TypeError(f"{arg}={getattr(self, arg)!r}: expected a callable")
        for arg in ("evaluate", "full_loss", "project", "schedule"):
            v = getattr(self, arg)
            if v is not None and not callable(v):
                raise TypeError(f"{arg}={v!r}: expected a callable or None")
        if isinstance(self.steps, bool) or not isinstance(self.steps, numbers.Integral) or self.steps < 1:
            raise ValueError(f"steps={self.steps!r}: expected an integer >= 1")
        for arg in ("target", "floor"):
            v = getattr(self, arg)
            if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v)):
                raise ValueError(f"{arg}={v!r}: expected a finite number or None")
        if self.lrs is not None:
            object.__setattr__(self, "lrs", check_lrs(self.lrs, "lrs"))
        for arg in ("stochastic", "online", "trace"):
            object.__setattr__(self, arg, check_bool(arg, getattr(self, arg)))
        if self.target is not None and self.floor is not None and self.target < self.floor:
            raise ValueError(f"target={self.target!r}: expected a loss >= floor={self.floor!r} (the known minimum)")
        if not isinstance(self.info, Mapping):
            raise TypeError(f"info={self.info!r}: expected a dict of JSON-able facts")
        try:
            json.dumps(dict(self.info), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"info: expected JSON-able values (numbers, strings, lists, dicts): {exc}") from None
        if self.online and self.full_loss is None:
            raise ValueError("online=True: expected a full_loss (an online problem's loss depends on t)")
        variants = tuple(self.variants)
        for v in variants:
            if not isinstance(v, Variant):
                raise TypeError(f"variants: expected Variant entries, got {v!r}")
        object.__setattr__(self, "variants", variants)
        object.__setattr__(self, "steps", int(self.steps))
        object.__setattr__(self, "info", dict(self.info))

    def __repr__(self) -> str:
        return f"Problem({self.name!r}, steps={self.steps}{', stochastic' if self.stochastic else ''})"

    # ------------------------------------------------------------------------------------------------

    def call(self, params: Params, rng: np.random.Generator, t: int) -> tuple[float, Params]:
        """``loss_and_grad`` with the step ``t`` passed on for an online problem."""
        if self.online:
            return self.loss_and_grad(params, rng, t)
        return self.loss_and_grad(params, rng)

    def objective(self, params: Params) -> float | None:
        """The exact objective at ``params`` (``full_loss``, or the deterministic loss), or None."""
        if self.full_loss is not None:
            return float(self.full_loss(params))
        if self.stochastic:
            return None
        return float(self.call(params, np.random.default_rng(0), 1)[0])

    def check_gradient(self, seed: int = 0, eps: float = 1e-6, coords: int = 12) -> float:
        """The largest relative error of ``loss_and_grad``'s gradient against central differences.

        Up to ``coords`` coordinates of every parameter array are checked, at ``init(rng)``. A stochastic
        problem is made deterministic by giving every call a generator seeded alike (the same batch).
        The error of one coordinate is ``|g - fd| / max(|g| + |fd|, 1e-6)``.
        """
        params = self.init(np.random.default_rng(seed))

        def f(p):
            return float(self.call(p, np.random.default_rng(seed + 1), 1)[0])

        _, grads = self.call(params, np.random.default_rng(seed + 1), 1)
        leaves, names, treedef = _tree.flatten(params)
        gleaves = [np.asarray(g) for g in (treedef.flatten_like(grads, "grads") if treedef.kind != "leaf" else [grads])]
        pick = np.random.default_rng(seed + 2)
        worst = 0.0
        for p, g in zip(leaves, gleaves):
            flat = p.reshape(-1)
            gflat = g.reshape(-1)
            idx = pick.choice(flat.size, size=min(coords, flat.size), replace=False)
            for i in idx:
                old = flat[i]
                flat[i] = old + eps
                up = f(params)
                flat[i] = old - eps
                down = f(params)
                flat[i] = old
                fd = (up - down) / (2 * eps)
                err = abs(gflat[i] - fd) / max(abs(gflat[i]) + abs(fd), 1e-6)
                worst = max(worst, err)
        return worst


def check_lrs(lrs: Any, what: str = "lrs") -> tuple[float, ...]:
    """A non-empty increasing sequence of positive finite learning rates."""
    if isinstance(lrs, (str, bytes)) or not isinstance(lrs, (Sequence, np.ndarray)):
        raise TypeError(f"{what}={lrs!r}: expected a sequence of positive learning rates")
    out = []
    for v in lrs:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (0 < float(v) < math.inf):
            raise ValueError(f"{what}: entry {v!r} is not a positive finite number")
        out.append(float(v))
    if not out:
        raise ValueError(f"{what}=[]: expected at least one learning rate")
    out = sorted(set(out))
    return tuple(out)


# --------------------------------------------------------------------------------------------------
# Data


_DIGITS: tuple[np.ndarray, np.ndarray] | None = None


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (1797 images): pixels scaled to [0, 1], labels 0-9.

    Read straight from the file scikit-learn ships (no download), without importing scikit-learn.
    """
    global _DIGITS
    if _DIGITS is None:
        spec = importlib.util.find_spec("sklearn")
        path = None
        if spec is not None and spec.submodule_search_locations:
            path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
        if path is not None and path.is_file():
            with gzip.open(path, "rt") as fh:
                data = np.loadtxt(fh, delimiter=",")
            X, y = data[:, :-1] / 16.0, data[:, -1].astype(np.int64)
        else:  # pragma: no cover - depends on the scikit-learn install
            from sklearn.datasets import load_digits as _ld

            d = _ld()
            X, y = d.data / 16.0, d.target.astype(np.int64)
        _DIGITS = (np.ascontiguousarray(X), y)
    return _DIGITS


def _digits_split(test: int = 450) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X, y = load_digits()
    perm = np.random.default_rng(2014).permutation(len(y))
    tr, te = perm[test:], perm[:test]
    return X[tr], y[tr], X[te], y[te]


def _softmax_ce(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy and its gradient with respect to the logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    ez = np.exp(z)
    s = ez.sum(axis=1, keepdims=True)
    n = len(y)
    loss = float(np.mean(np.log(s[:, 0]) - z[np.arange(n), y]))
    d = ez / s
    d[np.arange(n), y] -= 1.0
    return loss, d / n


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


# --------------------------------------------------------------------------------------------------
# The built-in problems. Each factory takes ``quick`` (a smaller budget for ``adamkit compare --quick``).


def quadratic(dim: int = 20, condition: float = 1e4, steps: int = 600, quick: bool = False) -> Problem:
    """Ill-conditioned diagonal quadratic, condition number 1e4: adaptivity across dimensions.

    ``f(x) = 1/2 sum_i h_i x_i^2`` with ``h`` log-spaced in ``[1, condition]``; ``x_0 = z / sqrt(h)``,
    ``z ~ N(0, I)``, so every coordinate starts with the same share of the loss. Gradient ``h * x``.
    Plain gradient descent needs ``lr < 2/h_max`` and then moves the flat coordinates by a factor
    ``1 - lr h_i`` per step; a per-coordinate step fixes that.
    """
    h = np.geomspace(1.0, condition, dim)

    def init(rng):
        return rng.standard_normal(dim) / np.sqrt(h)

    def loss_and_grad(x, rng):
        g = h * x
        return 0.5 * float(x @ g), g

    return Problem(
        "quadratic", init, loss_and_grad, min(steps, 150) if quick else steps,
        description=f"ill-conditioned diagonal quadratic, {dim} dims, condition {condition:g}: per-coordinate steps",
        target=1e-3, floor=0.0, lrs=log_grid(-6, 1), trace=True,
        info={"dim": dim, "condition": condition, "curvatures": h.tolist()},
    )


def rosenbrock(steps: int = 1500, quick: bool = False) -> Problem:
    """Rosenbrock's banana, 2-D: ``(1-x)^2 + 100 (y - x^2)^2`` from near ``(-1.2, 1)``; minimum 0 at (1, 1)."""

    def init(rng):
        return np.array([-1.2, 1.0]) + 0.1 * rng.standard_normal(2)

    def loss_and_grad(p, rng):
        x, y = p
        r = y - x * x
        loss = (1 - x) ** 2 + 100 * r * r
        return float(loss), np.array([-2 * (1 - x) - 400 * x * r, 200 * r])

    return Problem("rosenbrock", init, loss_and_grad, min(steps, 400) if quick else steps,
                   description="Rosenbrock's valley in 2-D from (-1.2, 1): a curved, narrow valley",
                   target=1e-3, floor=0.0, lrs=log_grid(-5, 1))


def rosenbrock_nd(dim: int = 10, steps: int = 1000, quick: bool = False) -> Problem:
    """Rosenbrock in N dimensions: ``sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2``; minimum 0 at ones."""

    def init(rng):
        return -1.0 + 0.2 * rng.standard_normal(dim)

    def loss_and_grad(x, rng):
        a, b = x[:-1], x[1:]
        r = b - a * a
        loss = float(np.sum(100 * r * r + (1 - a) ** 2))
        g = np.zeros_like(x)
        g[:-1] = -400 * a * r - 2 * (1 - a)
        g[1:] += 200 * r
        return loss, g

    return Problem("rosenbrock_nd", init, loss_and_grad, min(steps, 250) if quick else steps,
                   description=f"Rosenbrock in {dim} dimensions from near -1: a long curved valley",
                   target=1e-3, floor=0.0, lrs=log_grid(-5, 1), info={"dim": dim})


def noisy_quadratic(dim: int = 10, condition: float = 100.0, noise: float = 1.0, steps: int = 1000,
                    quick: bool = False) -> Problem:
    """Quadratic with Gaussian gradient noise of a set variance: what momentum's averaging is for.

    ``f(x) = 1/2 sum_i h_i x_i^2``, ``h`` log-spaced in ``[1, condition]``; the gradient is
    ``h * x + noise * z`` with ``z ~ N(0, I)`` drawn from the run's generator (the gradient of the
    sampled loss ``f(x) + noise * z.x``, whose mean is f). ``full_loss`` is the exact f.
    """
    h = np.geomspace(1.0, condition, dim)

    def init(rng):
        return 3.0 * rng.standard_normal(dim) / np.sqrt(h)

    def loss_and_grad(x, rng):
        z = noise * rng.standard_normal(dim)
        g = h * x
        # the sampled loss f(x) + z.x has exactly the noisy gradient; its mean is f(x)
        return 0.5 * float(x @ g) + float(z @ x), g + z

    def full_loss(x):
        return 0.5 * float(x @ (h * x))

    return Problem("noisy_quadratic", init, loss_and_grad, min(steps, 250) if quick else steps,
                   description=f"quadratic, condition {condition:g}, gradient noise sd {noise:g}: smoothing noisy gradients",
                   full_loss=full_loss, target=0.05, floor=0.0, stochastic=True, lrs=log_grid(-4, 0),
                   info={"dim": dim, "condition": condition, "noise_sd": noise})


def sparse_logreg(vocab: int = 1000, docs: int = 2000, test_docs: int = 1000, length: int = 30,
                  informative: int = 100, batch: int = 32, steps: int = 800, quick: bool = False) -> Problem:
    """Logistic regression on synthetic bag-of-words documents: sparse gradients, rare informative words.

    Word ``k`` (rank 1 most frequent) has probability proportional to ``1/k^1.1`` (Zipf); a document is
    ``length`` draws, its features are word presence (0/1). The label depends only on ``informative``
    words drawn from the rare half of the vocabulary (weights +-2), so a word that matters appears in
    about one document in a hundred and its gradient is zero in most mini-batches. Metrics: test
    accuracy, and ``test_accuracy_rare``, the accuracy on test documents holding an informative word.
    """
    rng = np.random.default_rng(7)
    p = 1.0 / np.arange(1, vocab + 1) ** 1.1
    p /= p.sum()
    n = docs + test_docs
    words = rng.choice(vocab, size=(n, length), p=p)
    X = np.zeros((n, vocab))
    X[np.repeat(np.arange(n), length), words.ravel()] = 1.0
    w_true = np.zeros(vocab)
    inf_idx = rng.choice(np.arange(vocab // 2, vocab), size=informative, replace=False)
    w_true[inf_idx] = rng.choice([-2.0, 2.0], size=informative)
    z = X @ w_true
    y = (rng.random(n) < _sigmoid(2.0 * z)).astype(np.float64)
    Xtr, ytr, Xte, yte = X[:docs], y[:docs], X[docs:], y[docs:]
    from scipy import sparse

    Xtr_s = sparse.csr_matrix(Xtr)
    Xte_s = sparse.csr_matrix(Xte)

    def init(rng):
        return {"w": 0.01 * rng.standard_normal(vocab), "b": np.zeros(1)}

    def _loss(Xb, yb, prm):
        s = Xb @ prm["w"] + prm["b"][0]
        return float(np.mean(_softplus(s) - yb * s)), s

    # each training document as its distinct words, padded with the index `vocab` (a weight fixed at 0):
    # a mini-batch gradient then touches only the words present, as a sparse implementation would
    rows, cols = np.nonzero(Xtr)
    counts = np.bincount(rows, minlength=docs)
    width = int(counts.max())
    doc_words = np.full((docs, width), vocab, dtype=np.intp)
    doc_words[rows, np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)] = cols

    def loss_and_grad(prm, rng):
        idx = rng.integers(0, docs, size=batch)
        words, yb = doc_words[idx], ytr[idx]
        s = np.append(prm["w"], 0.0)[words].sum(axis=1) + prm["b"][0]
        loss = float(np.mean(_softplus(s) - yb * s))
        r = (_sigmoid(s) - yb) / batch
        gw = np.bincount(words.ravel(), weights=np.repeat(r, width), minlength=vocab + 1)[:vocab]
        return loss, {"w": gw, "b": np.array([r.sum()])}

    def full_loss(prm):
        return _loss(Xtr_s, ytr, prm)[0]

    rare = Xte[:, inf_idx].sum(axis=1) > 0  # test documents holding an informative word

    def evaluate(prm):
        s = Xte_s @ prm["w"] + prm["b"][0]
        correct = (s > 0) == (yte > 0.5)
        return {"test_accuracy": float(correct.mean()),
                "test_accuracy_rare": float(correct[rare].mean())}

    frac = float((Xtr[:, inf_idx].sum(axis=1) > 0).mean())
    return Problem("sparse_logreg", init, loss_and_grad, min(steps, 100) if quick else steps,
                   description=f"logistic regression, bag of words ({vocab} Zipf words, rare informative ones): sparse gradients",
                   evaluate=evaluate, full_loss=full_loss, target=0.4, floor=0.0, stochastic=True,
                   lrs=log_grid(-3, 1),
                   info={"vocab": vocab, "docs": docs, "batch": batch, "informative_words": informative,
                         "mean_words_per_doc": float(Xtr.sum(axis=1).mean()),
                         "docs_with_an_informative_word": frac,
                         "mean_informative_word_frequency": float(Xtr[:, inf_idx].mean())})


def digits_logreg(batch: int = 64, l2: float = 1e-3, steps: int = 600, quick: bool = False) -> Problem:
    """Multinomial logistic regression with L2 on scikit-learn's digits (Kingma & Ba 6.1, scaled down).

    ``mean_i CE(softmax(x_i W + b), y_i) + l2/2 ||W||^2`` on 1347 training images (8x8, pixels/16),
    mini-batches of ``batch``; test accuracy on 450 held-out images. The optimum is found once by
    L-BFGS (scipy) and reported as the floor.
    """
    Xtr, ytr, Xte, yte = _digits_split()
    d, k = Xtr.shape[1], 10

    def init(rng):
        return {"W": 0.01 * rng.standard_normal((d, k)), "b": np.zeros(k)}

    def _lg(prm, X, y):
        loss, dl = _softmax_ce(X @ prm["W"] + prm["b"], y)
        W = prm["W"]
        loss += 0.5 * l2 * float(np.sum(W * W))
        return loss, {"W": X.T @ dl + l2 * W, "b": dl.sum(axis=0)}

    def loss_and_grad(prm, rng):
        idx = rng.integers(0, len(ytr), size=batch)
        return _lg(prm, Xtr[idx], ytr[idx])

    def full_loss(prm):
        return _lg(prm, Xtr, ytr)[0]

    def evaluate(prm):
        pred = np.argmax(Xte @ prm["W"] + prm["b"], axis=1)
        return {"test_accuracy": float(np.mean(pred == yte))}

    floor = _minimum(lambda v: _lg({"W": v[:d * k].reshape(d, k), "b": v[d * k:]}, Xtr, ytr),
                     np.zeros(d * k + k))
    return Problem("digits_logreg", init, loss_and_grad, min(steps, 100) if quick else steps,
                   description="multinomial logistic regression (L2) on sklearn digits, mini-batches of 64",
                   evaluate=evaluate, full_loss=full_loss, target=floor + 0.05, floor=floor, stochastic=True,
                   lrs=log_grid(-3.5, 1),
                   info={"train": len(ytr), "test": len(yte), "batch": batch, "l2": l2})


def _minimum(lg: Callable[[np.ndarray], tuple[float, dict]], x0: np.ndarray) -> float:
    """The minimum of a smooth convex objective, by L-BFGS (scipy), to about 1e-10."""
    from scipy.optimize import minimize

    def fun(v):
        loss, g = lg(v)
        return loss, np.concatenate([np.ravel(g[k]) for k in g])

    res = minimize(fun, x0, jac=True, method="L-BFGS-B", options={"maxiter": 3000, "gtol": 1e-9, "ftol": 1e-13})
    return float(res.fun)


def digits_mlp(hidden: int = 32, batch: int = 64, l2: float = 0.0, steps: int = 400, quick: bool = False) -> Problem:
    """Two-hidden-layer ReLU network on scikit-learn's digits (Kingma & Ba 6.2, scaled down).

    ``64 -> hidden -> hidden -> 10``, ReLU, softmax cross-entropy (plus ``l2/2`` times the squared
    weights if ``l2 > 0``), He-initialised from the run's seed, mini-batches of ``batch``;
    backpropagation by hand.
    """
    Xtr, ytr, Xte, yte = _digits_split()
    d = Xtr.shape[1]
    sizes = [d, hidden, hidden, 10]

    def init(rng):
        return [{"W": rng.standard_normal((a, b)) * math.sqrt(2.0 / a), "b": np.zeros(b)}
                for a, b in zip(sizes[:-1], sizes[1:])]

    def forward(prm, X):
        acts = [X]
        h = X
        for i, layer in enumerate(prm):
            z = h @ layer["W"] + layer["b"]
            h = np.maximum(z, 0.0) if i < len(prm) - 1 else z
            acts.append(h)
        return acts

    def _penalty(prm):
        return 0.5 * l2 * sum(float(np.vdot(layer["W"], layer["W"])) for layer in prm) if l2 else 0.0

    def _lg(prm, X, y):
        acts = forward(prm, X)
        loss, dz = _softmax_ce(acts[-1], y)
        loss += _penalty(prm)
        grads = [None] * len(prm)
        for i in range(len(prm) - 1, -1, -1):
            W = prm[i]["W"]
            gW = acts[i].T @ dz
            if l2:
                gW += l2 * W
            grads[i] = {"W": gW, "b": dz.sum(axis=0)}
            if i:
                dz = (dz @ W.T) * (acts[i] > 0)
        return loss, grads

    def loss_and_grad(prm, rng):
        idx = rng.integers(0, len(ytr), size=batch)
        return _lg(prm, Xtr[idx], ytr[idx])

    def full_loss(prm):
        acts = forward(prm, Xtr)
        loss, _ = _softmax_ce(acts[-1], ytr)
        return loss + _penalty(prm)

    def evaluate(prm):
        pred = np.argmax(forward(prm, Xte)[-1], axis=1)
        return {"test_accuracy": float(np.mean(pred == yte))}

    return Problem("digits_mlp", init, loss_and_grad, min(steps, 80) if quick else steps,
                   description=f"2-hidden-layer ReLU network ({hidden}-{hidden}) on sklearn digits, mini-batches of 64",
                   evaluate=evaluate, full_loss=full_loss, target=0.1, floor=0.0, stochastic=True,
                   lrs=log_grid(-3.5, 0),
                   info={"layers": sizes, "batch": batch, "l2": l2,
                         "parameters": sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))})


def digits_vae(hidden: int = 32, latent: int = 4, batch: int = 32, steps: int = 300, quick: bool = False) -> Problem:
    """A small variational autoencoder on digits, early training: bias correction with beta2 near 1.

    Kingma & Ba's section 6.4, scaled down: encoder ``64 -> hidden (tanh) -> (mu, log sigma^2)`` of
    size ``latent``, reparameterised ``z = mu + exp(log sigma^2 / 2) * eps``, decoder
    ``latent -> hidden (tanh) -> 64`` Bernoulli logits on the pixel intensities. The loss is the negative
    ELBO per image: ``sum BCE(x, sigmoid(logits)) + KL(N(mu, sigma^2) || N(0, I))``; ``full_loss`` is
    it on a fixed 512 training images with fixed noise. The budget is short (``steps`` updates, about 7
    epochs) because the claim is about the first steps. Besides the compared
    optimizers it runs Adam with beta2 in {0.999, 0.9999}, with and without bias correction.
    """
    Xtr, _, Xte, _ = _digits_split()
    d = Xtr.shape[1]
    Xev = Xtr[:512]  # the objective: a fixed subset of the training images, fixed noise
    eval_eps = np.random.default_rng(99).standard_normal((len(Xev), latent))
    test_eps = np.random.default_rng(98).standard_normal((len(Xte), latent))

    def init(rng):
        def lin(a, b):
            return {"W": rng.standard_normal((a, b)) * math.sqrt(1.0 / a), "b": np.zeros(b)}
        return {"enc": lin(d, hidden), "mu": lin(hidden, latent), "logvar": lin(hidden, latent),
                "dec": lin(latent, hidden), "out": lin(hidden, d)}

    def _lg(prm, X, eps, grad=True):
        n = len(X)
        h1 = np.tanh(X @ prm["enc"]["W"] + prm["enc"]["b"])
        mu = h1 @ prm["mu"]["W"] + prm["mu"]["b"]
        lv = h1 @ prm["logvar"]["W"] + prm["logvar"]["b"]
        sd = np.exp(0.5 * lv)
        z = mu + sd * eps
        h2 = np.tanh(z @ prm["dec"]["W"] + prm["dec"]["b"])
        logits = h2 @ prm["out"]["W"] + prm["out"]["b"]
        rec = np.sum(_softplus(logits) - X * logits)
        kl = -0.5 * np.sum(1.0 + lv - mu * mu - sd * sd)
        loss = float(rec + kl) / n
        if not grad:
            return loss, None
        dlog = (_sigmoid(logits) - X) / n
        g = {"out": {"W": h2.T @ dlog, "b": dlog.sum(0)}}
        da2 = (dlog @ prm["out"]["W"].T) * (1.0 - h2 * h2)
        g["dec"] = {"W": z.T @ da2, "b": da2.sum(0)}
        dz = da2 @ prm["dec"]["W"].T
        dmu = dz + mu / n
        dlv = dz * eps * 0.5 * sd + 0.5 * (sd * sd - 1.0) / n
        g["mu"] = {"W": h1.T @ dmu, "b": dmu.sum(0)}
        g["logvar"] = {"W": h1.T @ dlv, "b": dlv.sum(0)}
        da1 = (dmu @ prm["mu"]["W"].T + dlv @ prm["logvar"]["W"].T) * (1.0 - h1 * h1)
        g["enc"] = {"W": X.T @ da1, "b": da1.sum(0)}
        return loss, {k: g[k] for k in ("enc", "mu", "logvar", "dec", "out")}

    def loss_and_grad(prm, rng):
        idx = rng.integers(0, len(Xtr), size=batch)
        return _lg(prm, Xtr[idx], rng.standard_normal((batch, latent)))

    def full_loss(prm):
        return _lg(prm, Xev, eval_eps, grad=False)[0]

    def evaluate(prm):
        return {"test_neg_elbo": _lg(prm, Xte, test_eps, grad=False)[0]}

    variants = (
        Variant("adam-nobc", "adam", {"bias_correction": False}),
        Variant("adam-b2=.9999", "adam", {"betas": (0.9, 0.9999)}),
        Variant("adam-b2=.9999-nobc", "adam", {"betas": (0.9, 0.9999), "bias_correction": False}),
    )
    return Problem("digits_vae", init, loss_and_grad, min(steps, 60) if quick else steps,
                   description="small VAE on sklearn digits, early training: Adam with/without bias correction, beta2 .999/.9999",
                   evaluate=evaluate, full_loss=full_loss, target=28.0, stochastic=True, lrs=log_grid(-4, 0),
                   variants=variants, trace=True,
                   info={"hidden": hidden, "latent": latent, "batch": batch})


def online(C: float = 3.0, steps: int = 1000, quick: bool = False) -> Problem:
    """Reddi, Kale & Kumar's online problem: ``f_t(x) = C x`` if ``t mod 3 == 1`` else ``-x``, on [-1, 1].

    The average ``F(x) = (C - 2) x / 3`` is minimised at ``x = -1``. With ``beta1 = 0`` and
    ``beta2 = 1/(1 + C^2)`` (their Theorem 1) Adam is pushed to ``x = +1``: the rare large gradient is
    forgotten by ``v`` before it is seen again, so the frequent small ones win; AMSGrad keeps the
    largest ``v`` and converges. Step sizes ``lr/sqrt(t)`` as in their analysis; the iterate is
    projected onto [-1, 1] after each step. The loss reported is the excess ``F(x) - F(-1)``.
    """
    C = float(C)
    slope = (C - 2.0) / 3.0
    b2 = 1.0 / (1.0 + C * C)

    def init(rng):
        return np.array([rng.uniform(-0.5, 0.5)])

    def loss_and_grad(x, rng, t):
        c = C if t % 3 == 1 else -1.0
        return c * float(x[0]), np.array([c])

    def full_loss(x):
        return slope * (float(x[0]) + 1.0)

    def project(x):
        np.clip(x, -1.0, 1.0, out=x)

    def evaluate(x):
        return {"x": float(x[0])}

    variants = (
        Variant("amsgrad", "adam", {"amsgrad": True}),
        Variant("adam-reddi", "adam", {"betas": (0.0, b2)}),
        Variant("amsgrad-reddi", "adam", {"betas": (0.0, b2), "amsgrad": True}),
    )
    return Problem("online", init, loss_and_grad, min(steps, 300) if quick else steps,
                   description=f"Reddi et al.'s online problem (C={C:g}) on [-1, 1]: Adam vs AMSGrad",
                   evaluate=evaluate, full_loss=full_loss, target=0.01 * slope, floor=0.0, project=project,
                   lrs=log_grid(-3, 1), online=True, schedule=_schedules.inverse_sqrt, variants=variants,
                   info={"C": C, "reddi_betas": [0.0, b2], "optimum": -1.0, "schedule": "lr/sqrt(t)"})


def _regression_data(poly: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2018)
    n = 100
    x = 2.0 * rng.random(n)
    if poly:
        y = 2.0 + 3.0 * x + 4.0 * x * x + rng.standard_normal(n)
        X = np.stack([np.ones(n), x, x * x], axis=1)
    else:
        y = 4.0 + 3.0 * x + rng.standard_normal(n)
        X = np.stack([np.ones(n), x], axis=1)
    return X, y


def _least_squares(name: str, X: np.ndarray, y: np.ndarray, lam: float, batch: int | None, steps: int,
                   description: str, lrs: tuple[float, ...], info: dict) -> Problem:
    """``(1/n) ||X beta - y||^2 + lam ||beta||^2`` (the course notes' cost), full-batch or mini-batch."""
    n, d = X.shape
    beta_star = np.linalg.solve(X.T @ X / n + lam * np.eye(d), X.T @ y / n)
    r = X @ beta_star - y
    floor = float(r @ r / n + lam * beta_star @ beta_star)
    H = 2.0 * (X.T @ X / n + lam * np.eye(d))
    ev = np.linalg.eigvalsh(H)

    def init(rng):
        return rng.standard_normal(d)

    def _lg(beta, Xb, yb):
        res = Xb @ beta - yb
        m = len(yb)
        return float(res @ res / m + lam * beta @ beta), (2.0 / m) * (Xb.T @ res) + 2.0 * lam * beta

    if batch is None:
        def loss_and_grad(beta, rng):
            return _lg(beta, X, y)
        full_loss = None
    else:
        def loss_and_grad(beta, rng):
            idx = rng.integers(0, n, size=batch)
            return _lg(beta, X[idx], y[idx])

        def full_loss(beta):
            return _lg(beta, X, y)[0]

    def evaluate(beta):
        return {"coef_error": float(np.max(np.abs(beta - beta_star)))}

    return Problem(name, init, loss_and_grad, steps, description=description, evaluate=evaluate,
                   full_loss=full_loss, target=floor + 0.01, floor=floor, stochastic=batch is not None, lrs=lrs,
                   info={**info, "n": n, "solution": beta_star.tolist(),
                         "hessian_condition": float(ev[-1] / ev[0]), "largest_stable_sgd_lr": float(2.0 / ev[-1])})


def ols(steps: int = 400, quick: bool = False) -> Problem:
    """The course notes' OLS: ``y = 4 + 3x + N(0, 1)``, 100 points, cost ``(1/n)||X beta - y||^2``, full batch."""
    X, y = _regression_data(poly=False)
    return _least_squares("ols", X, y, 0.0, None, min(steps, 100) if quick else steps,
                          "course notes' OLS on y = 4 + 3x + noise (100 points), full-batch gradient",
                          log_grid(-3, 1), {"model": "y = 4 + 3x + N(0,1)"})


def ridge(lam: float = 1e-3, steps: int = 400, quick: bool = False) -> Problem:
    """The course notes' Ridge: OLS's data, cost ``(1/n)||X beta - y||^2 + lam ||beta||^2``, full batch."""
    X, y = _regression_data(poly=False)
    return _least_squares("ridge", X, y, lam, None, min(steps, 100) if quick else steps,
                          f"course notes' Ridge (lambda {lam:g}) on y = 4 + 3x + noise, full-batch gradient",
                          log_grid(-3, 1), {"model": "y = 4 + 3x + N(0,1)", "lambda": lam})


def polynomial(batch: int = 5, steps: int = 800, quick: bool = False) -> Problem:
    """The course notes' quadratic polynomial ``y = 2 + 3x + 4x^2 + N(0, 1)``, mini-batches of 5."""
    X, y = _regression_data(poly=True)
    return _least_squares("polynomial", X, y, 0.0, batch, min(steps, 250) if quick else steps,
                          "course notes' polynomial y = 2 + 3x + 4x^2 + noise, mini-batches of 5",
                          log_grid(-4, 1), {"model": "y = 2 + 3x + 4x^2 + N(0,1)", "batch": batch})


#: The built-in problems: name -> factory (keyword options, and ``quick`` for a smaller budget).
PROBLEMS: dict[str, Callable[..., Problem]] = {
    "quadratic": quadratic,
    "rosenbrock": rosenbrock,
    "rosenbrock_nd": rosenbrock_nd,
    "noisy_quadratic": noisy_quadratic,
    "sparse_logreg": sparse_logreg,
    "digits_logreg": digits_logreg,
    "digits_mlp": digits_mlp,
    "digits_vae": digits_vae,
    "online": online,
    "ols": ols,
    "ridge": ridge,
    "polynomial": polynomial,
}


def describe(name: str) -> str:
    """The one-line description of a built-in problem (the first line of its factory's docstring)."""
    return inspect.getdoc(PROBLEMS[name]).splitlines()[0].replace("``", "")


def problems(*names: str, quick: bool = False) -> list[Problem]:
    """Build built-in problems by name (all of them when no name is given).

    ``quick=True`` gives the smaller budgets of ``adamkit compare --quick``.
    """
    if len(names) == 1 and isinstance(names[0], (list, tuple)):
        names = tuple(names[0])
    for n in names:
        if n not in PROBLEMS:
            raise ValueError(f"problem {n!r}: unknown; expected one of {', '.join(PROBLEMS)}")
    return [PROBLEMS[n](quick=quick) for n in (names or PROBLEMS)]
