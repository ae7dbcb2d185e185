"""Exact properties from the seed notes and the papers, and two steps of every optimizer computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

import adamkit as ak
from registry import DTYPES

# eps must be > 0 (eps = 0 makes 0/0 where a coordinate's gradients are all 0) with 1/eps finite in the
# parameters' dtype. This one is far below half an ulp of every sqrt(v) in these tests, so sqrt(v) + TINY
# == sqrt(v) exactly, in both dtypes: the formulas with eps = 0, which is what these tests check.
TINY = 1e-30

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)


def _ulp(dtype):
    return EPS32 if dtype == np.float32 else EPS64


def _wide_gradient(rng, n, dtype):
    """Magnitudes from 1e-6 to 1e3, both signs, some exact zeros."""
    g = rng.choice([-1.0, 1.0], n) * 10.0 ** rng.uniform(-6, 3, n)
    g[rng.random(n) < 0.1] = 0.0
    return g.astype(dtype)


# --------------------------------------------------------------------------------------------------
# Adam (Kingma & Ba, Algorithm 1; the seed notes)

ADAM_FAMILY = [
    pytest.param(ak.Adam, {}, id="Adam"),
    pytest.param(ak.Adam, {"amsgrad": True}, id="Adam-amsgrad"),
    pytest.param(ak.Adam, {"maximize": True, "betas": (0.8, 0.99)}, id="Adam-maximize-betas"),
    pytest.param(ak.AdamW, {"weight_decay": 0.0}, id="AdamW-no-decay"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls, kwargs", ADAM_FAMILY)
def test_adam_first_step_moves_every_coordinate_by_lr(cls, kwargs, dtype):
    """m1/bc1 = g and v1/bc2 = g^2, so the first step is lr*g/(|g| + eps): lr, up to eps/|g|."""
    rng = np.random.default_rng(0)
    g = _wide_gradient(rng, 1000, dtype)
    p = np.zeros(1000, dtype)
    lr, eps = 1e-3, 1e-8
    ak_opt = cls(p, lr=lr, eps=eps, **kwargs)
    ak_opt.step(g)
    sign = -1.0 if kwargs.get("maximize") else 1.0
    nz = g != 0
    assert np.all(p[~nz] == 0)  # a zero gradient does not move its coordinate at all
    assert np.all(np.sign(p[nz]) == -sign * np.sign(g[nz]))
    moved = np.abs(p[nz].astype(np.float64))
    bound = lr * (eps / np.abs(g[nz].astype(np.float64)) + 8 * _ulp(dtype))
    assert np.all(np.abs(moved - lr) <= bound)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_constant_gradient_moves_by_lr_at_every_step(dtype):
    """With a constant g, m_t/bc1 = g and v_t/bc2 = g^2 in real arithmetic: every step is lr (eps = TINY)."""
    g = np.array([0.5, -3.0, 200.0, -1e-3], dtype)
    p = np.zeros(4, dtype)
    opt = ak.Adam(p, lr=1e-2, eps=TINY)
    for t in range(1, 51):
        before = p.astype(np.float64)
        opt.step(g)
        step = before - p.astype(np.float64)
        np.testing.assert_allclose(step * np.sign(g), 1e-2, rtol=2e-5 if dtype == np.float32 else 1e-11,
                                   err_msg=f"step {t}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs", [{}, {"amsgrad": True}, {"bias_correction": False}, {"maximize": True}])
def test_adam_trajectory_is_invariant_to_gradient_scale(kwargs, dtype):
    """With eps = TINY (in effect 0), m scales by c and sqrt(v) by |c|: the update does not change.

    A power of two scales every operation exactly, so the trajectories are bit-identical; another
    constant agrees to rounding.
    """
    rng = np.random.default_rng(1)
    grads = [(rng.choice([-1.0, 1.0], 6) * 10.0 ** rng.uniform(-3, 2, 6)).astype(dtype) for _ in range(30)]
    p0 = rng.standard_normal(6).astype(dtype)

    def run(c):
        p = p0.copy()
        opt = ak.Adam(p, lr=1e-2, eps=TINY, **kwargs)
        traj = []
        for g in grads:
            opt.step((g.astype(np.float64) * c).astype(dtype))
            traj.append(p.copy())
        return np.array(traj)

    base = run(1.0)
    for c in (2.0 ** 10, 2.0 ** -20, 8.0):
        assert run(c).tobytes() == base.tobytes(), c
    for c in (1000.0, 3e-4):
        np.testing.assert_allclose(run(c), base, rtol=0, atol=1e-12 if dtype == np.float64 else 1e-5)
    # eps is what breaks it: with eps > 0, small gradients take smaller steps
    p = p0.copy()
    opt = ak.Adam(p, lr=1e-2, eps=1e-2, **kwargs)
    for g in grads:
        opt.step((g.astype(np.float64) * 1e-3).astype(dtype))
    assert not np.allclose(p, base[-1], rtol=0, atol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.8, 0.99), (0.0, 0.5)])
def test_adam_without_bias_correction_first_step(betas, dtype):
    """m1 = (1-b1) g, v1 = (1-b2) g^2: the first step is lr*(1-b1)/sqrt(1-b2), 3.16*lr at the defaults."""
    rng = np.random.default_rng(2)
    g = (rng.choice([-1.0, 1.0], 200) * 10.0 ** rng.uniform(-2, 3, 200)).astype(dtype)
    p = np.zeros(200, dtype)
    lr, eps = 1e-3, 1e-8
    ak.Adam(p, lr=lr, betas=betas, eps=eps, bias_correction=False).step(g)
    b1, b2 = betas
    expected = lr * (1 - b1) / math.sqrt(1 - b2)
    moved = -p.astype(np.float64) * np.sign(g)
    bound = expected * (eps / (math.sqrt(1 - b2) * np.abs(g.astype(np.float64))) + 8 * _ulp(dtype))
    assert np.all(np.abs(moved - expected) <= bound)
    if betas == (0.9, 0.999):
        assert expected == pytest.approx(3.1623e-3, rel=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", [ak.Adam, ak.AdamW])
def test_amsgrad_denominator_never_decreases(cls, dtype):
    rng = np.random.default_rng(3)
    p = rng.standard_normal(50).astype(dtype)
    opt = cls(p, lr=1e-3, amsgrad=True)
    vmax_prev = np.zeros(50, dtype)
    running_max = np.zeros(50, dtype)
    decreased = False
    v_prev = np.zeros(50, dtype)
    for t in range(60):
        scale = 10.0 if t < 5 else 10.0 ** rng.uniform(-3, 1)  # large gradients first, then mostly smaller
        opt.step((rng.standard_normal(50) * scale).astype(dtype))
        v, vmax = opt.state["params"]["exp_avg_sq"], opt.state["params"]["max_exp_avg_sq"]
        assert np.all(vmax >= vmax_prev), f"step {t + 1}"
        running_max = np.maximum(running_max, v)
        assert vmax.tobytes() == running_max.tobytes()  # the max of the raw v over the steps so far
        decreased |= bool(np.any(v < v_prev))
        vmax_prev, v_prev = vmax.copy(), v.copy()
    assert decreased  # v itself went down: the property is not trivial
    assert np.any(vmax > opt.state["params"]["exp_avg_sq"])


# --------------------------------------------------------------------------------------------------
# RAdam (Liu et al.): unadapted first steps


@pytest.mark.parametrize("dtype", DTYPES)
def test_radam_first_five_steps_are_momentum_sgd_then_it_adapts(dtype):
    """At b2 = 0.999, rho_t = 1.0, 2.0, 3.0, 4.0, 4.996 <= 5 for t <= 5 and 5.994 at t = 6."""
    rng = np.random.default_rng(4)
    grads = [(rng.standard_normal(8) * 10.0 ** rng.uniform(-2, 2, 8)).astype(dtype) for _ in range(7)]
    p0 = rng.standard_normal(8).astype(dtype)
    lr, b1 = 1e-2, 0.9

    runs = {}
    for eps in (1e-8, 1.0):
        p = p0.copy()
        opt = ak.RAdam(p, lr=lr, eps=eps)
        traj = []
        for g in grads:
            opt.step(g)
            traj.append(p.copy())
        runs[eps] = traj

    p, m = p0.astype(np.float64), np.zeros(8)
    tol = 1e-14 if dtype == np.float64 else 4 * EPS32
    for t in range(1, 6):
        m = b1 * m + (1 - b1) * grads[t - 1].astype(np.float64)
        p = p - lr * m / (1 - b1 ** t)  # momentum SGD with bias-corrected m, nothing else
        np.testing.assert_allclose(runs[1e-8][t - 1], p, rtol=tol, atol=tol, err_msg=f"step {t}")
        # neither eps nor v plays a part yet
        assert runs[1.0][t - 1].tobytes() == runs[1e-8][t - 1].tobytes()
    # step 6 adapts: eps now matters, and the step is no longer lr * m / bc1
    assert runs[1.0][5].tobytes() != runs[1e-8][5].tobytes()
    m6 = b1 * m + (1 - b1) * grads[5].astype(np.float64)
    unadapted = p - lr * m6 / (1 - b1 ** 6)
    assert not np.allclose(runs[1e-8][5], unadapted, rtol=1e-3, atol=0)


# --------------------------------------------------------------------------------------------------
# SGD, Adagrad, NAdam


@pytest.mark.parametrize("kwargs", [{"momentum": 0.9}, {"momentum": 0.9, "dampening": 0.5},
                                    {"momentum": 0.5, "nesterov": True}, {"momentum": 0.9, "maximize": True},
                                    {"momentum": 0.9, "weight_decay": 0.1}])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_momentum_buffer_starts_as_the_gradient(kwargs, dtype):
    """torch's buf = clone(g) on the first step: not (1 - dampening) * g, not momentum * 0 + g by accident."""
    rng = np.random.default_rng(5)
    p = rng.standard_normal(5).astype(dtype)
    p0 = p.copy()
    g = rng.standard_normal(5).astype(dtype)
    opt = ak.SGD(p, lr=0.1, **kwargs)
    opt.step(g)
    d = -g if kwargs.get("maximize") else g
    if kwargs.get("weight_decay"):
        d = d + dtype(kwargs["weight_decay"]) * p0
    assert opt.state["params"]["momentum_buffer"].tobytes() == d.tobytes()
    # reset_state starts it over: the buffer is the (decayed, signed) gradient again
    opt.reset_state()
    p_now = p.copy()
    opt.step(g)
    d = -g if kwargs.get("maximize") else g
    if kwargs.get("weight_decay"):
        d = d + dtype(kwargs["weight_decay"]) * p_now
    assert opt.state["params"]["momentum_buffer"].tobytes() == d.tobytes()


