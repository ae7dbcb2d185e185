"""The built-in problems and the Problem type: gradients against finite differences, the facts each
problem's description states, and clear errors for bad definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

import adamkit as ak
from adamkit import _problems


@pytest.fixture(scope="module")
def built():
    return {p.name: p for p in ak.problems(quick=True)}


@pytest.mark.parametrize("name", list(ak.PROBLEMS))
def test_gradient_matches_finite_differences(built, name):
    p = built[name]
    for seed in (0, 1):
        err = p.check_gradient(seed=seed, eps=1e-6, coords=12)
        assert err < 1e-4, f"{name}: relative gradient error {err:.2e} (seed {seed})"


@pytest.mark.parametrize("make", [
    lambda: _problems.digits_mlp(l2=1e-3, hidden=16, quick=True),
    lambda: _problems.ridge(lam=0.5, quick=True),
    lambda: _problems.online(C=5.0, quick=True),
    lambda: _problems.digits_vae(latent=2, hidden=8, quick=True),
])
def test_gradient_with_other_options(make):
    assert make().check_gradient(seed=2) < 1e-4


def test_check_gradient_catches_a_wrong_gradient():
    p = ak.Problem("bad", lambda rng: np.ones(3), lambda x, rng: (float(x @ x), 1.9 * x), steps=1)
    assert p.check_gradient() > 0.01


@pytest.mark.parametrize("name", list(ak.PROBLEMS))
def test_seeded_and_loss_finite(built, name):
    p = built[name]
    a = p.init(np.random.default_rng(5))
    b = p.init(np.random.default_rng(5))
    c = p.init(np.random.default_rng(6))
    la, ga = p.call(a, np.random.default_rng(9), 1)
    lb, gb = p.call(b, np.random.default_rng(9), 1)
    assert la == lb and math.isfinite(la)
    flat = lambda x: np.concatenate([np.ravel(v) for v in ak._tree.flatten(x)[0]])  # noqa: E731
    assert np.array_equal(flat(ga), flat(gb))
    assert not np.array_equal(flat(a), flat(c)), "a different seed should start elsewhere"
    assert p.description and p.steps >= 1 and p.lrs
    if p.full_loss is not None:
        assert math.isfinite(p.full_loss(a))
    if p.evaluate is not None:
        assert all(math.isfinite(v) for v in p.evaluate(a).values())


def test_quick_budgets_are_smaller():
    full = {p.name: p.steps for p in ak.problems()}
    quick = {p.name: p.steps for p in ak.problems(quick=True)}
    assert full.keys() == quick.keys() == set(ak.PROBLEMS)
    assert all(quick[n] < full[n] for n in full)


def test_quadratic_condition_number_and_minimum():
    p = _problems.quadratic()
    h = np.asarray(p.info["curvatures"])
    assert h.max() / h.min() == pytest.approx(1e4)
    loss, g = p.call(np.zeros(len(h)), None, 1)
    assert loss == 0 and not g.any()
    x = np.ones(len(h))
    assert p.call(x, None, 1)[0] == pytest.approx(0.5 * h.sum())


def test_rosenbrock_minimum_at_ones():
    for p in (_problems.rosenbrock(), _problems.rosenbrock_nd(dim=7)):
        n = 2 if p.name == "rosenbrock" else 7
        loss, g = p.call(np.ones(n), None, 1)
        assert loss == 0 and not np.any(g)
    assert _problems.rosenbrock().call(np.array([-1.2, 1.0]), None, 1)[0] == pytest.approx(24.2)


def test_noisy_quadratic_noise_has_the_set_variance():
    p = _problems.noisy_quadratic(dim=4, noise=0.5)
    x = np.zeros(4)
    rng = np.random.default_rng(0)
    g = np.array([p.call(x, rng, 1)[1] for _ in range(20000)])
    assert np.allclose(g.mean(axis=0), 0, atol=0.02)
    assert np.allclose(g.var(axis=0), 0.25, rtol=0.05)
    assert p.full_loss(np.ones(4)) == pytest.approx(0.5 * np.geomspace(1, 100, 4).sum())


def test_sparse_problem_has_sparse_gradients_and_rare_informative_words():
    p = _problems.sparse_logreg()
    assert p.info["mean_informative_word_frequency"] < 0.02  # an informative word is in < 2% of documents
    params = p.init(np.random.default_rng(0))
    _, g = p.call(params, np.random.default_rng(1), 1)
    assert np.mean(g["w"] != 0) < 0.5  # most words are absent from a mini-batch of 32
    assert 0.3 < p.info["docs_with_an_informative_word"] < 1.0


def test_regression_floors_are_the_least_squares_minima():
    X, y = _problems._regression_data(poly=False)
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    r = X @ beta - y
    p = _problems.ols()
    assert p.floor == pytest.approx(r @ r / len(y), rel=1e-12)
    assert np.allclose(p.info["solution"], beta)
    assert abs(beta[0] - 4) < 0.5 and abs(beta[1] - 3) < 0.5  # y = 4 + 3x + noise
    loss, g = p.call(np.array(p.info["solution"]), None, 1)
    assert loss == pytest.approx(p.floor) and np.abs(g).max() < 1e-10
    ridge = _problems.ridge(lam=0.1)
    _, g = ridge.call(np.array(ridge.info["solution"]), None, 1)
    assert np.abs(g).max() < 1e-10 and ridge.floor > p.floor
    poly = _problems.polynomial()
    assert len(poly.info["solution"]) == 3 and poly.stochastic


def test_digits_logreg_floor_is_its_minimum():
    p = _problems.digits_logreg()
    params = p.init(np.random.default_rng(0))
    assert p.full_loss(params) > p.floor
    # plain gradient descent from a start does not go below the floor
    for _ in range(50):
        loss, g = p.loss_and_grad(params, np.random.default_rng(0))
        params = {k: params[k] - 0.5 * g[k] for k in params}
    assert p.full_loss(params) >= p.floor - 1e-9


def test_online_problem_follows_reddi():
    p = _problems.online(C=3.0)
    x = np.array([0.5])
    assert [p.call(x, None, t)[1][0] for t in (1, 2, 3, 4)] == [3.0, -1.0, -1.0, 3.0]
    assert p.full_loss(np.array([-1.0])) == 0 and p.full_loss(np.array([1.0])) == pytest.approx(2 / 3)
    y = np.array([3.0])
    p.project(y)
    assert y[0] == 1.0
    assert p.info["reddi_betas"][1] == pytest.approx(0.1)


def test_digits_are_bundled_and_scaled():
    X, y = _problems.load_digits()
    assert X.shape == (1797, 64) and y.shape == (1797,)
    assert X.min() == 0 and X.max() == 1 and set(np.unique(y)) == set(range(10))


def test_problems_by_name_and_errors():
    assert [p.name for p in ak.problems("ols", "online")] == ["ols", "online"]
    with pytest.raises(ValueError, match=r"problem 'nope': unknown; expected one of quadratic, rosenbrock"):
        ak.problems("nope")
    assert _problems.describe("quadratic").startswith("Ill-conditioned diagonal quadratic")


def _ok_init(rng):
    return np.zeros(2)


def _ok_lg(x, rng):
    return float(x @ x), 2 * x


@pytest.mark.parametrize("kwargs, error, message", [
    ({"name": ""}, ValueError, r"name='': expected a non-empty string"),
    ({"name": "a b"}, ValueError, r"name='a b'"),
    ({"init": 3}, TypeError, r"init=3: expected a callable"),
    ({"steps": 0}, ValueError, r"steps=0: expected an integer >= 1"),
    ({"steps": 2.5}, ValueError, r"steps=2.5"),
    ({"target": float("nan")}, ValueError, r"target=nan: expected a finite number or None"),
    ({"lrs": [1e-3, -1]}, ValueError, r"lrs: entry -1 is not a positive finite number"),
    ({"lrs": []}, ValueError, r"lrs=\[\]: expected at least one learning rate"),
    ({"online": True}, ValueError, r"online=True: expected a full_loss"),
    ({"evaluate": "x"}, TypeError, r"evaluate='x': expected a callable or None"),
    ({"variants": ["adam"]}, TypeError, r"variants: expected Variant entries"),
])
def test_problem_validation(kwargs, error, message):
    args = {"name": "p", "init": _ok_init, "loss_and_grad": _ok_lg, "steps": 10, **kwargs}
    with pytest.raises(error, match=message):
        ak.Problem(**args)


def test_problem_lrs_sorted_and_deduplicated():
    p = ak.Problem("p", _ok_init, _ok_lg, 5, lrs=[1e-1, 1e-3, 1e-1])
    assert p.lrs == (1e-3, 1e-1)
