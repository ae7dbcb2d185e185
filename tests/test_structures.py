"""Parameter structures, groups, hyperparameters read every step, and bad parameters or gradients.

Every optimizer of the registry. The independent reference for a structure is the same optimizer run
separately on each leaf as a single array: the update is elementwise, so the bits must agree.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import adamkit as ak
from registry import all_configs, assert_same_tree, entries, snapshot


def _run_alone(info, arrays, grads, **kwargs):
    """Run one optimizer per array (each a single-array problem); return the final arrays."""
    out = []
    for k, a in enumerate(arrays):
        a = a.copy()
        opt = info.cls(a, **kwargs)
        for g in grads:
            opt.step(g[k])
        out.append(a)
    return out


# --------------------------------------------------------------------------------------------------
# Structures


@pytest.mark.parametrize("info", entries())
def test_single_array_and_0d_array(info):
    rng = np.random.default_rng(0)
    gs = rng.standard_normal(5)
    scalar, vector = np.array(0.3), np.array([0.3])
    o0, o1 = info.cls(scalar, lr=0.05), info.cls(vector, lr=0.05)
    assert o0.names == ["params"] and o1.names == ["params"]
    for g in gs:
        o0.step(np.array(g))
        o1.step(np.array([g]))
    assert scalar.shape == () and scalar.tobytes() == vector.tobytes()
    assert all(s.shape == () for s in o0.state["params"].values())
    assert scalar != 0.3


@pytest.mark.parametrize("info", entries())
def test_0d_parameter_accepts_a_python_number_as_gradient(info):
    a, b = np.array(1.5), np.array(1.5)
    oa, ob = info.cls(a, lr=0.1), info.cls(b, lr=0.1)
    for g in (0.25, -2.0, np.float32(0.5)):
        oa.step(g)
        ob.step(np.array(g, dtype=np.float64))
    assert a.tobytes() == b.tobytes() and a != 1.5


@pytest.mark.parametrize("info", entries())
def test_nested_dicts_lists_tuples_with_mixed_dtypes(info):
    rng = np.random.default_rng(1)
    leaves = [rng.standard_normal((2, 3)), rng.standard_normal(3), rng.standard_normal(4),
              rng.standard_normal((2, 2)).astype(np.float32), np.array(0.7)]
    orig = [x.copy() for x in leaves]
    params = {"enc": {"w": leaves[0], "b": leaves[1]}, "layers": [leaves[2], (leaves[3], leaves[4])]}
    opt = info.cls(params, lr=0.05)
    assert opt.names == ["enc.w", "enc.b", "layers[0]", "layers[1][0]", "layers[1][1]"]
    grads = [[rng.standard_normal(x.shape).astype(x.dtype) for x in leaves] for _ in range(4)]
    for k, g in enumerate(grads):
        inner = (g[2], [g[3], g[4]])  # lists and tuples are interchangeable in the gradients
        opt.step({"layers": inner if k % 2 else list(inner), "enc": {"b": g[1], "w": g[0]}})
    expected = _run_alone(info, orig, grads, lr=0.05)
    assert snapshot(leaves) == snapshot(expected)
    assert params["layers"][1][0].dtype == np.float32
    assert all(s.dtype == np.float32 for s in opt.state["layers[1][0]"].values())


@pytest.mark.parametrize("info", entries())
def test_non_contiguous_and_fortran_parameters_are_updated_in_place(info):
    rng = np.random.default_rng(2)
    base = rng.standard_normal((4, 6))
    untouched = base[:, 1::2].copy()
    view = base[:, ::2]  # a strided view: the update must land in ``base``
    fortran = np.asfortranarray(rng.standard_normal((3, 5)))
    orig = [view.copy(), fortran.copy()]
    opt = info.cls([view, fortran], lr=0.05)
    grads = [[rng.standard_normal(view.shape), rng.standard_normal(fortran.shape)] for _ in range(4)]
    for g in grads:
        opt.step(g)
    expected = _run_alone(info, orig, grads, lr=0.05)
    assert view.tobytes() == expected[0].tobytes() and base[:, ::2].tobytes() == expected[0].tobytes()
    assert fortran.tobytes(order="A") == np.asfortranarray(expected[1]).tobytes(order="A")
    assert np.array_equal(base[:, 1::2], untouched)  # the columns in between are not parameters
    assert fortran.flags.f_contiguous


@pytest.mark.parametrize("info", entries())
def test_views_of_one_array_that_do_not_overlap_are_distinct_parameters(info):
    rng = np.random.default_rng(3)
    base = rng.standard_normal(12)
    halves, interleaved = [base[:6], base[6:]], [base[::2], base[1::2]]
    for params in (halves, interleaved):
        orig = [p.copy() for p in params]
        opt = info.cls(params, lr=0.05)
        grads = [[rng.standard_normal(6), rng.standard_normal(6)] for _ in range(3)]
        for g in grads:
            opt.step(g)
        assert snapshot(params) == snapshot(_run_alone(info, orig, grads, lr=0.05))


@pytest.mark.parametrize("info, kwargs", all_configs())
def test_gradient_that_is_the_parameter_itself(info, kwargs):
    """f = |p|^2/2 has gradient p: passing the parameter array as its own gradient is the same as a copy."""
    for layout in ("contiguous", "strided"):
        a = np.linspace(-1.0, 2.0, 8)
        params = [a if layout == "contiguous" else np.linspace(-1.0, 2.0, 16)[::2] for _ in range(2)]
        aliased, copied = params
        oa, oc = info.cls(aliased, lr=0.05, **kwargs), info.cls(copied, lr=0.05, **kwargs)
        for _ in range(4):
            oa.step(aliased)
            oc.step(copied.copy())
        assert aliased.tobytes() == copied.tobytes(), layout


# --------------------------------------------------------------------------------------------------
# Parameter groups and hyperparameters re-read every step


@pytest.mark.parametrize("info", entries())
def test_groups_with_per_group_hyperparameters(info):
    rng = np.random.default_rng(4)
    w1, w2, w3 = rng.standard_normal(3), rng.standard_normal((2, 2)), rng.standard_normal(2)
    orig = [w1.copy(), w2.copy(), w3.copy()]
    special = {**info.configs[1], "lr": 0.05}  # the second configuration of the registry, in group 0 only
    opt = info.cls([{"params": {"w": w1}, **special}, {"params": [w2, w3]}], lr=0.01)
    assert opt.names == ["[0].w", "[1][0]", "[1][1]"]
    assert opt.param_groups[0]["lr"] == 0.05 and opt.param_groups[1]["lr"] == 0.01
    for k, v in info.cls.defaults.items():  # a group without a value takes the constructor's
        if k != "lr":
            assert opt.param_groups[1][k] == v
    grads = [[rng.standard_normal(3), rng.standard_normal((2, 2)), rng.standard_normal(2)] for _ in range(4)]
    for g in grads:
        opt.step([{"w": g[0]}, [g[1], g[2]]])
    alone0 = _run_alone(info, orig[:1], [g[:1] for g in grads], **special)
    alone1 = _run_alone(info, orig[1:], [g[1:] for g in grads], lr=0.01)
    assert snapshot([w1, w2, w3]) == snapshot(alone0 + alone1)


@pytest.mark.parametrize("info", entries())
def test_changing_lr_in_param_groups_takes_effect(info):
    rng = np.random.default_rng(5)
    grads = [rng.standard_normal(4) for _ in range(6)]
    p0 = rng.standard_normal(4)

    changed = p0.copy()
    opt = info.cls(changed, lr=0.1)
    for k, g in enumerate(grads):
        if k == 3:
            opt.param_groups[0]["lr"] = 0.02
        opt.step(g)
    assert opt.learning_rate() == 0.02

    # the same as a schedule giving 0.1 for the first three steps, then 0.02
    scheduled = p0.copy()
    opt = info.cls(scheduled, lr=lambda count: 0.1 if count < 3 else 0.02)
    for g in grads:
        opt.step(g)
    assert changed.tobytes() == scheduled.tobytes()

    # and against the registry's hand rule with that lr
    hp = info.hyperparameters({})
    p, states = [float(x) for x in p0], [{} for _ in p0]
    for t, g in enumerate(grads, start=1):
        hp["lr"] = 0.1 if t <= 3 else 0.02
        p = [info.rule(pi, float(gi), s, hp, t) for pi, gi, s in zip(p, g, states)]
    np.testing.assert_allclose(changed, p, rtol=1e-13, atol=1e-13)

    # which is not what never changing gives
    unchanged = p0.copy()
    opt = info.cls(unchanged, lr=0.1)
    for g in grads:
        opt.step(g)
    assert not np.allclose(unchanged, changed, rtol=1e-6, atol=0)


@pytest.mark.parametrize("info", entries())
def test_changing_one_groups_lr_leaves_the_other_alone(info):
    rng = np.random.default_rng(10)
    grads = [[[rng.standard_normal(3)], [rng.standard_normal(2)]] for _ in range(5)]
    a0, b0 = rng.standard_normal(3), rng.standard_normal(2)
    a, b = a0.copy(), b0.copy()
    opt = info.cls([{"params": [a]}, {"params": [b], "lr": 0.1}], lr=0.05)
    for k, g in enumerate(grads):
        if k == 2:
            opt.param_groups[1]["lr"] = 0.01
        opt.step(g)
    assert opt.learning_rate(0) == 0.05 and opt.learning_rate(1) == 0.01
    alone_a = _run_alone(info, [a0], [g[0] for g in grads], lr=0.05)
    alone_b = _run_alone(info, [b0], [g[1] for g in grads], lr=lambda count: 0.1 if count < 2 else 0.01)
    assert snapshot([a, b]) == snapshot(alone_a + alone_b)


@pytest.mark.parametrize("info", entries())
def test_lr_schedule_from_adamkit_schedules(info):
    rng = np.random.default_rng(6)
    grads = [rng.standard_normal(3) for _ in range(5)]
    p0 = rng.standard_normal(3)
    sched = ak.schedules.step_decay(0.1, step_size=2, gamma=0.5)

    with_schedule = p0.copy()
    opt = info.cls(with_schedule, lr=sched)
    by_hand = p0.copy()
    manual = info.cls(by_hand, lr=0.1)
    for k, g in enumerate(grads):
        lr = 0.1 * 0.5 ** (k // 2)  # 0.1, 0.1, 0.05, 0.05, 0.025
        assert opt.learning_rate() == lr and opt.learning_rate(0) == lr
        manual.param_groups[0]["lr"] = lr
        opt.step(g)
        manual.step(g)
    assert opt.param_groups[0]["lr"] is sched
    assert with_schedule.tobytes() == by_hand.tobytes()


@pytest.mark.parametrize("info", entries())
def test_schedule_returning_a_bad_value_fails_the_step_and_changes_nothing(info):
    w = np.array([1.0, 2.0])
    opt = info.cls(w, lr=lambda count: 0.01 if count < 2 else -1.0)
    opt.step(np.ones(2))
    opt.step(np.ones(2))
    sd, before = opt.state_dict(), snapshot(w)
    with pytest.raises(ValueError, match=r"lr schedule .* returned -1\.0 at step count 2: expected a finite number >= 0"):
        opt.step(np.ones(2))
    assert snapshot(w) == before and opt.step_count == 2
    assert_same_tree(opt.state_dict()["state"], sd["state"])


# --------------------------------------------------------------------------------------------------
# Bad parameters


def _readonly():
    a = np.zeros(3)
    a.flags.writeable = False
    return a


_SHARED = np.zeros(10)
_W = np.zeros(3)

BAD_PARAMS = [
    pytest.param(lambda: np.arange(3), TypeError,
                 r"^parameter 'params': expected a float32 or float64 array, got dtype int64$", id="integer"),
    pytest.param(lambda: np.zeros(3, np.complex128), TypeError,
                 r"^parameter 'params': expected a float32 or float64 array, got dtype complex128$", id="complex"),
    pytest.param(lambda: {"w": np.zeros(3, np.float16)}, TypeError,
                 r"^parameter 'w': expected a float32 or float64 array, got dtype float16$", id="float16"),
    pytest.param(lambda: [np.zeros(2), _readonly()], ValueError,
                 r"^parameter '\[1\]': expected a writable array, got a read-only one$", id="read-only"),
    pytest.param(lambda: [np.zeros(2), 1.0], TypeError,
                 r"^parameter '\[1\]': expected a writable float32 or float64 numpy array, got float$", id="python-float"),
    pytest.param(lambda: [], ValueError, r"^params: expected at least one array, got an empty list$", id="empty-list"),
    pytest.param(lambda: {}, ValueError, r"^params: expected at least one array, got an empty dict$", id="empty-dict"),
    pytest.param(lambda: [{"params": [np.zeros(2)]}, {"params": []}], ValueError,
                 r"^params\[1\]\['params'\]: expected at least one array, got an empty list$", id="empty-group"),
    pytest.param(lambda: [_W, _W], ValueError,
                 r"^parameters '\[0\]' and '\[1\]': the same array was passed twice; each parameter must be a distinct array$",
                 id="same-array-twice"),
    pytest.param(lambda: {"a": _W, "b": {"c": np.ones(2), "d": _W}}, ValueError,
                 r"^parameters 'a' and 'b\.d': the same array was passed twice", id="same-array-nested"),
    pytest.param(lambda: [{"params": [_W]}, {"params": {"v": _W}}], ValueError,
                 r"^parameters '\[0\]\[0\]' and '\[1\]\.v': the same array was passed twice", id="same-array-two-groups"),
    pytest.param(lambda: [_SHARED[:6], _SHARED[4:]], ValueError,
                 r"^parameters '\[0\]' and '\[1\]': they share memory; each parameter must be a distinct array$",
                 id="overlapping-views"),
    pytest.param(lambda: [_SHARED, _SHARED.reshape(2, 5)[1]], ValueError,
                 r"^parameters '\[0\]' and '\[1\]': they share memory", id="view-of-another-parameter"),
    pytest.param(lambda: [{"params": [np.zeros(2)], "lrr": 0.1}], ValueError,
                 r"^params\[0\]: unknown hyperparameter\(s\) \['lrr'\]", id="unknown-group-hyperparameter"),
]


@pytest.mark.parametrize("make, exc, match", BAD_PARAMS)
@pytest.mark.parametrize("info", entries())
def test_bad_parameters(info, make, exc, match):
    params = make()
    leaves = [x for x in _all_arrays(params)]
    before = snapshot(leaves)
    with pytest.raises(exc, match=match):
        info.cls(params, lr=0.01)
    assert snapshot(leaves) == before


def _all_arrays(x):
    if isinstance(x, np.ndarray):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _all_arrays(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _all_arrays(v)


# --------------------------------------------------------------------------------------------------
# Bad gradients: raise before anything changes

BAD_GRADS = [
    pytest.param(lambda: {"w": np.ones((2, 3))}, ValueError,
                 r"^grads: expected a dict with keys \['b', 'w'\] \(mirroring the parameters\), got keys \['w'\]$",
                 id="missing-key"),
    pytest.param(lambda: {"w": np.ones((2, 3)), "b": np.ones(()), "c": np.ones(())}, ValueError,
                 r"^grads: expected a dict with keys \['b', 'w'\] .*got keys \['b', 'c', 'w'\]$", id="extra-key"),
    pytest.param(lambda: {"w": np.ones((2, 3)), "x": np.ones(())}, ValueError,
                 r"^grads: expected a dict with keys \['b', 'w'\]", id="renamed-key"),
    pytest.param(lambda: [np.ones((2, 3)), np.ones(())], ValueError,
                 r"^grads: expected a dict with keys \['w', 'b'\] \(mirroring the parameters\), got a list$", id="list-for-dict"),
    pytest.param(lambda: {"w": np.ones((3, 2)), "b": np.ones(())}, ValueError,
                 r"^gradient for parameter 'w': expected shape \(2, 3\), got shape \(3, 2\)$", id="shape"),
    pytest.param(lambda: {"w": np.ones((2, 3)), "b": np.ones(1)}, ValueError,
                 r"^gradient for parameter 'b': expected shape \(\), got shape \(1,\)$", id="shape-0d"),
    pytest.param(lambda: {"w": 1.0, "b": np.ones(())}, ValueError,
                 r"^gradient for parameter 'w': expected shape \(2, 3\), got shape \(\)$", id="number-for-array"),
    pytest.param(lambda: {"w": np.ones((2, 3), np.int64), "b": np.ones(())}, TypeError,
                 r"^gradient for parameter 'w': expected a real floating-point array, got dtype int64$", id="integer"),
    pytest.param(lambda: {"w": np.ones((2, 3), np.complex128), "b": np.ones(())}, TypeError,
                 r"^gradient for parameter 'w': expected a real floating-point array, got dtype complex128$", id="complex"),
    pytest.param(lambda: {"w": np.ones((2, 3)), "b": np.ones((), bool)}, TypeError,
                 r"^gradient for parameter 'b': expected a real floating-point array, got dtype bool$", id="bool"),
    pytest.param(lambda: {"w": np.ones((2, 3)), "b": True}, TypeError,
                 r"^gradient for parameter 'b': expected a float array of shape \(\), got bool$", id="python-bool"),
    pytest.param(lambda: {"w": "0.1", "b": np.ones(())}, TypeError,
                 r"^gradient for parameter 'w': expected a float array of shape \(2, 3\), got str$", id="string"),
    pytest.param(lambda: {"w": None, "b": np.ones(())}, TypeError,
                 r"^gradient for parameter 'w': expected a float array of shape \(2, 3\), got NoneType$", id="none"),
    pytest.param(lambda: {"w": [[1.0] * 3] * 2, "b": np.ones(())}, (TypeError, ValueError),
                 r"grads?.*'?w'?.*(expected a float array of shape \(2, 3\), got list|expected an array)",
                 id="nested-list-for-array"),
]


def _problem(info, dtype=np.float64):
    rng = np.random.default_rng(8)
    params = {"w": rng.standard_normal((2, 3)).astype(dtype), "b": np.asarray(rng.standard_normal(), dtype)}
    opt = info.cls(params, lr=0.01, **info.configs[1])
    opt.step({"w": rng.standard_normal((2, 3)), "b": np.asarray(rng.standard_normal())})
    return params, opt


@pytest.mark.parametrize("make, exc, match", BAD_GRADS)
@pytest.mark.parametrize("info", entries())
def test_bad_gradients(info, make, exc, match):
    params, opt = _problem(info)
    sd, before = opt.state_dict(), snapshot(params)
    with pytest.raises(exc, match=match):
        opt.step(make())
    assert snapshot(params) == before
    assert_same_tree(opt.state_dict(), sd)


@pytest.mark.parametrize("info", entries())
def test_bad_gradients_with_groups(info):
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal(3), rng.standard_normal(2)
    opt = info.cls([{"params": [a]}, {"params": {"b": b}, "lr": 0.1}], lr=0.01)
    opt.step([[np.ones(3)], {"b": np.ones(2)}])
    sd, before = opt.state_dict(), snapshot([a, b])
    cases = [
        ([[np.ones(3)]], ValueError,
         r"^grads: expected a list with one entry per parameter group \(2\), got a list of 1 entries$"),
        ({"b": np.ones(2)}, ValueError, r"^grads: expected a list with one entry per parameter group \(2\), got a dict$"),
        # the first group's gradient is fine, the second's is not: the first group is not updated either
        ([[np.ones(3)], {"b": np.ones(3)}], ValueError,
         r"^gradient for parameter '\[1\]\.b': expected shape \(2,\), got shape \(3,\)$"),
        ([[np.ones(3)], {"c": np.ones(2)}], ValueError, r"^grads.*: expected a dict with keys \['b'\].*got keys \['c'\]$"),
        ([[np.ones(3)], {"b": np.array([1.0, np.nan])}], FloatingPointError,
         r"^non-finite gradient for parameter '\[1\]\.b' at step 2"),
    ]
    for grads, exc, match in cases:
        with pytest.raises(exc, match=match):
            opt.step(grads)
        assert snapshot([a, b]) == before
        assert_same_tree(opt.state_dict(), sd)
    assert opt.step_count == 1


def test_structure_error_in_a_group_names_the_group():
    a, b = np.zeros(2), np.zeros(2)
    opt = ak.Adam([{"params": {"b": a}}, {"params": {"b": b}}])
    with pytest.raises(ValueError, match=r"^grads\[1\]: expected a dict with keys \['b'\]"):
        opt.step([{"b": np.ones(2)}, {"c": np.ones(2)}])


def test_hyperparameter_list_changed_in_place_is_reread():
    w = np.zeros(2)
    opt = ak.Adam(w, lr=0.1, betas=[0.9, 0.999])
    opt.step(np.ones(2))
    opt.param_groups[0]["betas"][0] = 1.5
    with pytest.raises(ValueError, match=r"^betas\[0\]=1\.5: expected a finite number in \[0\.0, 1\.0\)$"):
        opt.step(np.ones(2))


def test_failing_step_after_switching_amsgrad_on_changes_nothing():
    w = np.zeros(2)
    opt = ak.Adam(w, lr=0.1)
    opt.step(np.ones(2))
    sd = opt.state_dict()
    opt.param_groups[0]["amsgrad"] = True
    with pytest.raises(ValueError, match=r"expected shape \(2,\), got shape \(3,\)"):
        opt.step(np.ones(3))
    assert_same_tree(opt.state_dict()["state"], sd["state"])


@pytest.mark.parametrize("params, name", [
    ({"a.b": np.zeros(2), "a": {"b": np.ones(2)}}, "a.b"),
    ({0: np.zeros(1), "0": np.ones(1)}, "0"),
    ({"x": [np.zeros(1)], "x[0]": np.ones(1)}, "x[0]"),
])
def test_two_parameters_with_one_name_are_refused(params, name):
    """Leaf names key the state in state_dict and checkpoints: two leaves with one name would share
    (and lose) state on save and load."""
    with pytest.raises(ValueError, match=rf"^params: two parameters are both named {re.escape(repr(name))} .*rename a key"):
        ak.Adam(params)