@pytest.mark.parametrize("lr_decay", [0.0, 0.1])
def test_adagrad_steps_shrink_like_one_over_sqrt_t(lr_decay):
    """A constant g accumulates s_t = t g^2: step t is clr_t * g / (sqrt(t) |g| + eps)."""
    g = np.array([1.0, -3.0, 0.5, 1e-2])
    p = np.zeros(4)
    lr = 0.1
    opt = ak.Adagrad(p, lr=lr, lr_decay=lr_decay)
    for t in range(1, 101):
        before = p.copy()
        opt.step(g)
        clr = lr / (1 + (t - 1) * lr_decay)
        np.testing.assert_allclose((before - p) * np.sign(g) * math.sqrt(t), clr, rtol=1e-7, err_msg=f"step {t}")


@pytest.mark.parametrize("betas, psi", [((0.9, 0.999), 4e-3), ((0.8, 0.99), 1e-2)])
def test_nadam_mu_product(betas, psi):
    """P_t = prod_{i<=t} b1 * (1 - 0.5 * 0.96^(i psi)), kept in the group state and saved."""
    opt = ak.NAdam(np.zeros(3), betas=betas, momentum_decay=psi)
    product = 1.0
    for t in range(1, 31):
        opt.step(np.array([1.0, -2.0, 0.5]))
        product *= betas[0] * (1 - 0.5 * 0.96 ** (t * psi))
        saved = opt.state_dict()["group_state"][0]["mu_product"]
        assert saved == pytest.approx(product, rel=1e-14, abs=0)
    assert 0 < product < betas[0] ** 30 * 0.6 ** 30  # each mu_t < 0.6 * b1 at these psi


