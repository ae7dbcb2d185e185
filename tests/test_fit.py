"""adamkit.fit: the mini-batch loop, its history, checkpoints, resume, Ctrl-C, clipping, accumulation."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

import adamkit as ak
from adamkit._checkpoint import load_npz


def ols_data(n=100, seed=2024):
    """The course notes' problem: y = 4 + 3x + noise, design matrix with a column of ones."""
    rng = np.random.default_rng(seed)
    x = 2 * rng.random((n, 1))
    y = 4 + 3 * x + rng.standard_normal((n, 1))
    return np.c_[np.ones((n, 1)), x], y


def ridge_loss(lam=0.0):
    """(1/m)||y - X b||^2 + lam ||b||^2 on a mini-batch of m rows, and its gradient."""
    def loss_and_grad(b, batch):
        Xb, yb = batch[0], batch[1]
        r = Xb @ b - yb
        return float((r * r).mean() + lam * (b * b).sum()), 2 / len(yb) * Xb.T @ r + 2 * lam * b
    return loss_and_grad


def closed_form(X, y, lam):
    # the minimizer of the loss above (the course notes' inv(X^T X + lam I) X^T y is the minimizer when
    # the penalty is lam/n ||b||^2; we keep the gradient and solve its normal equations exactly)
    return np.linalg.solve(X.T @ X + len(y) * lam * np.eye(X.shape[1]), X.T @ y)


# --------------------------------------------------------------------------------------------------
# OLS and Ridge


@pytest.mark.parametrize("lam", [0.0, 1e-3])
def test_full_batch_adam_recovers_closed_form_to_1e6(lam):
    X, y = ols_data()
    b = np.zeros((2, 1))
    hist = ak.fit(ridge_loss(lam), ak.Adam(b, lr=0.1), (X, y), batch_size=len(y), epochs=1500)
    assert np.abs(b - closed_form(X, y, lam)).max() <= 1e-6  # measured 1e-11 after 1000 steps
    assert len(hist.loss) == 1500 and hist.stop_reason == "epochs"


@pytest.mark.parametrize("lam", [0.0, 1e-3])
def test_mini_batch_adam_recovers_closed_form_to_stated_tolerance(lam):
    # batch 10 of 100 rows, 200 epochs, cosine decay of lr from 0.05 to 0: error 1.0e-3 .. 1.6e-3 over
    # seeds 0..5 (the noise of the mini-batch gradients limits it); stated tolerance 5e-3
    X, y = ols_data()
    b = np.zeros((2, 1))
    ak.fit(ridge_loss(lam), ak.Adam(b, lr=ak.schedules.cosine(0.05, total_steps=2000)), (X, y),
           batch_size=10, epochs=200, seed=3)
    assert np.abs(b - closed_form(X, y, lam)).max() <= 5e-3


def test_course_notes_sgd_with_inverse_time_schedule():
    # the notes' SGD: lr = t0 / (t + t1), t0=5, t1=50; batch 10, 200 epochs: error measured 2.2e-3
    X, y = ols_data()
    b = np.zeros((2, 1))
    sched = ak.schedules.inverse_time(5, 50)
    hist = ak.fit(ridge_loss(), ak.SGD(b, lr=sched), (X, y), batch_size=10, epochs=200)
    assert np.abs(b - closed_form(X, y, 0.0)).max() <= 1e-2
    assert hist.lr[:3] == [5 / 50, 5 / 51, 5 / 52] and hist.lr[-1] == 5 / (1999 + 50)


# --------------------------------------------------------------------------------------------------
# Batches, shuffling, history


def recording_loss(seen):
    lg = ridge_loss()

    def loss_and_grad(b, batch):
        seen.append(batch[2].copy())  # the row indices of the batch
        return lg(b, batch)
    return loss_and_grad


