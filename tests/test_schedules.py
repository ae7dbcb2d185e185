"""Learning-rate schedules: values by hand, validation, config round trip, largest_stable_lr, and schedules
saved and restored with the optimizer state."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import adamkit as ak
from adamkit import schedules as S
from registry import assert_same_tree, entries, snapshot

# --------------------------------------------------------------------------------------------------
# Values by hand (count = number of steps already applied: 0 on the first step)

HAND = [
    pytest.param(S.constant(0.1), {0: 0.1, 1: 0.1, 10_000: 0.1}, id="constant"),
    pytest.param(S.step_decay(1.0, step_size=10, gamma=0.5), {0: 1.0, 9: 1.0, 10: 0.5, 19: 0.5, 20: 0.25, 35: 0.125},
                 id="step_decay"),
    pytest.param(S.step_decay(0.3, step_size=1), {0: 0.3, 1: 0.3 * 0.1, 2: 0.3 * 0.1 * 0.1}, id="step_decay-default-gamma"),
    pytest.param(S.exponential(2.0, 0.5), {0: 2.0, 1: 1.0, 3: 0.25, 10: 2.0 / 1024}, id="exponential"),
    # warm-up lr*(count+1)/2 for counts 0, 1; then cosine over counts 2..10 (8 steps) from 1.0 down to 0.1
    pytest.param(S.cosine(1.0, total_steps=10, warmup_steps=2, final_lr=0.1),
                 {0: 0.5, 1: 1.0, 2: 1.0, 4: 0.1 + 0.45 * (1 + math.sqrt(0.5)), 6: 0.55, 10: 0.1, 11: 0.1, 1000: 0.1},
                 id="cosine-warmup"),
    pytest.param(S.cosine(1.0, total_steps=4), {0: 1.0, 1: 0.5 * (1 + math.sqrt(0.5)), 2: 0.5, 4: 0.0, 9: 0.0},
                 id="cosine"),
    pytest.param(S.inverse_sqrt(1.0), {0: 1.0, 3: 0.5, 99: 0.1, 9999: 0.01}, id="inverse_sqrt"),
    pytest.param(S.inverse_time(), {0: 5 / 50, 50: 0.05, 450: 0.01}, id="inverse_time-defaults"),
    pytest.param(S.inverse_time(t0=1.0, t1=1.0), {0: 1.0, 1: 0.5, 3: 0.25}, id="inverse_time"),
]


@pytest.mark.parametrize("schedule, values", HAND)
def test_values_by_hand(schedule, values):
    for count, lr in values.items():
        assert schedule(count) == pytest.approx(lr, rel=1e-15, abs=1e-16), count
    assert isinstance(schedule(0), float)


# --------------------------------------------------------------------------------------------------
# Validation

ERRORS = [
    (lambda: S.constant(-0.1), ValueError, r"^lr=-0\.1: expected a finite number >= 0$"),
    (lambda: S.constant(float("nan")), ValueError, r"^lr=nan: expected a finite number >= 0$"),
    (lambda: S.constant("0.1"), TypeError, r"^lr='0\.1': expected a number$"),
    (lambda: S.constant(True), TypeError, r"^lr=True: expected a number$"),
    (lambda: S.step_decay(0.1, 0), ValueError, r"^step_size=0: expected a finite number > 0$"),
    (lambda: S.step_decay(0.1, 2.5), ValueError, r"^step_size=2\.5: expected an integer$"),
    (lambda: S.step_decay(0.1, float("inf")), ValueError, r"^step_size=inf: expected a finite number > 0$"),
    (lambda: S.step_decay(0.1, 10, gamma=1.5), ValueError, r"^gamma=1\.5: expected a number in \[0, 1\]$"),
    (lambda: S.exponential(0.1, -0.5), ValueError, r"^gamma=-0\.5: expected a finite number >= 0$"),
    (lambda: S.exponential(0.1, None), TypeError, r"^gamma=None: expected a number$"),
    (lambda: S.cosine(0.1, 0), ValueError, r"^total_steps=0: expected a finite number > 0$"),
    (lambda: S.cosine(0.1, 10, warmup_steps=11), ValueError, r"^warmup_steps=11: expected at most total_steps=10$"),
    (lambda: S.cosine(0.1, 10, warmup_steps=1.5), ValueError, r"^warmup_steps=1\.5: expected an integer$"),
    (lambda: S.cosine(0.1, 10, final_lr=-1.0), ValueError, r"^final_lr=-1\.0: expected a finite number >= 0$"),
    (lambda: S.inverse_sqrt(-1), ValueError, r"^lr=-1: expected a finite number >= 0$"),
    (lambda: S.inverse_time(t1=0), ValueError, r"^t1=0: expected a finite number > 0$"),
    (lambda: S.inverse_time(t0=-5), ValueError, r"^t0=-5: expected a finite number >= 0$"),
    (lambda: S.from_config({"schedule": "linear", "lr": 0.1}), ValueError,
     r"^schedule config .*: expected a dict with 'schedule' one of \['constant', 'cosine', 'exponential', "
     r"'inverse_sqrt', 'inverse_time', 'step_decay'\]$"),
    (lambda: S.from_config("constant"), ValueError, r"^schedule config 'constant': expected a dict"),
    (lambda: S.from_config({"schedule": "constant", "lr": 0.1, "gamma": 0.5}), ValueError,
     r"^schedule config .*: .*unexpected keyword argument 'gamma'"),
    (lambda: S.from_config({"schedule": "constant", "lr": -1.0}), ValueError, r"^lr=-1\.0: expected a finite number >= 0$"),
]


@pytest.mark.parametrize("make, exc, match", ERRORS, ids=[m for _, _, m in ERRORS])
def test_validation(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


# --------------------------------------------------------------------------------------------------
# Config round trip

ALL = [p.values[0] for p in HAND] + [S.cosine(0.02, total_steps=7, warmup_steps=7), S.constant(np.float32(0.5))]


@pytest.mark.parametrize("schedule", ALL, ids=repr)
def test_config_round_trip(schedule):
    config = schedule.config()
    assert config["schedule"] == schedule.kind
    again = S.from_config(json.loads(json.dumps(config)))  # plain JSON data
    assert type(again) is type(schedule) and again == schedule and hash(again) == hash(schedule)
    assert again.config() == config
    assert all(again(k) == schedule(k) for k in range(60))
    assert repr(again) == repr(schedule)


def test_schedules_differ_by_kind_and_parameters():
    assert S.constant(0.1) != S.constant(0.2)
    assert S.exponential(0.1, 0.5) != S.step_decay(0.1, 1, 0.5)
    assert S.constant(0.1) != 0.1


# --------------------------------------------------------------------------------------------------
# largest_stable_lr (the course notes' fixed step 1/lambda_max)


@pytest.mark.parametrize("hessian, lam_max", [
    ([[2.0, 1.0], [1.0, 2.0]], 3.0),  # eigenvalues 1 and 3 (eigenvectors (1,-1), (1,1))
    (np.diag([4.0, 1.0, 0.5]), 4.0),
    ([[1.0, 1.0], [1.0, 1.0]], 2.0),  # singular (eigenvalues 0, 2): still fine
    ([[5.0]], 5.0),
    # OLS with X = [[1, 0], [0, 2], [0, 0]] (n = 3): H = 2/3 X^T X = diag(2/3, 8/3)
    (2 / 3 * np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]).T @ np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]), 8 / 3),
])
def test_largest_stable_lr_by_hand(hessian, lam_max):
    assert S.largest_stable_lr(hessian) == pytest.approx(1 / lam_max, rel=1e-14)


def test_largest_stable_lr_is_stable_and_twice_it_is_not():
    """Gradient descent on x^T H x / 2 contracts for lr < 2/lambda_max and diverges beyond."""
    h = np.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])
    lr = S.largest_stable_lr(h)
    lam = float(np.max(np.linalg.eigvalsh(h)))
    assert lr == pytest.approx(1 / lam, rel=1e-14)
    for factor, converges in ((1.0, True), (1.9, True), (2.1, False)):
        x = np.ones(3)
        opt = ak.SGD(x, lr=factor * lr)
        for _ in range(300):
            opt.step(h @ x)
        assert (np.linalg.norm(x) < 1e-6) == converges, factor


@pytest.mark.parametrize("hessian, match", [
    (np.ones((2, 3)), r"^hessian: expected a square 2-D matrix, got shape \(2, 3\)$"),
    (np.ones(3), r"^hessian: expected a square 2-D matrix, got shape \(3,\)$"),
    (np.zeros((0, 0)), r"^hessian: expected a square 2-D matrix, got shape \(0, 0\)$"),
    ([[1.0, np.nan], [np.nan, 1.0]], r"^hessian: expected finite entries$"),
    ([[1.0, 2.0], [0.0, 1.0]], r"^hessian: expected a symmetric matrix$"),
    (np.zeros((2, 2)), r"^hessian: largest eigenvalue is 0\.0; expected a positive one$"),
    (-np.eye(2), r"^hessian: largest eigenvalue is -1\.0; expected a positive one$"),
])
def test_largest_stable_lr_errors(hessian, match):
    with pytest.raises(ValueError, match=match):
        S.largest_stable_lr(hessian)


# --------------------------------------------------------------------------------------------------
# Schedules saved and restored with the optimizer state


def _run(opt, grads):
    for g in grads:
        opt.step(g)


@pytest.mark.parametrize("via", ["file", "state_dict"])
@pytest.mark.parametrize("schedule", [p.values[0] for p in HAND], ids=[p.id for p in HAND])
def test_schedule_survives_save_and_load(schedule, via, tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal(4)
    grads = [rng.standard_normal(4) for _ in range(8)]
    opt = ak.Adam(w, lr=schedule)
    _run(opt, grads[:3])
    copy = w.copy()
    if via == "file":
        opt.save(tmp_path / "opt.npz")
    else:
        sd = opt.state_dict()
        assert sd["param_groups"][0]["lr"] == schedule.config()  # plain data
    _run(opt, grads[3:])

    fresh = ak.Adam(copy, lr=0.5)  # a plain lr: loading brings the schedule back
    if via == "file":
        fresh.load(tmp_path / "opt.npz")
    else:
        fresh.load_state_dict(sd)
    restored = fresh.param_groups[0]["lr"]
    assert isinstance(restored, S.Schedule) and restored == schedule
    assert fresh.learning_rate() == schedule(3)  # it continues from the saved step count
    _run(fresh, grads[3:])
    assert copy.tobytes() == w.tobytes()


@pytest.mark.parametrize("info", entries())
def test_per_group_schedules_survive_save_and_load(info, tmp_path):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(3), rng.standard_normal(2)
    cos, step = S.cosine(0.05, total_steps=6, warmup_steps=2), S.step_decay(0.02, step_size=2)
    opt = info.cls([{"params": [a], "lr": cos}, {"params": [b], "lr": step}])
    grads = [[[rng.standard_normal(3)], [rng.standard_normal(2)]] for _ in range(6)]
    _run(opt, grads[:2])
    opt.save(tmp_path / "opt.npz")
    copies = [a.copy(), b.copy()]
    _run(opt, grads[2:])
    fresh = info.cls([{"params": [copies[0]]}, {"params": [copies[1]]}], lr=0.1)
    fresh.load(tmp_path / "opt.npz")
    assert fresh.param_groups[0]["lr"] == cos and fresh.param_groups[1]["lr"] == step
    assert fresh.learning_rate(0) == cos(2) and fresh.learning_rate(1) == step(2)
    _run(fresh, grads[2:])
    assert snapshot(copies) == snapshot([a, b])


def warmup(count):
    """A custom schedule: any callable of the step count."""
    return 0.01 * min(1.0, (count + 1) / 4)


def test_custom_callable_is_kept_when_the_new_optimizer_has_it(tmp_path):
    """A custom callable cannot be written to a file: its name is saved, and the optimizer loading the state
    must have been constructed with the callable (it is kept)."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal(3)
    grads = [rng.standard_normal(3) for _ in range(6)]
    opt = ak.RMSprop(w, lr=warmup)
    _run(opt, grads[:2])
    assert opt.state_dict()["param_groups"][0]["lr"] == {"schedule": "callable", "name": "warmup"}
    opt.save(tmp_path / "opt.npz")
    copy = w.copy()
    _run(opt, grads[2:])
    fresh = ak.RMSprop(copy, lr=warmup)
    fresh.load(tmp_path / "opt.npz")
    assert fresh.param_groups[0]["lr"] is warmup and fresh.learning_rate() == warmup(2)
    _run(fresh, grads[2:])
    assert copy.tobytes() == w.tobytes()