# --------------------------------------------------------------------------------------------------
# Two steps of every optimizer by hand, on p0 = [1, -1] with g1 = [0.5, -2] and g2 = [0.5, 1].
#
# The arithmetic is written out so that it can be checked on paper; eps = TINY (in effect 0) in the adaptive methods. For Adam's coordinate 0 the
# gradient is constant, so each step is exactly lr (m/bc1 = 0.5, v/bc2 = 0.25); bc1 = 1 - 0.9^2 = 0.19
# and bc2 = 1 - 0.999^2 = 0.001999 at step 2.

P0, G1, G2 = [1.0, -1.0], [0.5, -2.0], [0.5, 1.0]
_mu = [0.9 * (1 - 0.5 * 0.96 ** (t * 4e-3)) for t in (1, 2, 3)]  # NAdam's mu_1, mu_2, mu_3

HAND = [
    # ---- SGD, lr 0.1
    pytest.param(ak.SGD, {"lr": 0.1}, G2, [0.95, -0.8], [0.9, -0.9], 1e-15, id="SGD"),
    # buf1 = g1; buf2 = 0.9*g1 + g2 = [0.95, -0.8]
    pytest.param(ak.SGD, {"lr": 0.1, "momentum": 0.9}, G2, [0.95, -0.8], [0.855, -0.72], 1e-15, id="SGD-momentum"),
    # buf1 = g1 (not damped); buf2 = 0.9*g1 + 0.5*g2 = [0.7, -1.3]
    pytest.param(ak.SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.5}, G2, [0.95, -0.8], [0.88, -0.67], 1e-15,
                 id="SGD-dampening"),
    # d1 = g1 + 0.9*g1 = [0.95, -3.8]; buf2 = [0.95, -0.8], d2 = g2 + 0.9*buf2 = [1.355, 0.28]
    pytest.param(ak.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}, G2, [0.905, -0.62], [0.7695, -0.648], 1e-15,
                 id="SGD-nesterov"),
    # d1 = -g1 + 0.1*p0 = [-0.4, 1.9]; d2 = -g2 + 0.1*p1 = [-0.396, -1.119]
    pytest.param(ak.SGD, {"lr": 0.1, "weight_decay": 0.1, "maximize": True}, G2, [1.04, -1.19], [1.0796, -1.0781], 1e-15,
                 id="SGD-maximize-decay"),
    # ---- Adagrad, lr 0.1: s1 = [0.25, 4], s2 = [0.5, 5]
    pytest.param(ak.Adagrad, {"eps": TINY, "lr": 0.1}, G2, [0.9, -0.9], [0.9 - 0.1 * math.sqrt(0.5), -0.9 - 0.1 / math.sqrt(5)], 1e-14,
                 id="Adagrad"),
    # s0 = 0.75: s1 = [1, 4.75], s2 = [1.25, 5.75]; clr2 = 0.1 / (1 + 1*1.0) = 0.05
    pytest.param(ak.Adagrad, {"eps": TINY, "lr": 0.1, "lr_decay": 1.0, "initial_accumulator_value": 0.75}, G2,
                 [0.95, -1 + 0.2 / math.sqrt(4.75)],
                 [0.95 - 0.025 / math.sqrt(1.25), -1 + 0.2 / math.sqrt(4.75) - 0.05 / math.sqrt(5.75)], 1e-14,
                 id="Adagrad-decay-initial"),
    # ---- RMSprop, lr 0.01, alpha 0.99: v1 = [0.0025, 0.04] (roots 0.05, 0.2); v2 = [0.004975, 0.0496]
    pytest.param(ak.RMSprop, {"eps": TINY, "lr": 0.01}, G2, [0.9, -0.9],
                 [0.9 - 0.005 / math.sqrt(0.004975), -0.9 - 0.01 / math.sqrt(0.0496)], 1e-14, id="RMSprop"),
    # gbar1 = [0.005, -0.02]: v1 - gbar1^2 = [0.002475, 0.0396]; gbar2 = [0.00995, -0.0098]
    pytest.param(ak.RMSprop, {"eps": TINY, "lr": 0.01, "centered": True}, G2,
                 [1 - 0.005 / math.sqrt(0.002475), -1 + 0.02 / math.sqrt(0.0396)],
                 [1 - 0.005 / math.sqrt(0.002475) - 0.005 / math.sqrt(0.004975 - 0.00995 ** 2),
                  -1 + 0.02 / math.sqrt(0.0396) - 0.01 / math.sqrt(0.0496 - 0.0098 ** 2)], 1e-14, id="RMSprop-centered"),
    # b1 = g1/sqrt(v1) = [10, -10]; b2 = 0.9*b1 + g2/sqrt(v2)
    pytest.param(ak.RMSprop, {"eps": TINY, "lr": 0.01, "momentum": 0.9}, G2, [0.9, -0.9],
                 [0.9 - 0.01 * (9 + 0.5 / math.sqrt(0.004975)), -0.9 - 0.01 * (-9 + 1 / math.sqrt(0.0496))], 1e-14,
                 id="RMSprop-momentum"),
    # ---- Adam, lr 0.1: m2[1] = 0.9*(-0.2) + 0.1*1 = -0.08; v2[1] = 0.999*0.004 + 0.001*1 = 0.004996
    pytest.param(ak.Adam, {"eps": TINY, "lr": 0.1}, G2, [0.9, -0.9], [0.8, -0.9 + 0.1 * (0.08 / 0.19) / math.sqrt(0.004996 / 0.001999)],
                 1e-14, id="Adam"),
    # g2 = [0.5, 0.01]: v2[1] = 0.003996 + 1e-7 = 0.0039961 < v1[1] = 0.004, so vmax2 = 0.004; m2[1] = -0.179
    pytest.param(ak.Adam, {"eps": TINY, "lr": 0.1, "amsgrad": True}, [0.5, 0.01], [0.9, -0.9],
                 [0.8, -0.9 + 0.1 * (0.179 / 0.19) / math.sqrt(0.004 / 0.001999)], 1e-14, id="Adam-amsgrad"),
    # m1/sqrt(v1) = 0.1/sqrt(0.001) = sqrt(10); m2 = [0.095, -0.08], v2 = [0.00049975, 0.004996]
    pytest.param(ak.Adam, {"eps": TINY, "lr": 0.1, "bias_correction": False}, G2,
                 [1 - 0.1 * math.sqrt(10), -1 + 0.1 * math.sqrt(10)],
                 [1 - 0.1 * math.sqrt(10) - 0.1 * 0.095 / math.sqrt(0.00049975),
                  -1 + 0.1 * math.sqrt(10) + 0.1 * 0.08 / math.sqrt(0.004996)], 1e-14, id="Adam-no-bias-correction"),
    # g1 + 0.1*p0 = [0.6, -2.1]; g2 + 0.1*p1 = [0.59, 0.91]; m2 = [0.113, -0.098]; v2 = [0.00070774, 0.00523369]
    pytest.param(ak.Adam, {"eps": TINY, "lr": 0.1, "weight_decay": 0.1}, G2, [0.9, -0.9],
                 [0.9 - 0.1 * (0.113 / 0.19) / math.sqrt(0.00070774 / 0.001999),
                  -0.9 + 0.1 * (0.098 / 0.19) / math.sqrt(0.00523369 / 0.001999)], 1e-14, id="Adam-coupled-decay"),
    # p *= 1 - 0.1*0.1 first: p1 = 0.99*p0 -+ 0.1; p2 = 0.99*p1 and Adam's second step
    pytest.param(ak.AdamW, {"eps": TINY, "lr": 0.1, "weight_decay": 0.1}, G2, [0.89, -0.89],
                 [0.8811 - 0.1, -0.8811 + 0.1 * (0.08 / 0.19) / math.sqrt(0.004996 / 0.001999)], 1e-14, id="AdamW"),
    # ---- Adamax, lr 0.1: u1 = [0.5, 2]; u2 = max(0.999*u1, |g2|) = [0.5, 1.998]; lr/bc1 = 0.1/0.19
    pytest.param(ak.Adamax, {"eps": TINY, "lr": 0.1}, G2, [0.9, -0.9], [0.8, -0.9 + (0.1 / 0.19) * 0.08 / 1.998], 1e-14, id="Adamax"),
    # ---- NAdam, lr 0.1: step 1 is lr*sign(g)*(1 + 0.1*mu2/(1 - mu1*mu2)) since m1/d1 = 0.1*sign(g), g/d1 = sign(g)
    pytest.param(ak.NAdam, {"eps": TINY, "lr": 0.1}, G2,
                 [1 - 0.1 * (1 + 0.1 * _mu[1] / (1 - _mu[0] * _mu[1])), -1 + 0.1 * (1 + 0.1 * _mu[1] / (1 - _mu[0] * _mu[1]))],
                 # step 2, coordinate 0: g2/d2 = 1, m2/d2 = 0.095/0.5 = 0.19; coordinate 1: d2 = sqrt(0.004996/0.001999)
                 [1 - 0.1 * (1 + 0.1 * _mu[1] / (1 - _mu[0] * _mu[1]))
                  - 0.1 * ((1 - _mu[1]) / (1 - _mu[0] * _mu[1]) + 0.19 * _mu[2] / (1 - _mu[0] * _mu[1] * _mu[2])),
                  -1 + 0.1 * (1 + 0.1 * _mu[1] / (1 - _mu[0] * _mu[1]))
                  - 0.1 * ((1 - _mu[1]) / (1 - _mu[0] * _mu[1]) * 1 - _mu[2] / (1 - _mu[0] * _mu[1] * _mu[2]) * 0.08)
                  / math.sqrt(0.004996 / 0.001999)], 1e-14, id="NAdam"),
    # ---- RAdam, lr 0.1: rho_1 = 1, rho_2 = 2: p -= lr * m/bc1; m2/bc1 = [0.5, -0.08/0.19]
    pytest.param(ak.RAdam, {"eps": TINY, "lr": 0.1}, G2, [0.95, -0.8], [0.9, -0.8 + 0.8 / 19], 1e-14, id="RAdam"),
]