def test_epochs_are_seeded_permutations_from_epoch_batches():
    X, y = ols_data(23)
    idx = np.arange(23)
    seen = []
    ak.fit(recording_loss(seen), ak.SGD(np.zeros((2, 1)), lr=0.01), (X, y, idx), batch_size=5, epochs=3, seed=7)
    assert [len(s) for s in seen] == [5, 5, 5, 5, 3] * 3
    epochs = [np.concatenate(seen[5 * e:5 * e + 5]) for e in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(23))
    assert not np.array_equal(epochs[0], epochs[1])
    rng = np.random.default_rng(7)
    expected = [i for _ in range(3) for i in ak.epoch_batches(rng, 23, 5)]
    assert all(np.array_equal(a, b) for a, b in zip(seen, expected))
    seen2 = []
    ak.fit(recording_loss(seen2), ak.SGD(np.zeros((2, 1)), lr=0.01), (X, y, idx), batch_size=5, epochs=1, seed=8)
    assert not np.array_equal(np.concatenate(seen2), epochs[0])
    seen3 = []
    ak.fit(recording_loss(seen3), ak.SGD(np.zeros((2, 1)), lr=0.01), (X, y, idx), batch_size=5, epochs=1,
           shuffle=False, drop_last=True)
    assert np.array_equal(np.concatenate(seen3), np.arange(20))


def test_history_records_loss_lr_norm_and_epoch_means():
    X, y = ols_data(25)
    grads = []
    lg = ridge_loss()

    def loss_and_grad(b, batch):
        loss, g = lg(b, batch)
        grads.append((loss, len(batch[1]), np.linalg.norm(g)))
        return loss, g

    sched = ak.schedules.exponential(0.05, 0.9)
    hist = ak.fit(loss_and_grad, ak.Adam(np.zeros((2, 1)), lr=sched), (X, y), batch_size=10, epochs=2)
    assert hist.steps == 6 and hist.epochs == 2 and len(hist.time) == 6
    assert hist.loss == [g[0] for g in grads]
    np.testing.assert_allclose(hist.grad_norm, [g[2] for g in grads], rtol=1e-12)
    assert hist.lr == [sched(k) for k in range(6)]
    for e in range(2):
        part = grads[3 * e:3 * e + 3]
        expect = sum(l * m for l, m, _ in part) / 25  # batches of 10, 10, 5: weighted by rows
        assert hist.epoch_loss[e] == pytest.approx(expect, rel=1e-14)
    assert all(a <= b for a, b in zip(hist.time, hist.time[1:]))
    assert len(hist.epoch_time) == 2 and hist.val_metric == []


def test_single_array_data_and_validation_metric():
    rng = np.random.default_rng(0)
    data = rng.standard_normal((40, 3)) + 2.0
    w = np.zeros(3)

    def loss_and_grad(w, batch):  # mean squared distance to the rows: minimum at the mean row
        d = w - batch
        return float((d * d).sum(1).mean()), 2 * d.mean(0)

    val = rng.standard_normal((10, 3)) + 2.0
    hist = ak.fit(loss_and_grad, ak.Adam(w, lr=0.1), data, batch_size=8, epochs=30,
                  validation_data=val, metric=lambda w, v: float(np.abs(w - v.mean(0)).max()))
    assert len(hist.val_metric) == 30
    assert hist.val_metric[-1] == float(np.abs(w - val.mean(0)).max())
    # without a metric the validation value is the loss of loss_and_grad on the whole set
    w2 = np.zeros(3)
    h2 = ak.fit(loss_and_grad, ak.Adam(w2, lr=0.1), data, batch_size=8, epochs=2, validation_data=val)
    assert h2.val_metric[-1] == loss_and_grad(w2, val)[0]


def test_early_stopping_with_patience():
    values = iter([5.0, 4.0, 3.0, 3.5, 2.9999, 3.7, 3.8, 1.0, 1.0])
    w = np.zeros(1)
    hist = ak.fit(lambda w, b: (0.0, np.zeros(1)), ak.SGD(w), np.zeros((4, 1)), batch_size=2, epochs=9,
                  validation_data=np.zeros((1, 1)), metric=lambda w, v: next(values), patience=3,
                  min_delta=1e-3)
    # epoch 3 is best (3.0); 3.5, 2.9999 (not better by more than min_delta), 3.7: three bad epochs
    assert hist.stop_reason == "early_stopping" and hist.stopped_early
    assert hist.epochs == 6 and hist.best_epoch == 3 and hist.best_metric == 3.0
    assert hist.val_metric == [5.0, 4.0, 3.0, 3.5, 2.9999, 3.7]


