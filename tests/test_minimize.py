"""adamkit.minimize and the scipy plug-in adamkit.as_scipy_method."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.optimize as so

import adamkit as ak


class Counted:
    """Wraps a function and counts its calls (the ground truth for nfev / njev)."""

    def __init__(self, f, record=True):
        self.f = f
        self.calls = 0
        self.record = record  # off for autograd/jax, whose traced arguments are not plain arrays
        self.args_seen = []

    def __call__(self, x, *args):
        self.calls += 1
        if self.record:
            self.args_seen.append(np.array(x, copy=True))
        return self.f(x, *args)


def _entry(entry, fun, x0, method="adam", **kw):
    """Run through adamkit.minimize or through scipy.optimize.minimize with the plug-in."""
    if entry == "adamkit":
        return ak.minimize(fun, x0, method=method, **kw)
    return so.minimize(fun, x0, method=ak.as_scipy_method(method), **kw)


# --------------------------------------------------------------------------------------------------
# Rosenbrock through both entry points, with exact counts

ROSEN = {  # dimension: (x0, lr); iterations measured: 2-D 3175, 10-D 7986 (gtol 1e-6; BFGS: 32 and 73)
    2: (np.array([-1.2, 1.0]), 0.03),
    10: (np.tile([-1.2, 1.0], 5), 0.01),
}


@pytest.mark.parametrize("entry", ["adamkit", "scipy"])
@pytest.mark.parametrize("dim", [2, 10])
def test_rosenbrock_reaches_minimum_with_exact_counts(entry, dim):
    x0, lr = ROSEN[dim]
    fun, jac = Counted(so.rosen), Counted(so.rosen_der)
    steps = []
    res = _entry(entry, fun, x0.copy(), jac=jac, callback=lambda xk: steps.append(xk),
                 options={"lr": lr, "gtol": 1e-6, "maxiter": 20000})
    assert res.success and res.status == 0, res.message
    assert np.abs(res.x - 1.0).max() <= 1e-4
    assert res.nfev == fun.calls and res.njev == jac.calls
    assert res.nit == len(steps) and res.nfev == res.nit + 1
    assert res.fun == so.rosen(res.x) and np.array_equal(res.jac, so.rosen_der(res.x))
    assert np.abs(res.jac).max() <= 1e-6
    np.testing.assert_array_equal(steps[-1], res.x)
    np.testing.assert_array_equal(fun.args_seen[-1], res.x)


@pytest.mark.parametrize("entry", ["adamkit", "scipy"])
def test_jac_true_counts_each_call_once_in_nfev_and_njev(entry):
    both = Counted(lambda x: (so.rosen(x), so.rosen_der(x)))
    res = _entry(entry, both, np.array([-1.2, 1.0]), jac=True, options={"lr": 0.03, "gtol": 1e-5})
    assert res.success
    assert res.nfev == res.njev == both.calls == res.nit + 1
    assert np.abs(res.x - 1).max() < 1e-3


@pytest.mark.parametrize("method,per_eval,rtol", [("2-point", 1, 1e-6), ("3-point", 2, 1e-9)])
def test_finite_differences_count_every_call_and_match_the_gradient(method, per_eval, rtol):
    x0 = np.array([-1.2, 1.0, 0.5])
    fun = Counted(so.rosen)
    res = ak.minimize(fun, x0, jac=method, options={"lr": 0.01, "maxiter": 7})
    assert res.status == 1 and not res.success and res.nit == 7
    assert res.njev == res.nit + 1
    assert res.nfev == fun.calls == (res.nit + 1) * (1 + per_eval * x0.size)
    np.testing.assert_allclose(res.jac, so.rosen_der(res.x), rtol=rtol)
    # jac=None is 2-point differences, as in scipy
    res0 = ak.minimize(so.rosen, x0, jac=None, options={"maxiter": 0})
    np.testing.assert_allclose(res0.jac, so.rosen_der(x0), rtol=1e-6)


# --------------------------------------------------------------------------------------------------
# OLS and Ridge (course notes: y = 4 + 3x + noise), column vectors as in course code


def ols_problem(n=100, seed=2024):
    rng = np.random.default_rng(seed)
    x = 2 * rng.random((n, 1))
    y = 4 + 3 * x + rng.standard_normal((n, 1))
    X = np.c_[np.ones((n, 1)), x]
    return X, y


def cost_and_grad(beta, X, y, lam):
    """(1/n)||y - X beta||^2 + lam ||beta||^2 and its gradient (2/n) X^T (X beta - y) + 2 lam beta."""
    r = X @ beta - y
    return float((r * r).mean() + lam * (beta * beta).sum()), 2 / len(y) * X.T @ r + 2 * lam * beta


@pytest.mark.parametrize("lam", [0.0, 1e-3])
def test_ols_and_ridge_full_batch_adam_recover_closed_form(lam):
    X, y = ols_problem()
    n = len(y)
    # the minimizer of the cost above; the course notes write inv(X^T X + lam I) X^T y, which matches
    # their gradient only when the penalty is lam/n ||beta||^2
    closed = np.linalg.solve(X.T @ X + n * lam * np.eye(2), X.T @ y)
    for entry in ("adamkit", "scipy"):
        x0 = np.zeros((2, 1)) if entry == "adamkit" else np.zeros(2)
        f = cost_and_grad if entry == "adamkit" else (
            lambda b, X, y, lam: tuple(v if i == 0 else v.ravel()
                                       for i, v in enumerate(cost_and_grad(b.reshape(2, 1), X, y, lam))))
        res = _entry(entry, f, x0, args=(X, y, lam), jac=True, options={"lr": 0.1, "gtol": 1e-9})
        assert res.success, res.message
        assert res.x.shape == x0.shape  # a column vector stays a column vector
        assert np.abs(res.x.reshape(2, 1) - closed).max() <= 1e-6
        assert res.nit < 1500  # measured: 907 (OLS), 902 (Ridge)


def test_gradient_descent_at_the_largest_stable_step_recovers_ols():
    X, y = ols_problem()
    hessian = 2 / len(y) * X.T @ X
    lr = ak.schedules.largest_stable_lr(hessian)
    closed = np.linalg.solve(X.T @ X, X.T @ y)
    res = ak.minimize(cost_and_grad, np.zeros((2, 1)), args=(X, y, 0.0), jac=True, method="sgd",
                      options={"lr": lr, "gtol": 1e-10, "maxiter": 5000})
    assert res.success and np.abs(res.x - closed).max() <= 1e-6
    # beyond 2/lambda_max plain gradient descent diverges: the run ends on non-finite numbers
    with np.errstate(over="ignore", invalid="ignore"):
        bad = ak.minimize(cost_and_grad, np.zeros((2, 1)), args=(X, y, 0.0), jac=True, method="sgd",
                          options={"lr": 2.2 * lr, "maxiter": 5000})
    assert bad.status == 3 and not bad.success and np.isfinite(bad.x).all()


def test_gradient_shape_must_match_x0():
    X, y = ols_problem(20)
    ok = ak.minimize(lambda b: cost_and_grad(b, X, y, 0)[0], np.zeros((2, 1)),
                     jac=lambda b: cost_and_grad(b, X, y, 0)[1].ravel(), options={"maxiter": 3})
    assert ok.jac.shape == (2, 1)  # (2,) for a (2, 1) x0 holds the same vector
    with pytest.raises(ValueError, match=r"jac returned an array of shape \(3,\): expected shape \(2, 1\)"):
        ak.minimize(lambda b: 0.0, np.zeros((2, 1)), jac=lambda b: np.zeros(3))


# --------------------------------------------------------------------------------------------------
# Non-finite values, gradients and iterates


def quad(x):
    return 0.5 * float(x @ x)


def test_nonfinite_value_ends_run_at_last_finite_iterate():
    calls = []

    def fun(x):
        calls.append(x.copy())
        return np.nan if len(calls) == 5 else quad(x)

    res = ak.minimize(fun, np.array([1.0, -2.0]), jac=lambda x: x.copy(), options={"lr": 0.1})
    assert res.status == 3 and not res.success
    assert "iteration 4" in res.message and "fun returned nan" in res.message
    assert res.nit == 4 and res.nfev == 5 and res.njev == 4  # no gradient asked at the NaN point
    np.testing.assert_array_equal(res.x, calls[3])
    assert res.fun == quad(calls[3])


def test_nonfinite_gradient_names_the_entry():
    k = {"n": 0}

    def jac(x):
        k["n"] += 1
        g = x.copy()
        if k["n"] == 3:
            g[1] = np.inf
        return g

    fun = Counted(quad)
    res = ak.minimize(fun, np.array([1.0, -2.0, 3.0]), jac=jac, options={"lr": 0.1})
    assert res.status == 3 and "gradient" in res.message and "index 1" in res.message
    assert "iteration 2" in res.message and res.nit == 2
    np.testing.assert_array_equal(res.x, fun.args_seen[1])
    assert np.isfinite(res.jac).all()


def test_nonfinite_at_x0_and_nonfinite_iterate():
    res = ak.minimize(lambda x: np.inf, np.array([1.0]), jac=lambda x: x)
    assert res.status == 3 and "initial point" in res.message and res.nit == 0
    np.testing.assert_array_equal(res.x, [1.0])
    # SGD with a huge step overflows x itself on the second step
    res = ak.minimize(lambda x: float(x[0]), np.zeros(2), jac=lambda x: np.array([1.0, 0.0]), method="sgd",
                      options={"lr": 1e308})
    assert res.status == 3 and "step 2 made x non-finite" in res.message and res.nit == 2
    np.testing.assert_array_equal(res.x, [-1e308, 0.0])


# --------------------------------------------------------------------------------------------------
# Callbacks


@pytest.mark.parametrize("entry", ["adamkit", "scipy"])
def test_both_callback_styles_and_stop_iteration(entry):
    seen_x, seen_r = [], []

    def old_style(xk):
        seen_x.append(xk)

    def new_style(intermediate_result):
        seen_r.append(intermediate_result)
        if len(seen_r) == 5:
            raise StopIteration

    opts = {"lr": 0.01, "maxiter": 50}
    r1 = _entry(entry, so.rosen, np.array([-1.2, 1.0]), jac=so.rosen_der, callback=old_style, options=opts)
    assert r1.nit == 50 == len(seen_x) and r1.status == 1
    np.testing.assert_array_equal(seen_x[-1], r1.x)
    r2 = _entry(entry, so.rosen, np.array([-1.2, 1.0]), jac=so.rosen_der, callback=new_style, options=opts)
    assert r2.status == 99 and not r2.success and r2.message == "`callback` raised `StopIteration`."
    assert r2.nit == 5 and len(seen_r) == 5
    assert isinstance(seen_r[0], so.OptimizeResult) and seen_r[0].fun == so.rosen(seen_r[0].x)
    np.testing.assert_array_equal(seen_r[-1].x, r2.x)
    np.testing.assert_array_equal(seen_x[4], r2.x)  # same trajectory


def test_callback_already_wrapped_by_scipy_is_called_with_the_result():
    from scipy.optimize._optimize import _wrap_callback

    seen = []
    wrapped = _wrap_callback(lambda xk: seen.append(xk))
    res = ak.minimize(quad, np.array([1.0, 2.0]), jac=lambda x: x.copy(), callback=wrapped, options={"maxiter": 3})
    assert len(seen) == 3 and np.array_equal(seen[-1], res.x)


# --------------------------------------------------------------------------------------------------
# The scipy protocol


def test_scipy_plugin_rejects_bounds_and_constraints_and_warns_on_hess():
    m = ak.as_scipy_method("Adam")
    assert m.__name__ == "adamkit_adam"
    with pytest.raises(ValueError, match="bounds=.*unconstrained"):
        so.minimize(so.rosen, [0.0, 0.0], method=m, bounds=[(0, 1), (0, 1)])
    with pytest.raises(ValueError, match="constraints=.*unconstrained"):
        so.minimize(so.rosen, [0.0, 0.0], method=m, constraints=[{"type": "eq", "fun": lambda x: x[0]}])
    with pytest.warns(RuntimeWarning, match="hess is ignored"):
        res = so.minimize(so.rosen, [0.0, 0.0], jac=so.rosen_der, hess=so.rosen_hess, method=m,
                          options={"lr": 0.03, "maxiter": 10})
    assert res.nit == 10


def test_scipy_tol_sets_gtol_and_scipy_args_pass_through():
    res = so.minimize(lambda x, c: 0.5 * float((x - c) @ (x - c)), [0.0, 0.0], args=(np.array([1.0, 2.0]),),
                      jac=lambda x, c: x - c, method=ak.as_scipy_method("adam"), tol=1e-3,
                      options={"lr": 0.05})
    assert res.success and "gtol=0.001" in res.message and np.abs(res.jac).max() <= 1e-3
    assert np.abs(res.x - [1.0, 2.0]).max() < 1e-2


# --------------------------------------------------------------------------------------------------
# Options, schedules, dtypes


def test_lr_schedule_is_used_step_by_step():
    sched = ak.schedules.exponential(0.5, 0.9)
    res = ak.minimize(quad, np.array([1.0]), jac=lambda x: x.copy(), method="SGD",
                      options={"lr": sched, "maxiter": 6})
    x = 1.0
    for k in range(6):
        x = x - sched(k) * x  # SGD on x^2/2: x <- x - lr_k * x
    assert res.nit == 6 and res.x[0] == x


def test_float32_kept_and_x0_not_modified():
    x0 = np.array([[-1.2], [1.0]], dtype=np.float32)
    before = x0.copy()
    res = ak.minimize(lambda x: so.rosen(x.ravel()), x0, jac=lambda x: so.rosen_der(x.ravel()).reshape(2, 1),
                      options={"lr": 0.03, "maxiter": 20})
    assert res.x.dtype == np.float32 and res.x.shape == (2, 1) and res.jac.dtype == np.float32
    np.testing.assert_array_equal(x0, before)
    res = ak.minimize(quad, [3, 4], jac=lambda x: x, options={"maxiter": 1})  # a list of ints
    assert res.x.dtype == np.float64 and res.x.shape == (2,)


def test_disp_prints_a_summary(capsys):
    res = ak.minimize(quad, np.ones(2), jac=lambda x: x.copy(), options={"maxiter": 4, "disp": True})
    out = capsys.readouterr().out
    assert res.message in out and "Iterations: 4" in out and "Function evaluations: 5" in out


def test_docstring_examples_run():
    import doctest

    import adamkit._clip
    import adamkit._minimize

    for mod in (adamkit._minimize, adamkit._clip):
        result = doctest.testmod(mod)
        assert result.attempted > 0 and result.failed == 0, mod.__name__


def test_maxiter_zero_and_gtol_met_at_x0():
    res = ak.minimize(quad, np.zeros(3), jac=lambda x: x)
    assert res.success and res.nit == 0 and res.nfev == 1
    res = ak.minimize(quad, np.ones(3), jac=lambda x: x, options={"maxiter": 0})
    assert res.status == 1 and res.nit == 0 and res.nfev == 1


# --------------------------------------------------------------------------------------------------
# autograd / jax


def test_autograd_gradient_if_installed():
    anp = pytest.importorskip("autograd.numpy")

    def rosen(x):
        return anp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)

    fun = Counted(rosen, record=False)
    res = ak.minimize(fun, np.array([-1.2, 1.0]), jac="autograd", options={"lr": 0.03, "maxiter": 30})
    ref = ak.minimize(so.rosen, np.array([-1.2, 1.0]), jac=so.rosen_der, options={"lr": 0.03, "maxiter": 30})
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-12)
    assert res.nfev == res.njev == fun.calls == 31


def test_jax_gradient_if_installed():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy

    def rosen(x):
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)

    fun = Counted(rosen, record=False)
    opts = {"lr": 0.03, "maxiter": 30}
    if jax.config.read("jax_enable_x64"):
        res = ak.minimize(fun, np.array([-1.2, 1.0]), jac="jax", options=opts)
        tol = 1e-12
    else:  # float32 inside jax, said once per call
        with pytest.warns(RuntimeWarning, match="jax computes in float32"):
            res = ak.minimize(fun, np.array([-1.2, 1.0]), jac="jax", options=opts)
        tol = 1e-4
    ref = ak.minimize(so.rosen, np.array([-1.2, 1.0]), jac=so.rosen_der, options=opts)
    assert res.x.dtype == np.float64 and res.nfev == res.njev == fun.calls == 31
    np.testing.assert_allclose(res.x, ref.x, rtol=tol)


@pytest.mark.parametrize("package", ["autograd", "jax"])
def test_missing_autodiff_package_gives_clear_error(monkeypatch, package):
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if not installed
    with pytest.raises(ImportError, match=f"jac='{package}' needs the {package} package.*pip install {package}"):
        ak.minimize(quad, np.ones(2), jac=package)


# --------------------------------------------------------------------------------------------------
# Bad input: a clear error naming the argument, and nothing changed

BAD = [
    (dict(fun=3), TypeError, r"fun=3: expected a callable"),
    (dict(x0=np.array([1.0, np.nan])), ValueError, r"x0: expected finite numbers.*index 1"),
    (dict(x0=np.array([])), ValueError, r"x0: expected at least one element"),
    (dict(x0=np.array(["a"])), TypeError, r"x0: expected real numbers"),
    (dict(method="adamm"), ValueError, r"method='adamm'.*sgd, adagrad, rmsprop, adam, adamw"),
    (dict(options={"lrr": 0.1, "maxiters": 3, "lr": 0.1}), ValueError,
     r"unknown option\(s\) \['lrr', 'maxiters'\]; method Adam accepts lr, betas.*maxiter, gtol"),
    (dict(options={"lr": -1.0}), ValueError, r"lr=-1.0"),
    (dict(options={"maxiter": -1}), ValueError, r"maxiter=-1: expected an integer >= 0"),
    (dict(options={"gtol": np.nan}), ValueError, r"gtol=nan"),
    (dict(tol=-1), ValueError, r"tol=-1"),
    (dict(jac="5-point"), ValueError, r"jac='5-point': expected .*'2-point', '3-point'"),
    (dict(callback=5), TypeError, r"callback=5"),
    (dict(fun=lambda x: x * 2.0, jac="2-point"), ValueError, r"fun returned an array of shape \(2,\).*scalar"),
    (dict(fun=lambda x: x * 2.0, jac=lambda x: x), ValueError, r"fun returned an array of shape \(2,\).*scalar"),
    (dict(fun=lambda x: (1.0, x), jac=lambda x: x), ValueError, r"fun returned .*expected a real scalar"),
    (dict(fun=lambda x: 1.0, jac=True), ValueError, r"with jac=True expected a pair"),
    (dict(bounds=[(0, 1), (0, 1)]), ValueError, r"^bounds=\[\(0, 1\), \(0, 1\)\]: adamkit's Adam is an unconstrained"),
    (dict(constraints={"type": "eq", "fun": quad}), ValueError, r"^constraints=.*unconstrained method"),
    (dict(options={"disp": "yes"}), TypeError, r"^disp='yes': expected True or False$"),
    (dict(options={"disp": 2}), TypeError, r"^disp=2: expected True or False$"),
    (dict(jac="2-point", options={"finite_diff_rel_step": 1e-20}), ValueError,
     r"^finite_diff_rel_step=1e-20: the finite-difference step at x\[0\] = 1\.0 rounds to 0 in float64"),
    (dict(jac="3-point", options={"finite_diff_rel_step": 1e-20}), ValueError, r"^finite_diff_rel_step=1e-20: "),
]


def test_arguments_sit_where_scipy_has_them():
    """ak.minimize takes scipy.optimize.minimize's arguments in scipy's order (hess and hessp are
    ignored with a warning, bounds and constraints refused), so a positional call means the same."""
    import inspect
    import scipy.optimize as so

    assert list(inspect.signature(ak.minimize).parameters) == list(inspect.signature(so.minimize).parameters)
    with pytest.warns(RuntimeWarning, match=r"^adamkit's Adam is a first-order method: hess is ignored$"):
        res = ak.minimize(quad, np.array([1.0, 2.0]), (), "adam", lambda x: x.copy(), lambda x: np.eye(2),
                          options={"lr": 0.1, "maxiter": 3})
    assert res.nit == 3


@pytest.mark.parametrize("kwargs,exc,match", BAD, ids=[m for _, _, m in BAD])
def test_bad_input(kwargs, exc, match):
    x0 = np.array([1.0, 2.0])
    call = {"fun": quad, "x0": x0, "jac": lambda x: x.copy(), **kwargs}
    before = np.array(call["x0"], copy=True)
    with pytest.raises(exc, match=match):
        ak.minimize(**call)
    np.testing.assert_array_equal(call["x0"], before)


def test_unknown_scipy_method_name_and_options():
    with pytest.raises(ValueError, match=r"name='nope'.*adam"):
        ak.as_scipy_method("nope")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['momentumm'\]; method SGD accepts lr, momentum"):
        so.minimize(quad, [1.0], jac=lambda x: x, method=ak.as_scipy_method("sgd"), options={"momentumm": 0.9})