@pytest.mark.parametrize("cls, kwargs, g2, p1, p2, atol", HAND)
def test_two_steps_by_hand(cls, kwargs, g2, p1, p2, atol):
    p = np.array(P0)
    opt = cls(p, **kwargs)
    opt.step(np.array(G1))
    np.testing.assert_allclose(p, p1, rtol=0, atol=atol, err_msg="step 1")
    opt.step(np.array(g2))
    np.testing.assert_allclose(p, p2, rtol=0, atol=atol, err_msg="step 2")


def test_every_optimizer_has_a_hand_computed_case():
    assert {p.values[0] for p in HAND} == set(ak.OPTIMIZERS.values())


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_centered_rmsprop_stays_finite_under_a_steady_gradient(dtype, fused, monkeypatch):
    """v_t - gbar_t^2 = g^2 alpha^t (1 - alpha^t) >= 0 for a constant g, but the two terms converge to
    g^2 and rounding leaves their difference slightly negative now and then; torch's sqrt makes that a
    NaN (here from step ~1,200 in float32, ~3,200 in float64). adamkit clamps it at 0: the steps grow
    to lr*g/eps, as the formula says, and stay finite."""
    if not fused:
        monkeypatch.setenv("ADAMKIT_NO_NUMBA", "1")
    w = np.zeros(1, dtype)
    opt = ak.RMSprop(w, centered=True)
    g = np.array([0.1], dtype)
    for _ in range(4000):
        opt.step(g)
    assert np.isfinite(w).all() and w[0] < -1e6