def test_early_stopped_run_stays_stopped_on_resume(tmp_path):
    values = [3.0, 1.0, 2.0, 2.0, 0.5]
    kw = dict(batch_size=2, epochs=5, validation_data=np.zeros((1, 1)), patience=2, checkpoint=tmp_path / "es.npz")
    metric = iter(values)
    h = ak.fit(lambda w, b: (0.0, np.zeros(1)), ak.SGD(np.zeros(1)), np.zeros((4, 1)),
               metric=lambda w, v: next(metric), **kw)
    assert h.stopped_early and h.epochs == 4 and h.best_epoch == 2
    lg = Calls(lambda w, b: (0.0, np.zeros(1)))
    h2 = ak.fit(lg, ak.SGD(np.zeros(1)), np.zeros((4, 1)), metric=lambda w, v: 0.0, resume=True, **kw)
    assert h2.stopped_early and h2.epochs == 4 and lg.n == 0 and h2.val_metric == values[:4]


def test_docstring_example_runs():
    import doctest

    import adamkit._fit

    result = doctest.testmod(adamkit._fit)
    assert result.attempted > 0 and result.failed == 0


def test_callback_after_each_epoch_and_stop_iteration():
    calls = []

    def callback(history):
        calls.append(history.epochs)
        if history.epochs == 2:
            raise StopIteration

    hist = ak.fit(lambda w, b: (0.0, np.zeros(1)), ak.SGD(np.zeros(1)), np.zeros((4, 1)), batch_size=2,
                  epochs=5, callback=callback)
    assert calls == [1, 2] and hist.stop_reason == "callback" and hist.epochs == 2 and hist.steps == 4


# --------------------------------------------------------------------------------------------------
# Clipping, accumulation, per-epoch reset


def test_gradient_clipping_by_global_norm():
    p = {"w": np.zeros(2), "b": np.zeros(1)}
    g = {"w": np.array([3.0, 0.0]), "b": np.array([4.0])}  # global norm 5
    hist = ak.fit(lambda p, b: (1.0, g), ak.SGD(p, lr=1.0), np.zeros((1, 1)), batch_size=1, epochs=1,
                  clip_norm=1.0)
    scale = 1.0 / (5.0 + 1e-6)  # torch's clip_grad_norm_ coefficient
    np.testing.assert_allclose(p["w"], [-3.0 * scale, 0.0], rtol=1e-15)
    np.testing.assert_allclose(p["b"], [-4.0 * scale], rtol=1e-15)
    assert hist.grad_norm == [5.0]  # recorded before clipping
    # below the threshold nothing changes (the same arrays come back)
    same, n = ak.clip_by_global_norm(g, 10.0)
    assert same is g and n == 5.0


@pytest.mark.parametrize("tree, exc, match", [
    (np.array([3 + 4j]), TypeError, r"^tree: expected a real array \(float or integer\), got dtype complex128$"),
    (None, TypeError, r"^tree: expected a real array, got NoneType$"),
    ({"a": "x"}, TypeError, r"^tree\.a: expected a real array, got str$"),
    ({"a": [np.ones(2), None]}, TypeError, r"^tree\.a\[1\]: expected a real array, got NoneType$"),
    ([], ValueError, r"^tree: expected at least one array, got a list without arrays$"),
])
def test_clipping_refuses_what_has_no_real_norm(tree, exc, match):
    """A complex gradient's norm would be taken of its real part (and the clipped leaf could exceed
    max_norm); None or a string has no norm at all."""
    for call in (lambda: ak.global_norm(tree), lambda: ak.clip_by_global_norm(tree, 1.0)):
        with pytest.raises(exc, match=match):
            call()


def test_clip_by_global_norm_matches_torch_and_survives_overflow():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    tensors = [torch.zeros_like(torch.from_numpy(a), requires_grad=True) for a in grads]
    for t, a in zip(tensors, grads):
        t.grad = torch.from_numpy(a.copy())
    total = torch.nn.utils.clip_grad_norm_(tensors, 0.5)
    clipped, norm = ak.clip_by_global_norm(grads, 0.5)
    assert norm == pytest.approx(float(total), rel=1e-15)
    for c, t in zip(clipped, tensors):
        np.testing.assert_allclose(c, t.grad.numpy(), rtol=1e-15)
    big = [np.full(4, 1e300)]  # the squares overflow float64; the norm does not
    assert ak.global_norm(big) == pytest.approx(2e300)
    inf = [np.array([np.inf, 1.0])]
    out, n = ak.clip_by_global_norm(inf, 1.0)
    assert n == np.inf and out is inf  # not scaled into NaN