@pytest.mark.parametrize("current", [0.01, S.constant(0.01)], ids=["float", "Schedule"])
def test_custom_callable_cannot_be_restored_without_it(current, tmp_path):
    w = np.ones(3)
    opt = ak.Adam(w, lr=warmup)
    opt.step(np.ones(3))
    opt.save(tmp_path / "opt.npz")
    target_w = np.full(3, 2.0)
    target = ak.Adam(target_w, lr=current)
    target.step(np.ones(3))
    sd, before = target.state_dict(), snapshot(target_w)
    match = (r"^state_dict lr: saved with a custom schedule 'warmup' that cannot be restored from a file; "
             r"construct the optimizer with that callable as lr$")
    for load in (lambda: target.load(tmp_path / "opt.npz"), lambda: target.load_state_dict(opt.state_dict())):
        with pytest.raises(ValueError, match=match):
            load()
        assert snapshot(target_w) == before
        assert_same_tree(target.state_dict(), sd)
        assert target.param_groups[0]["lr"] is current


def test_lr_schedule_is_called_with_the_step_count():
    seen = []

    def record(count):
        seen.append(count)
        return 0.01

    opt = ak.SGD(np.zeros(2), lr=record, nonfinite="skip")
    opt.step(np.ones(2))
    opt.step(np.ones(2))
    opt.step(np.array([np.nan, 1.0]))  # a skipped step does not advance the count
    opt.step(np.ones(2))
    assert seen[0] == 0 and seen[1] == 1 and seen[-1] == 2 and opt.step_count == 3