def test_adagrad_groups_start_from_their_own_initial_accumulator_value():
    """torch fills every group's accumulator with the constructor's value; adamkit uses each group's."""
    a, b = np.ones(2), np.ones(3)
    opt = ak.Adagrad([{"params": [a], "initial_accumulator_value": 1.0}, {"params": [b]}],
                     initial_accumulator_value=0.25)
    state = opt.state
    assert state["[0][0]"]["sum"].tolist() == [1.0, 1.0] and state["[1][0]"]["sum"].tolist() == [0.25] * 3


def test_centered_rmsprop_clamp_is_the_same_on_both_paths_when_the_difference_is_minus_infinity(monkeypatch):
    """gbar^2 can overflow to inf in float32 while v is finite: v - gbar^2 = -inf, clamped to 0 by both
    the reference rule (np.maximum) and the fused kernel."""
    out = []
    for fused in (True, False):
        monkeypatch.setenv("ADAMKIT_NO_NUMBA", "0" if fused else "1")
        w = np.ones(2, np.float32)
        opt = ak.RMSprop(w, centered=True, alpha=0.99, nonfinite="ignore")
        sd = opt.state_dict()
        sd["state"]["params"] = {"square_avg": np.full(2, 1e38, np.float32), "grad_avg": np.full(2, 1.9e19, np.float32)}
        opt.load_state_dict(sd)
        with np.errstate(over="ignore"):  # NumPy warns that gbar^2 overflows, as it does
            opt.step(np.zeros(2, np.float32))
        out.append(w.copy())
    assert out[0].tobytes() == out[1].tobytes() and np.isfinite(out[0]).all()