def test_accumulation_equals_one_larger_batch():
    X, y = ols_data(60)
    b1, b2 = np.zeros((2, 1)), np.zeros((2, 1))
    h1 = ak.fit(ridge_loss(), ak.Adam(b1, lr=0.05), (X, y), batch_size=10, epochs=3, accumulate=3, shuffle=False)
    h2 = ak.fit(ridge_loss(), ak.Adam(b2, lr=0.05), (X, y), batch_size=30, epochs=3, shuffle=False)
    assert h1.steps == h2.steps == 6
    np.testing.assert_allclose(b1, b2, rtol=1e-13)
    np.testing.assert_allclose(h1.loss, h2.loss, rtol=1e-13)
    # 5 batches of 10 and 1 of 5 with accumulate=4: steps of 4 batches (40 rows) and 2 batches (15 rows)
    X, y = ols_data(55)
    b3, b4 = np.zeros((2, 1)), np.zeros((2, 1))
    h3 = ak.fit(ridge_loss(), ak.SGD(b3, lr=0.05), (X, y), batch_size=10, epochs=1, accumulate=4, shuffle=False)
    o4 = ak.SGD(b4, lr=0.05)
    o4.step(ridge_loss()(b4, (X[:40], y[:40]))[1])
    o4.step(ridge_loss()(b4, (X[40:], y[40:]))[1])
    assert h3.steps == 2
    np.testing.assert_allclose(b3, b4, rtol=1e-13)


def test_accumulation_adds_gradients_by_key_and_refuses_another_structure():
    """Mini-batch gradients are added leaf by leaf by name: a dict whose keys come in another order adds
    up as the same dict; a dict with other keys is refused before any step."""
    X = np.arange(8.0).reshape(8, 1)
    calls = []

    def lg(p, batch):
        calls.append(len(calls))
        g = {"a": np.ones(2), "b": np.zeros(2)}
        return 0.0, (g if len(calls) % 2 else {"b": g["b"], "a": g["a"]})

    p = {"a": np.zeros(2), "b": np.zeros(2)}
    ak.fit(lg, ak.SGD(p, lr=1.0), X, batch_size=4, epochs=1, accumulate=2, shuffle=False)
    assert p["a"].tolist() == [-1.0, -1.0] and p["b"].tolist() == [0.0, 0.0]

    def other_keys(p, batch):
        calls.append(len(calls))
        return 0.0, ({"a": np.ones(2), "b": np.ones(2)} if len(calls) % 2 else {"x": np.ones(2), "y": np.ones(2)})

    calls.clear()
    p = {"a": np.zeros(2), "b": np.zeros(2)}
    with pytest.raises(ValueError, match=r"^loss_and_grad's grads for mini-batch 2 of 2 \(accumulate\), against "
                                         r"those for the first: expected a dict with keys \['a', 'b'\]"):
        ak.fit(other_keys, ak.SGD(p, lr=1.0), X, batch_size=4, epochs=1, accumulate=2, shuffle=False)
    assert not p["a"].any() and not p["b"].any()


@pytest.mark.parametrize("reset", [False, True])
def test_reset_state_each_epoch_equals_manual_loop(reset):
    X, y = ols_data(30)
    b = np.zeros((2, 1))
    ak.fit(ridge_loss(), ak.Adam(b, lr=0.05), (X, y), batch_size=8, epochs=3, seed=5, reset_state_each_epoch=reset)
    m = np.zeros((2, 1))
    opt = ak.Adam(m, lr=0.05)
    rng = np.random.default_rng(5)
    lg = ridge_loss()
    for epoch in range(3):
        if reset and epoch > 0:
            opt.reset_state()
        for idx in ak.epoch_batches(rng, 30, 8):
            opt.step(lg(m, (X[idx], y[idx]))[1])
    assert np.array_equal(b, m)  # bit for bit
    other = np.zeros((2, 1))
    ak.fit(ridge_loss(), ak.Adam(other, lr=0.05), (X, y), batch_size=8, epochs=3, seed=5,
           reset_state_each_epoch=not reset)
    assert not np.array_equal(b, other)  # the flag matters


# --------------------------------------------------------------------------------------------------
# Checkpoints, resume, Ctrl-C

SETTINGS = dict(batch_size=7, epochs=4, seed=11, accumulate=2, clip_norm=5.0, checkpoint_every=3,
                reset_state_each_epoch=True)


