"""The same checks over every optimizer of the registry, every configuration and both dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from registry import (DTYPES, all_configs, all_errors, assert_same_tree, entries, gradients,
                      snapshot)

# --------------------------------------------------------------------------------------------------
# Convergence

A = np.array([1.0, 2.0, 4.0])  # curvatures of the parabola f(p) = sum(A * (p - C)**2) / 2
C = np.array([1.0, -2.0, 0.5])
PARABOLA_STEPS = 1000


def _parabola_target(info, kwargs):
    """The minimiser the optimizer should reach, and how close it must get.

    Coupled L2 weight decay adds wd*|p|^2/2 to f, moving the minimiser to A*C/(A+wd). Decoupled decay
    in an adaptive method leaves the fixed point at C (the normalised step only balances wd*p when the
    gradient is of order eps), but the last digits come slowly: a looser tolerance.
    """
    hp = info.hyperparameters(kwargs)
    if info.decoupled(kwargs):
        return C, 2e-2
    return A * C / (A + hp["weight_decay"]), 1e-6


def _steps_to_reach(opt, p, grad, target, tol, max_steps):
    """Step until every coordinate is within ``tol`` of ``target``; the number of steps, or None.

    Stopping at the first hit is what a user's loop does. (Adaptive methods with a constant lr need not
    stay there: RMSprop's denominator decays once the gradient vanishes, and it is kicked out again.)
    """
    for k in range(1, max_steps + 1):
        opt.step(grad(p))
        assert np.isfinite(p).all(), f"diverged at step {k}"
        if np.abs(p - target).max() <= tol:
            return k
    return None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("info, kwargs", all_configs())
def test_converges_on_parabola(info, kwargs, dtype):
    p = np.zeros(3, dtype)
    opt = info.cls(p, lr=info.parabola_lr, **kwargs)
    sign = -1.0 if info.hyperparameters(kwargs)["maximize"] else 1.0  # maximize -f instead
    target, tol = _parabola_target(info, kwargs)
    if dtype == np.float32:
        tol = max(tol, 1e-5)
    k = _steps_to_reach(opt, p, lambda p: (sign * A * (p - C)).astype(dtype), target, tol, PARABOLA_STEPS)
    assert k is not None, f"not within {tol} of {target} after {PARABOLA_STEPS} steps: {p}"
    assert p.dtype == dtype and opt.step_count == k


def rosenbrock_grad(p):
    x, y = float(p[0]), float(p[1])
    return np.array([-2.0 * (1.0 - x) - 400.0 * x * (y - x * x), 200.0 * (y - x * x)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("info", entries())
def test_converges_on_rosenbrock(info, dtype):
    setting = info.rosenbrock
    p = np.array([-1.0, 1.0], dtype)
    opt = info.cls(p, lr=setting.lr, **setting.kwargs)
    # from (-1, 1) the path runs the whole banana valley: distance 2 to the minimum
    k = _steps_to_reach(opt, p, lambda p: rosenbrock_grad(p).astype(dtype), np.ones(2), setting.tol, setting.steps)
    assert k is not None, f"not within {setting.tol} of (1, 1) after {setting.steps} steps: {p}"
    assert p.dtype == dtype


# --------------------------------------------------------------------------------------------------
# The update against the registry's hand rule (Python floats, written from CONVENTIONS.md)


def _run_hand_rule(info, kwargs, lr, p0, grads):
    hp = info.hyperparameters(kwargs, lr=lr)
    ps = [float(x) for x in p0.ravel()]
    states = [{} for _ in ps]
    out = []
    for t, g in enumerate(grads, start=1):
        ps = [info.rule(p, float(gi), s, hp, t) for p, gi, s in zip(ps, g.ravel(), states)]
        out.append(np.array(ps).reshape(p0.shape))
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("info, kwargs", all_configs())
def test_matches_hand_rule(info, kwargs, dtype):
    """Eight steps (RAdam switches to its adaptive step at the sixth) on random gradients."""
    rng = np.random.default_rng(7)
    p = rng.standard_normal((2, 3)).astype(dtype)
    grads = gradients(rng, p.shape, 8, dtype)
    lr = 0.01
    expected = _run_hand_rule(info, kwargs, lr, p.copy(), grads)
    opt = info.cls(p, lr=lr, **kwargs)
    tol = 1e-13 if dtype == np.float64 else 1e-6
    for t, (g, want) in enumerate(zip(grads, expected), start=1):
        opt.step(g)
        # the error is relative to the size of the values and of the steps taken
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(p, want, rtol=tol, atol=tol * scale, err_msg=f"step {t}")


# --------------------------------------------------------------------------------------------------
# dtypes, in-place identity, state slots and shapes


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("info, kwargs", all_configs())
def test_keeps_dtypes_identity_and_state_shapes(info, kwargs, dtype):
    rng = np.random.default_rng(1)
    other = np.float64 if dtype == np.float32 else np.float32
    w = rng.standard_normal((3, 4)).astype(dtype)
    b = np.array(0.5, dtype)  # 0-d
    u = rng.standard_normal(5).astype(other)  # a second dtype in the same structure
    params = {"w": w, "b": b, "u": u}
    before = {k: v.copy() for k, v in params.items()}
    opt = info.cls(params, lr=1e-2, **kwargs)
    expected_slots = info.slots(info.hyperparameters(kwargs))

    def check_state():
        assert set(opt.state) == {"w", "b", "u"}
        for name, arr in params.items():
            slots = opt.state[name]
            assert set(slots) == expected_slots, name
            for slot, s in slots.items():
                assert s.shape == arr.shape and s.dtype == arr.dtype, (name, slot)
                assert not np.shares_memory(s, arr), (name, slot)

    check_state()
    for k in range(3):
        # gradients of another float dtype are accepted and applied in the parameter's dtype
        gdt = [np.float16, np.float32, np.float64][k]
        opt.step({"w": rng.standard_normal(w.shape).astype(gdt), "b": np.asarray(1.0, gdt),
                  "u": rng.standard_normal(u.shape).astype(gdt)})
        check_state()
    assert opt.params is params
    assert params["w"] is w and params["b"] is b and params["u"] is u
    for name, arr in params.items():
        assert arr.dtype == before[name].dtype and arr.shape == before[name].shape
        assert arr.flags.writeable
        assert not np.array_equal(arr, before[name]), f"{name} was not updated in place"
    assert opt.step_count == 3


# --------------------------------------------------------------------------------------------------
# Error cases: each raises its message and changes nothing


@pytest.mark.parametrize("info, case", all_errors())
def test_error_case_at_construction(info, case):
    w = np.array([1.0, -2.0])
    before = snapshot(w)
    with pytest.raises(case.exc, match=case.match):
        info.cls(w, **case.kwargs)
    assert snapshot(w) == before


def _group_errors():
    """The error cases made only of hyperparameters, which can also come from a parameter group."""
    return [p for p in all_errors()
            if set(p.values[1].kwargs) <= set(p.values[0].cls.defaults)]


@pytest.mark.parametrize("info, case", _group_errors())
def test_error_case_in_parameter_group(info, case):
    w, v = np.array([1.0, -2.0]), np.array([3.0])
    before = snapshot([w, v])
    with pytest.raises(case.exc, match=case.match):
        info.cls([{"params": [w]}, {"params": [v], **case.kwargs}])
    assert snapshot([w, v]) == before


@pytest.mark.parametrize("info, case", _group_errors())
def test_error_case_set_between_steps(info, case):
    """Hyperparameters are re-read every step: a bad value set in param_groups fails the step, which changes nothing."""
    rng = np.random.default_rng(3)
    params = {"w": rng.standard_normal(4), "b": rng.standard_normal(())}
    opt = info.cls(params, lr=1e-2)
    for _ in range(2):
        opt.step({"w": rng.standard_normal(4), "b": rng.standard_normal(())})
    good = dict(opt.param_groups[0])
    sd, before = opt.state_dict(), snapshot(params)
    opt.param_groups[0].update(case.kwargs)
    with pytest.raises(case.exc, match=case.match):
        opt.step({"w": np.ones(4), "b": np.ones(())})
    assert snapshot(params) == before
    assert_same_tree(opt.state_dict()["state"], sd["state"])
    assert opt.state_dict()["group_state"] == sd["group_state"]
    assert opt.step_count == 2
    # putting the good values back, the optimizer goes on
    opt.param_groups[0].update({k: good[k] for k in case.kwargs})
    opt.step({"w": np.ones(4), "b": np.ones(())})
    assert opt.step_count == 3


# --------------------------------------------------------------------------------------------------
# Non-finite gradients


def _two_leaf_problem(info, dtype, nonfinite, kwargs=None):
    rng = np.random.default_rng(11)
    params = {"a": rng.standard_normal(3).astype(dtype), "b": rng.standard_normal((2, 2)).astype(dtype)}
    opt = info.cls(params, lr=1e-2, nonfinite=nonfinite, **(kwargs or {}))
    grads = [{"a": rng.standard_normal(3).astype(dtype), "b": rng.standard_normal((2, 2)).astype(dtype)}
             for _ in range(4)]
    return params, opt, grads


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("info", entries())
def test_nonfinite_raise_names_parameter_and_step(info, dtype, bad):
    params, opt, grads = _two_leaf_problem(info, dtype, "raise")
    opt.step(grads[0])
    opt.step(grads[1])
    sd, before = opt.state_dict(), snapshot(params)
    g = {k: v.copy() for k, v in grads[2].items()}
    g["b"][1, 0] = bad
    with pytest.raises(FloatingPointError, match=r"^non-finite gradient for parameter 'b' at step 3; nothing was changed"):
        opt.step(g)
    assert snapshot(params) == before
    assert_same_tree(opt.state_dict(), sd)
    assert opt.step_count == 2 and opt.skipped_steps == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("info", entries())
def test_nonfinite_skip_skips_the_whole_step(info, dtype):
    params, opt, grads = _two_leaf_problem(info, dtype, "skip")
    ref_params, ref, _ = _two_leaf_problem(info, dtype, "raise")
    opt.step(grads[0])
    ref.step(grads[0])
    sd, before = opt.state_dict(), snapshot(params)
    for where in ("a", "b"):
        g = {k: v.copy() for k, v in grads[1].items()}
        g[where].flat[0] = np.nan
        opt.step(g)  # "a" is fine but is not updated either: the whole step is skipped
        assert snapshot(params) == before
    assert opt.skipped_steps == 2 and opt.step_count == 1
    assert_same_tree({k: v for k, v in opt.state_dict().items() if k != "skipped_steps"},
                     {k: v for k, v in sd.items() if k != "skipped_steps"})
    # then it goes on exactly as if the bad steps had never come
    for g in grads[1:]:
        opt.step(g)
        ref.step(g)
    assert snapshot(params) == snapshot(ref_params)
    assert opt.step_count == 4 and opt.skipped_steps == 2


@pytest.mark.parametrize("info", entries())
def test_nonfinite_ignore_does_no_check(info):
    params, opt, grads = _two_leaf_problem(info, np.float64, "ignore")
    g = {k: v.copy() for k, v in grads[0].items()}
    g["b"][0, 1] = np.nan
    opt.step(g)  # torch's behaviour: the NaN goes through, into that coordinate only
    assert np.isnan(params["b"][0, 1])
    mask = np.ones((2, 2), bool)
    mask[0, 1] = False
    assert np.isfinite(params["b"][mask]).all() and np.isfinite(params["a"]).all()
    assert opt.step_count == 1 and opt.skipped_steps == 0


# --------------------------------------------------------------------------------------------------
# Save / load round trip: continues bit for bit


def _structure(rng, dtype):
    return {"w": rng.standard_normal((3, 2)).astype(dtype), "b": np.asarray(rng.standard_normal(), dtype),
            "layers": [rng.standard_normal(4).astype(dtype)]}


def _grads_like(rng, params, dtype):
    return {"w": (rng.standard_normal((3, 2)) * 10.0 ** rng.uniform(-3, 2, (3, 2))).astype(dtype),
            "b": np.asarray(rng.standard_normal(), dtype), "layers": [rng.standard_normal(4).astype(dtype)]}


def _copy_structure(params):
    return {"w": params["w"].copy(), "b": params["b"].copy(), "layers": [params["layers"][0].copy()]}


def _leaves(params):
    return [params["w"], params["b"], params["layers"][0]]


@pytest.mark.parametrize("via", ["file", "state_dict"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("info, kwargs", all_configs())
def test_save_load_continues_bit_for_bit(info, kwargs, dtype, via, tmp_path):
    rng = np.random.default_rng(5)
    params = _structure(rng, dtype)
    grads = [_grads_like(rng, params, dtype) for _ in range(7)]
    opt = info.cls(params, lr=0.01, **kwargs)
    for g in grads[:3]:
        opt.step(g)
    copies = _copy_structure(params)
    if via == "file":
        path = opt.save(tmp_path / "opt.npz")
        assert path.is_file()
    else:
        sd = opt.state_dict()
    for g in grads[3:]:  # never stopping
        opt.step(g)

    # a fresh optimizer over copies of the arrays, made with another lr: loading restores the saved one
    fresh = info.cls(copies, lr=0.5, **kwargs)
    if via == "file":
        fresh.load(tmp_path / "opt.npz")
    else:
        fresh.load_state_dict(sd)
    assert fresh.step_count == 3 and fresh.param_groups[0]["lr"] == 0.01
    for g in grads[3:]:
        fresh.step(g)
    assert snapshot(_leaves(copies)) == snapshot(_leaves(params))
    assert_same_tree(fresh.state_dict(), opt.state_dict())


@pytest.mark.parametrize("info", entries())
def test_state_dict_is_a_plain_snapshot(info):
    rng = np.random.default_rng(2)
    w = rng.standard_normal(3)
    opt = info.cls({"w": w}, lr=1e-2)
    opt.step({"w": rng.standard_normal(3)})
    sd = opt.state_dict()

    def plain(x):
        if isinstance(x, dict):
            return all(isinstance(k, str) and plain(v) for k, v in x.items())
        if isinstance(x, list):
            return all(plain(v) for v in x)
        return isinstance(x, (np.ndarray, str, int, float, bool)) or x is None

    assert plain(sd)
    assert sd["optimizer"] == info.name and sd["step_count"] == 1
    assert set(sd["state"]) == {"w"}
    kept = {k: v.copy() for k, v in sd["state"]["w"].items()}
    opt.step({"w": rng.standard_normal(3)})  # stepping does not change the snapshot
    assert_same_tree(sd["state"]["w"], kept)
    for v in sd["state"]["w"].values():  # nor does writing into it change the optimizer
        v[...] = 123.0
    assert all(not np.any(s == 123.0) for s in opt.state["w"].values())


@pytest.mark.parametrize("info", [e for e in entries() if "eps" in e.values[0].cls.defaults])
def test_an_eps_too_small_for_the_dtype_is_refused(info):
    """eps = 1e-50 is > 0 but 0 in float32 (0/0 as with eps = 0), and eps = 1e-39 is nonzero there but
    1/eps is not finite (NAdam's 1/(sqrt(v) + eps) times a zero gradient: NaN); float64 keeps both.
    Refused at construction, at the step after a change, and in a state_dict."""
    w = np.ones(3, np.float32)
    expect = r"out of range for the float32 parameters; expected a number from 2\.94e-39 \(1/eps must be finite\)"
    for eps in (1e-50, 1e-39):
        with pytest.raises(ValueError, match=rf"^eps={eps!r}: {expect}"):
            info.cls(w, eps=eps)
    opt = info.cls(w, eps=1e-6)
    opt.param_groups[0]["eps"] = 1e-39
    before = opt.state_dict()
    with pytest.raises(ValueError, match=rf"^eps=1e-39: {expect}"):
        opt.step(np.ones(3, np.float32))
    assert_same_tree(opt.state_dict(), before)
    assert w.tolist() == [1.0] * 3
    opt.param_groups[0]["eps"] = 1e-6
    before = opt.state_dict()
    sd = opt.state_dict()
    sd["param_groups"][0]["eps"] = 1e-39
    with pytest.raises(ValueError, match=rf"^eps=1e-39: {expect}"):
        opt.load_state_dict(sd)
    assert_same_tree(opt.state_dict(), before)
    for eps in (1e-39, 1e-300):  # float64: fine, and no NaN where the gradient is 0
        p = np.ones(3)
        o = info.cls(p, eps=eps)
        for _ in range(8):
            o.step(np.array([0.0, 1.0, -1.0]))
        assert np.isfinite(p).all()