def make_run(tmp_path, name="ckpt.npz"):
    """A run with everything that must survive a resume: schedule, momentum state, accumulation, clipping."""
    X, y = ols_data(40)
    params = {"w": np.zeros((1, 1)), "b": np.zeros((1, 1), dtype=np.float32)}
    opt = ak.Adam(params, lr=ak.schedules.cosine(0.1, total_steps=50, warmup_steps=5), amsgrad=True)

    def loss_and_grad(p, batch):
        Xb, yb = batch
        r = p["b"] + Xb[:, 1:] * p["w"] - yb
        return float((r * r).mean()), {"w": 2 * (Xb[:, 1:] * r).mean(0, keepdims=True),
                                       "b": 2 * r.mean(0, keepdims=True)}

    return params, opt, loss_and_grad, (X, y), tmp_path / name


def interrupt_at(fn, k):
    """fn, raising KeyboardInterrupt (a simulated Ctrl-C) on its k-th call."""
    count = {"n": 0}

    def wrapped(*a):
        count["n"] += 1
        if count["n"] == k:
            raise KeyboardInterrupt
        return fn(*a)
    return wrapped


class Calls:
    """Counts the calls of loss_and_grad (a resumed run must not redo completed work)."""

    def __init__(self, fn):
        self.fn, self.n = fn, 0

    def __call__(self, *a):
        self.n += 1
        return self.fn(*a)


def calls_left(path, epochs):
    """loss_and_grad calls still to make after the checkpoint: 6 batches + 1 validation per epoch."""
    run = load_npz(path)[1]["run"]
    return epochs * 7 - (run["epoch"] * 7 + run["batch"])


def reference_run(tmp_path):
    params, opt, lg, data, path = make_run(tmp_path, "reference.npz")
    hist = ak.fit(lg, opt, data, validation_data=data, checkpoint=path, **SETTINGS)
    return params, opt, hist


def assert_same_run(p1, o1, h1, p2, o2, h2):
    for k in p1:
        assert p1[k].tobytes() == p2[k].tobytes() and p1[k].dtype == p2[k].dtype
    s1, s2 = o1.state_dict(), o2.state_dict()
    assert s1["step_count"] == s2["step_count"] and s1["group_state"] == s2["group_state"]
    for name in s1["state"]:
        for slot in s1["state"][name]:
            assert s1["state"][name][slot].tobytes() == s2["state"][name][slot].tobytes()
    for f in ("loss", "lr", "grad_norm", "epoch_loss", "val_metric"):
        assert getattr(h1, f) == getattr(h2, f), f
    assert (h1.steps, h1.epochs) == (h2.steps, h2.epochs)


# 40 rows / batch 7 = 6 batches per epoch; accumulate 2: 3 steps per epoch. Calls per epoch: 6 + 1 (validation).
@pytest.mark.parametrize("k", [4, 7, 10, 26])  # mid-accumulation, validation of epoch 1, epoch 2, last epoch
def test_resume_after_interrupt_is_bit_identical(tmp_path, k):
    p_ref, o_ref, h_ref = reference_run(tmp_path)
    params, opt, lg, data, path = make_run(tmp_path, "run.npz")
    h1 = ak.fit(interrupt_at(lg, k), opt, data, validation_data=data, checkpoint=path, **SETTINGS)
    assert h1.interrupted and h1.checkpoint == str(path)
    arrays, meta = load_npz(path)  # a valid checkpoint
    assert meta["kind"] == "fit" and meta["run"]["step"] == h1.steps
    # a new process: fresh parameters and optimizer, resume from the file
    params2, opt2, lg2, data2, _ = make_run(tmp_path, "run.npz")
    expected_calls = calls_left(path, 4)
    assert expected_calls < 28
    lg2 = Calls(lg2)
    h2 = ak.fit(lg2, opt2, data2, validation_data=data2, checkpoint=path, resume=True, **SETTINGS)
    assert h2.stop_reason == "epochs" and lg2.n == expected_calls
    assert_same_run(p_ref, o_ref, h_ref, params2, opt2, h2)


def test_interrupt_twice_and_extend_epochs(tmp_path):
    p_ref, o_ref, h_ref = reference_run(tmp_path)
    params, opt, lg, data, path = make_run(tmp_path, "run.npz")
    ak.fit(interrupt_at(lg, 5), opt, data, validation_data=data, checkpoint=path, **SETTINGS)
    params, opt, lg, data, _ = make_run(tmp_path, "run.npz")
    h = ak.fit(interrupt_at(lg, 9), opt, data, validation_data=data, checkpoint=path, resume=True, **SETTINGS)
    assert h.interrupted
    # resume with fewer epochs first (2 of 4), then extend to 4
    params, opt, lg, data, _ = make_run(tmp_path, "run.npz")
    expected, lg = calls_left(path, 2), Calls(lg)
    h = ak.fit(lg, opt, data, validation_data=data, checkpoint=path, resume=True, **{**SETTINGS, "epochs": 2})
    assert h.epochs == 2 and h.stop_reason == "epochs" and lg.n == expected < 14
    params, opt, lg, data, _ = make_run(tmp_path, "run.npz")
    lg = Calls(lg)
    h = ak.fit(lg, opt, data, validation_data=data, checkpoint=path, resume=True, **SETTINGS)
    assert lg.n == 14
    assert_same_run(p_ref, o_ref, h_ref, params, opt, h)


def test_ctrl_c_from_callback_and_real_sigint(tmp_path):
    p_ref, o_ref, h_ref = reference_run(tmp_path)
    params, opt, lg, data, path = make_run(tmp_path, "cb.npz")
    seen = []

    def callback(history):
        seen.append(history.epochs)
        if history.epochs == 2:
            raise KeyboardInterrupt

    h = ak.fit(lg, opt, data, validation_data=data, checkpoint=path, callback=callback, **SETTINGS)
    assert h.interrupted and h.epochs == 2 and load_npz(path)[1]["run"]["epoch"] == 2
    params, opt, lg, data, _ = make_run(tmp_path, "cb.npz")
    lg = Calls(lg)
    h = ak.fit(lg, opt, data, validation_data=data, checkpoint=path, resume=True, **SETTINGS)
    assert lg.n == 14
    assert_same_run(p_ref, o_ref, h_ref, params, opt, h)

    # a real SIGINT while loss_and_grad runs
    params, opt, lg, data, path = make_run(tmp_path, "sig.npz")
    count = {"n": 0}

    def lg_sig(p, batch):
        count["n"] += 1
        if count["n"] == 8:
            os.kill(os.getpid(), signal.SIGINT)
        return lg(p, batch)

    h = ak.fit(lg_sig, opt, data, validation_data=data, checkpoint=path, **SETTINGS)
    assert h.interrupted and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    params, opt, lg, data, _ = make_run(tmp_path, "sig.npz")
    expected, lg = calls_left(path, 4), Calls(lg)
    h = ak.fit(lg, opt, data, validation_data=data, checkpoint=path, resume=True, **SETTINGS)
    assert lg.n == expected < 28
    assert_same_run(p_ref, o_ref, h_ref, params, opt, h)


def test_sigint_during_optimizer_step_is_deferred_until_the_step_is_done(tmp_path):
    params, opt, lg, data, path = make_run(tmp_path, "defer.npz")
    step = opt.step
    count = {"n": 0}

    def step_with_sigint(grads):
        count["n"] += 1
        if count["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)  # arrives before the update starts
        step(grads)

    opt.step = step_with_sigint
    h = ak.fit(lg, opt, data, checkpoint=path, **{**SETTINGS, "checkpoint_every": None})
    assert h.interrupted and h.steps == 2 == opt.step_count  # the second step was completed, then stopped
    assert load_npz(path)[1]["run"]["step"] == 2


def test_corrupted_or_truncated_checkpoint_is_not_loaded(tmp_path):
    params, opt, lg, data, path = make_run(tmp_path)
    ak.fit(lg, opt, data, checkpoint=path, **{**SETTINGS, "epochs": 1})
    raw = path.read_bytes()

    def attempt(content, match, exc=ValueError):
        path.write_bytes(content)
        p, o, lg2, d, _ = make_run(tmp_path)
        before = o.state_dict()
        with pytest.raises(exc, match=match):
            ak.fit(lg2, o, d, checkpoint=path, resume=True, **SETTINGS)
        assert not p["w"].any() and not p["b"].any()  # parameters untouched
        assert o.state_dict()["step_count"] == before["step_count"] == 0

    attempt(raw[: len(raw) // 2], "truncated or corrupted and was not loaded")
    middle = bytearray(raw)
    for i in range(len(raw) // 3, len(raw) // 3 + 64):
        middle[i] ^= 0xFF
    attempt(bytes(middle), "truncated or corrupted|corrupted description|not loaded")
    attempt(b"", "truncated or corrupted")
    # a valid file of another kind, and the right kind with other settings
    o_file = tmp_path / "opt.npz"
    ak.Adam(np.zeros(2)).save(o_file)
    attempt(o_file.read_bytes(), "not a fit checkpoint")
    # a well-formed file whose run description has a field of the wrong type
    from adamkit._checkpoint import save_npz
    path.write_bytes(raw)
    arrays, meta = load_npz(path)
    for key, value in (("batch", "x"), ("elapsed", "x"), ("epoch_loss_sum", None), ("best", "x"),
                       ("stopped_early", 1), ("step", -1)):
        bad = {**meta, "run": {**meta["run"], key: value}}
        save_npz(path, arrays, bad)
        attempt(path.read_bytes(), rf"is incomplete or inconsistent \(TypeError\(\"run\['{key}'\]=.*not loaded")
    path.write_bytes(raw)
    p, o, lg2, d, _ = make_run(tmp_path)
    with pytest.raises(ValueError, match=r"batch_size=7 in the checkpoint, 8 now"):
        ak.fit(lg2, o, d, checkpoint=path, resume=True, **{**SETTINGS, "batch_size": 8})
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        ak.fit(lg2, o, d, checkpoint=tmp_path / "missing.npz", resume=True, **SETTINGS)
    assert not p["w"].any()


# --------------------------------------------------------------------------------------------------
# Non-finite values


def test_nonfinite_loss_raises_with_position_or_is_skipped():
    X, y = ols_data(20)
    lg = ridge_loss()
    calls = {"n": 0}

    def bad_third(b, batch):
        calls["n"] += 1
        loss, g = lg(b, batch)
        return (np.nan, g) if calls["n"] == 3 else (loss, g)

    b = np.zeros((2, 1))
    with pytest.raises(FloatingPointError, match=r"non-finite loss nan in epoch 1, step 3.*after step 2"):
        ak.fit(bad_third, ak.SGD(b, lr=0.01), (X, y), batch_size=5, epochs=1, shuffle=False)
    ref = np.zeros((2, 1))
    o = ak.SGD(ref, lr=0.01)
    for i in range(2):
        o.step(lg(ref, (X[5 * i:5 * i + 5], y[5 * i:5 * i + 5]))[1])
    assert np.array_equal(b, ref)  # the parameters after step 2

    calls["n"] = 0
    b = np.zeros((2, 1))
    h = ak.fit(bad_third, ak.SGD(b, lr=0.01, nonfinite="skip"), (X, y), batch_size=5, epochs=1, shuffle=False)
    assert h.steps == 3 and h.skipped_steps == 1 and np.isfinite(h.loss).all()


# --------------------------------------------------------------------------------------------------
# Progress bar


def test_progress_bar_on_request_and_off_when_not_a_terminal(capsys):
    X, y = ols_data(20)
    ak.fit(ridge_loss(), ak.SGD(np.zeros((2, 1)), lr=0.01), (X, y), batch_size=5, epochs=2)
    assert capsys.readouterr().err == ""  # stderr is not a terminal under pytest
    ak.fit(ridge_loss(), ak.SGD(np.zeros((2, 1)), lr=0.01), (X, y), batch_size=5, epochs=2, progress=True)
    err = capsys.readouterr().err
    assert "epoch 2/2" in err and "loss=" in err and "8/8" in err


# --------------------------------------------------------------------------------------------------
# Bad input

X20, Y20 = ols_data(20)
BAD = [
    (dict(loss_and_grad=5), TypeError, r"loss_and_grad=5: expected a callable"),
    (dict(optimizer=object()), TypeError, r"optimizer=.*expected an adamkit optimizer"),
    (dict(data=(X20, Y20[:19])), ValueError, r"data: arrays of different lengths \[20, 19\]"),
    (dict(data=5), TypeError, r"data: expected an array or a tuple of arrays"),
    (dict(data=(X20, 3.0)), ValueError, r"data\[1\]: expected an array with a first dimension"),
    (dict(batch_size=0), ValueError, r"batch_size=0: expected an integer >= 1"),
    (dict(batch_size=2.5), TypeError, r"batch_size=2.5: expected an integer >= 1"),
    (dict(epochs=-1), ValueError, r"epochs=-1: expected an integer >= 0"),
    (dict(accumulate=0), ValueError, r"accumulate=0: expected an integer >= 1"),
    (dict(clip_norm=0.0), ValueError, r"clip_norm=0.0: expected a finite number > 0"),
    (dict(patience=0), ValueError, r"patience=0"),
    (dict(min_delta=-1.0), ValueError, r"min_delta=-1.0"),
    (dict(metric=lambda p, b: 0.0), ValueError, r"metric is given but validation_data is None"),
    (dict(validation_data=(X20, Y20[:3])), ValueError, r"validation_data: arrays of different lengths"),
    (dict(validation_data=X20), ValueError,
     r"validation_data: expected the form of data \(2 arrays with rows of shape \[\(2,\), \(1,\)\]\), got an array"),
    (dict(validation_data=(X20[:, :1], Y20)), ValueError,
     r"validation_data: expected the form of data .* got 2 arrays with rows of shape \[\(1,\), \(1,\)\]"),
    (dict(checkpoint_every=5), ValueError, r"checkpoint_every=5: expected a checkpoint path"),
    (dict(resume=True), ValueError, r"resume=True: expected a checkpoint path"),
    (dict(checkpoint="model.pkl"), ValueError, r"checkpoint='model.pkl': expected a file name ending in '.npz'"),
    (dict(checkpoint="/no/such/dir/c.npz"), ValueError, r"directory '/no/such/dir' does not exist"),
    (dict(drop_last=True, batch_size=50), ValueError, r"drop_last=True with batch_size=50 > 20 rows"),
    (dict(shuffle="yes"), TypeError, r"shuffle='yes': expected True or False"),
    (dict(loss_and_grad=lambda p, b: 1.0), ValueError, r"loss_and_grad returned float: expected a pair"),
    (dict(loss_and_grad=lambda p, b: (np.ones(3), p)), ValueError,
     r"loss_and_grad \(the loss\) returned an array of shape \(3,\).*expected a real scalar"),
    (dict(loss_and_grad=lambda p, b: (1.0, np.ones(3))), ValueError, r"gradient for parameter 'params'"),
]


@pytest.mark.parametrize("kwargs,exc,match", BAD, ids=[m for _, _, m in BAD])
def test_bad_input(kwargs, exc, match):
    b = np.zeros((2, 1))
    call = dict(loss_and_grad=ridge_loss(), optimizer=ak.Adam(b, lr=0.1), data=(X20, Y20), batch_size=5,
                epochs=1)
    call.update(kwargs)
    with pytest.raises(exc, match=match):
        ak.fit(call.pop("loss_and_grad"), call.pop("optimizer"), call.pop("data"), **call)
    assert not b.any()  # nothing changed


def test_parameter_groups_resume_bit_identical(tmp_path):
    X = np.random.default_rng(0).standard_normal((30, 2))
    y = X @ [1.0, -2.0] + 0.5

    def make():
        w, b = np.zeros(2), np.zeros(1)
        opt = ak.Adam([{"params": {"w": w}}, {"params": b, "lr": 0.05}], lr=0.1)

        def lg(groups, batch):
            Xb, yb = batch
            r = Xb @ groups[0]["params"]["w"] + groups[1]["params"] - yb
            return float((r * r).mean()), [{"w": 2 * Xb.T @ r / len(yb)}, np.array([2 * r.mean()])]
        return (w, b), opt, lg

    kw = dict(batch_size=4, epochs=5, accumulate=2, checkpoint=tmp_path / "groups.npz")
    ref, opt, lg = make()
    h_ref = ak.fit(lg, opt, (X, y), **kw)
    part, opt, lg = make()
    assert ak.fit(interrupt_at(lg, 17), opt, (X, y), **kw).interrupted
    out, opt, lg = make()
    h = ak.fit(lg, opt, (X, y), resume=True, **kw)
    assert all(np.array_equal(a, b) for a, b in zip(ref, out)) and h.loss == h_ref.loss


def test_norm_of_array_subclasses_and_fit_names_the_gradients():
    """Array subclasses (masked arrays, memmaps, users' own) are arrays; fit's errors about a gradient name
    loss_and_grad's."""
    class Tagged(np.ndarray):
        pass

    assert ak.global_norm({"a": np.ma.array([3.0]), "b": np.array([[4.0]]).view(Tagged)}) == 5.0
    assert ak.clip_by_global_norm(np.ma.array([3.0, 4.0]), 1.0)[1] == 5.0
    b = np.zeros((2, 1))
    with pytest.raises(TypeError, match=r"^loss_and_grad's grads: expected a real array \(float or integer\), "
                                        r"got dtype complex128$"):
        ak.fit(lambda p, batch: (0.0, np.ones((2, 1), complex)), ak.SGD(b, lr=0.1), (X20, Y20), batch_size=5, epochs=1)
    assert not b.any()
