"""The optimizers: each a small spec (hyperparameters, validation, state slots, per-step scalars) and one
readable NumPy reference rule whose docstring states the update in the paper's symbols.

The reference rules are the ground truth for the fused kernels. They follow torch.optim's order of
operations (``../shared/CONVENTIONS.md``) so that float32 results agree with torch to rounding; the
scalars that depend only on the step (bias corrections, NAdam's mu products, RAdam's rho_t) are
computed once per step in float64 by ``constants``.

Notation: ``t`` is the step (1 on the first), ``g`` the gradient, ``p`` the parameter; maximize negates
``g`` first; coupled L2 weight decay adds ``weight_decay * p`` to ``g`` before anything else; decoupled
weight decay multiplies ``p`` by ``1 - lr * weight_decay`` first.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._optimizer import Optimizer, check_betas, check_bool, check_lr, check_real


def _common(hp: dict[str, Any]) -> dict[str, Any]:
    """Checks shared by every optimizer: lr, weight_decay, maximize."""
    out = dict(hp)
    out["lr"] = check_lr(hp["lr"])
    out["weight_decay"] = check_real("weight_decay", hp["weight_decay"])
    out["maximize"] = check_bool("maximize", hp["maximize"])
    for key in ("decoupled_weight_decay", "amsgrad", "centered", "nesterov", "bias_correction"):
        if key in hp:
            out[key] = check_bool(key, hp[key])
    if "eps" in hp:
        # eps = 0 (torch allows it) divides 0 by 0 where a coordinate's gradients have all been 0
        out["eps"] = check_real("eps", hp["eps"], open_min=True,
                                why=" (with eps = 0, a coordinate whose gradients were all 0 would become NaN)")
    if "betas" in hp:
        out["betas"] = check_betas(hp["betas"])
    return out


def _signed_decayed(p: np.ndarray, g: np.ndarray, c: dict[str, Any]) -> np.ndarray:
    """``-g`` when maximizing; then coupled weight decay ``g + wd*p``, or decoupled ``p *= 1 - lr*wd``."""
    if c["maximize"]:
        g = -g
    wd = c["weight_decay"]
    if wd != 0:
        if c.get("decoupled_weight_decay", False):
            if np.may_share_memory(g, p):
                g = g.copy()  # the gradient may be the parameter itself (f = |p|^2/2): read it before decaying p
            p *= 1.0 - c["lr"] * wd
        else:
            g = g + wd * p
    return g


def _ema(x: np.ndarray, beta: float, value: np.ndarray) -> None:
    """The exponential moving average, in place: ``x = beta*x + (1-beta)*value``."""
    x *= beta
    x += (1.0 - beta) * value


class SGD(Optimizer):
    r"""Stochastic gradient descent, with optional (Nesterov) momentum, as torch.optim.SGD.

    .. math::
        b_t = \mu b_{t-1} + (1-\tau) g_t \ (b_1 = g_1), \qquad
        p_t = p_{t-1} - \gamma\,(g_t + \mu b_t \text{ if Nesterov else } b_t)

    with ``lr`` = :math:`\gamma`, ``momentum`` = :math:`\mu`, ``dampening`` = :math:`\tau`. Without
    momentum, :math:`p_t = p_{t-1} - \gamma g_t`. Keras folds ``lr`` into its momentum buffer
    (``v = mu*v - lr*g``); the trajectories agree only for a constant learning rate.
    """

    fused_kernel = "SGD"
    state_slots = ("momentum_buffer",)
    group_scalars = {"momentum_started": check_bool}  # the buffer holds a first gradient already

    def __init__(self, params: Any, lr: Any = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False,
                 nonfinite: str = "raise"):
        super().__init__(params, locals())

    @classmethod
    def validate(cls, hp):
        out = _common(hp)
        out["momentum"] = check_real("momentum", hp["momentum"])
        out["dampening"] = check_real("dampening", hp["dampening"], minimum=None)
        if out["nesterov"] and (out["momentum"] <= 0 or out["dampening"] != 0):
            raise ValueError(f"nesterov=True with momentum={hp['momentum']!r} and dampening={hp['dampening']!r}: "
                             f"expected momentum > 0 and dampening == 0")
        return out

    @staticmethod
    def slots(hp):
        return {"momentum_buffer": 0.0} if hp["momentum"] != 0 else {}

    @staticmethod
    def constants(hp, t, scalars):
        # the buffer starts as g itself on its first use (torch's `buf = clone(grad)`)
        if hp["momentum"] == 0:
            return {}
        return {"first_momentum": not scalars.get("momentum_started", False),
                "next_scalars": {"momentum_started": True}}

    @staticmethod
    def reference(p, g, s, c):
        """``b = g`` (first step) or ``b = momentum*b + (1-dampening)*g``; ``p -= lr*(g + momentum*b if nesterov else b)``."""
        g = _signed_decayed(p, g, c)
        mu = c["momentum"]
        if mu != 0:
            b = s["momentum_buffer"]
            if c["first_momentum"]:
                b[...] = g
            else:
                b *= mu
                b += (1.0 - c["dampening"]) * g
            g = g + mu * b if c["nesterov"] else b
        p -= c["lr"] * g


class Adagrad(Optimizer):
    r"""AdaGrad (Duchi, Hazan & Singer 2011), as torch.optim.Adagrad.

    .. math::
        s_t = s_{t-1} + g_t^2, \qquad
        p_t = p_{t-1} - \frac{\eta_t}{\sqrt{s_t} + \epsilon}\, g_t, \qquad \eta_t = \frac{\eta}{1 + (t-1)\,\text{lr\_decay}}

    with ``lr`` = :math:`\eta`, ``eps`` = :math:`\epsilon`, :math:`s_0` = ``initial_accumulator_value``.
    The accumulator never forgets, so steps shrink like :math:`1/\sqrt{t}` (the seed notes' point).
    optax and Keras start the accumulator at 0.1 and put ``eps`` (1e-7) differently.
    """

    fused_kernel = "Adagrad"
    state_slots = ("sum",)
    group_scalars: dict = {}

    def __init__(self, params: Any, lr: Any = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, *, maximize: bool = False,
                 nonfinite: str = "raise"):
        super().__init__(params, locals())

    @classmethod
    def validate(cls, hp):
        out = _common(hp)
        out["lr_decay"] = check_real("lr_decay", hp["lr_decay"])
        out["initial_accumulator_value"] = check_real("initial_accumulator_value", hp["initial_accumulator_value"])
        return out

    @staticmethod
    def slots(hp):
        return {"sum": hp["initial_accumulator_value"]}

    @staticmethod
    def constants(hp, t, scalars):
        return {"clr": hp["lr"] / (1.0 + (t - 1) * hp["lr_decay"])}

    @staticmethod
    def reference(p, g, s, c):
        """``sum += g^2``; ``p -= clr * g / (sqrt(sum) + eps)``, ``clr = lr / (1 + (t-1)*lr_decay)``."""
        g = _signed_decayed(p, g, c)
        acc = s["sum"]
        acc += g * g
        p -= c["clr"] * (g / (np.sqrt(acc) + c["eps"]))


class RMSprop(Optimizer):
    r"""RMSProp (Hinton's lecture 6e), as torch.optim.RMSprop.

    .. math::
        v_t = \alpha v_{t-1} + (1-\alpha) g_t^2, \qquad
        p_t = p_{t-1} - \frac{\gamma}{\sqrt{v_t} + \epsilon}\, g_t

    with ``lr`` = :math:`\gamma`, ``alpha`` = :math:`\alpha`. ``centered`` also tracks
    :math:`\bar g_t = \alpha \bar g_{t-1} + (1-\alpha) g_t` and uses :math:`\max(v_t - \bar g_t^2, 0)`
    (torch takes the square root of a difference that rounding can leave slightly negative, a NaN);
    ``momentum`` = :math:`\mu` keeps :math:`b_t = \mu b_{t-1} + g_t/(\sqrt{v_t}+\epsilon)`,
    :math:`p_t = p_{t-1} - \gamma b_t`. No bias correction (the seed notes: what Adam adds).
    Keras and optax put ``eps`` inside the square root and default ``rho``/``decay`` to 0.9.
    """

    fused_kernel = "RMSprop"
    state_slots = ("square_avg", "grad_avg", "momentum_buffer")
    group_scalars: dict = {}

    def __init__(self, params: Any, lr: Any = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False, *,
                 maximize: bool = False, nonfinite: str = "raise"):
        super().__init__(params, locals())

    @classmethod
    def validate(cls, hp):
        out = _common(hp)
        out["alpha"] = check_real("alpha", hp["alpha"], maximum=1.0)
        out["momentum"] = check_real("momentum", hp["momentum"])
        return out

    @staticmethod
    def slots(hp):
        out = {"square_avg": 0.0}
        if hp["centered"]:
            out["grad_avg"] = 0.0
        if hp["momentum"] > 0:
            out["momentum_buffer"] = 0.0
        return out

    @staticmethod
    def reference(p, g, s, c):
        """``v = alpha*v + (1-alpha)*g^2``; ``d = sqrt(max(v - gbar^2, 0) if centered else v) + eps``; ``p -= lr*g/d`` (or via momentum)."""
        g = _signed_decayed(p, g, c)
        a = c["alpha"]
        v = s["square_avg"]
        _ema(v, a, g * g)
        if c["centered"]:
            gbar = s["grad_avg"]
            _ema(gbar, a, g)
            # v - gbar^2 >= 0 in exact arithmetic; rounding can make it slightly negative (a steady
            # gradient), where torch's sqrt gives NaN: clamp at 0, which changes nothing elsewhere
            d = np.sqrt(np.maximum(v - gbar * gbar, 0)) + c["eps"]
        else:
            d = np.sqrt(v) + c["eps"]
        if c["momentum"] > 0:
            b = s["momentum_buffer"]
            b *= c["momentum"]
            b += g / d
            p -= c["lr"] * b
        else:
            p -= c["lr"] * (g / d)


class Adam(Optimizer):
    r"""Adam (Kingma & Ba 2014, Algorithm 1), as torch.optim.Adam and the seed notes.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,

        \hat m_t = \frac{m_t}{1-\beta_1^t}, \qquad \hat v_t = \frac{v_t}{1-\beta_2^t}, \qquad
        p_t = p_{t-1} - \alpha\,\frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}

    with ``lr`` = :math:`\alpha`, ``betas`` = :math:`(\beta_1, \beta_2)`, ``eps`` = :math:`\epsilon`,
    :math:`m_0 = v_0 = 0`. ``amsgrad`` (Reddi, Kale & Kumar 2018) uses
    :math:`\max(v_{\max}, v_t)` of the raw :math:`v` in place of :math:`v_t`.
    ``bias_correction=False`` (adamkit's own) drops the two corrections: RMSProp with momentum, whose
    first step is ``lr*(1-beta1)/sqrt(1-beta2)`` instead of ``lr``. ``decoupled_weight_decay=True`` is
    AdamW. ``nonfinite``: ``"raise"`` (default), ``"skip"`` or ``"ignore"`` a step with a NaN/inf gradient.

    Differences elsewhere: Keras/TensorFlow use "epsilon hat" (``eps*sqrt(1-beta2^t)`` in effect,
    default 1e-7); optax's ``eps_root`` sits inside the root and its AMSGrad takes the max of the
    corrected :math:`\hat v`.

    Example::

        >>> import numpy as np, adamkit as ak
        >>> w = np.zeros(3)
        >>> opt = ak.Adam(w, lr=0.1)
        >>> opt.step(np.array([1.0, -2.0, 0.0]))
        >>> w  # the first step moves every coordinate with a nonzero gradient by lr
        array([-0.1,  0.1,  0. ])
    """

    fused_kernel = "Adam"
    state_slots = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    group_scalars: dict = {}

    def __init__(self, params: Any, lr: Any = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
                 decoupled_weight_decay: bool = False, bias_correction: bool = True,
                 nonfinite: str = "raise"):
        super().__init__(params, locals())

    @classmethod
    def validate(cls, hp):
        return _common(hp)

    @staticmethod
    def slots(hp):
        out = {"exp_avg": 0.0, "exp_avg_sq": 0.0}
        if hp["amsgrad"]:
            out["max_exp_avg_sq"] = 0.0
        return out

    @staticmethod
    def constants(hp, t, scalars):
        b1, b2 = hp["betas"]
        bc1, bc2 = (1.0 - b1 ** t, 1.0 - b2 ** t) if hp["bias_correction"] else (1.0, 1.0)
        return {"step_size": hp["lr"] / bc1, "inv_bc2_sqrt": 1.0 / bc2 ** 0.5}

    @staticmethod
    def reference(p, g, s, c):
        """``m = b1*m + (1-b1)*g``; ``v = b2*v + (1-b2)*g^2``; ``p -= (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps)``.

        The division by ``sqrt(bc2)`` is a multiplication by ``inv_bc2_sqrt = 1/sqrt(bc2)``, computed once
        per step: the same number to rounding, and one division per element fewer (see ``_kernels``)."""
        g = _signed_decayed(p, g, c)
        b1, b2 = c["betas"]
        m, v = s["exp_avg"], s["exp_avg_sq"]
        _ema(m, b1, g)
        _ema(v, b2, g * g)
        if c["amsgrad"]:
            vmax = s["max_exp_avg_sq"]
            np.maximum(vmax, v, out=vmax)
            v = vmax
        denom = np.sqrt(v) * c["inv_bc2_sqrt"] + c["eps"]
        p -= c["step_size"] * (m / denom)


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter 2019), as torch.optim.AdamW.

    .. math:: p \leftarrow p\,(1 - \alpha\lambda), \text{ then the Adam step of } :class:`Adam`

    with ``weight_decay`` = :math:`\lambda` (default 1e-2). As in torch, the decay is scaled by ``lr``
    (the paper multiplies :math:`\lambda` by the schedule multiplier only).
    """

    fused_kernel = "Adam"
    fixed = {"decoupled_weight_decay": True}

    def __init__(self, params: Any, lr: Any = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 bias_correction: bool = True, nonfinite: str = "raise"):
        Optimizer.__init__(self, params, locals())


class Adamax(Optimizer):
    r"""Adamax (Kingma & Ba 2014, section 7.1), as torch.optim.Adamax.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad u_t = \max(\beta_2 u_{t-1}, |g_t| + \epsilon), \qquad
        p_t = p_{t-1} - \frac{\alpha}{1-\beta_1^t}\,\frac{m_t}{u_t}

    with ``lr`` = :math:`\alpha` (default 2e-3). The paper has no :math:`\epsilon`; torch adds it
    inside the max, as here. optax adds ``eps`` to :math:`u_t` in the denominator instead.
    """

    fused_kernel = "Adamax"
    state_slots = ("exp_avg", "exp_inf")
    group_scalars: dict = {}

    def __init__(self, params: Any, lr: Any = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, *, maximize: bool = False,
                 nonfinite: str = "raise"):
        super().__init__(params, locals())

    @classmethod
    def validate(cls, hp):
        return _common(hp)

    @staticmethod
    def slots(hp):
        return {"exp_avg": 0.0, "exp_inf": 0.0}

    @staticmethod
    def constants(hp, t, scalars):
        return {"clr": hp["lr"] / (1.0 - hp["betas"][0] ** t)}

    @staticmethod
    def reference(p, g, s, c):
        """``m = b1*m + (1-b1)*g``; ``u = max(b2*u, |g| + eps)``; ``p -= (lr/bc1) * m / u``."""
        g = _signed_decayed(p, g, c)
        b1, b2 = c["betas"]
        m, u = s["exp_avg"], s["exp_inf"]
        _ema(m, b1, g)
        u *= b2
        np.maximum(u, np.abs(g) + c["eps"], out=u)
        p -= c["clr"] * (m / u)


class NAdam(Optimizer):
    r"""NAdam (Dozat 2016): Adam with Nesterov momentum, as torch.optim.NAdam.

    .. math::
        \mu_t = \beta_1\,(1 - \tfrac12\, 0.96^{t\psi}), \quad P_t = \textstyle\prod_{i\le t}\mu_i, \quad
        m_t, v_t \text{ as Adam}, \quad d_t = \sqrt{v_t/(1-\beta_2^t)} + \epsilon,

        p_t = p_{t-1} - \alpha\,\frac{1-\mu_t}{1-P_t}\,\frac{g_t}{d_t}
                      - \alpha\,\frac{\mu_{t+1}}{1-P_t\,\mu_{t+1}}\,\frac{m_t}{d_t}

    with ``lr`` = :math:`\alpha` (default 2e-3), ``momentum_decay`` = :math:`\psi` (4e-3). The product
    :math:`P_t` is kept in the group state in float64. torch keeps it as a tensor of its default dtype
    (float32 unless ``torch.set_default_dtype(torch.float64)``), so with float64 parameters the two agree
    to 1e-12 only under a float64 default (about 3e-10 apart otherwise). ``decoupled_weight_decay=True``
    gives NAdamW.
    """

    fused_kernel = "NAdam"
    state_slots = ("exp_avg", "exp_avg_sq")
    group_scalars = {"mu_product": lambda name, value: check_real(name, value, maximum=1.0)}  # P_t in [0, 1]

    def __init__(self, params: Any, lr: Any = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, *, maximize: bool = False, nonfinite: str = "raise"):
        super().__init__(params, locals())

    @classmethod
    def validate(cls, hp):
        out = _common(hp)
        out["momentum_decay"] = check_real("momentum_decay", hp["momentum_decay"])
        return out

    @staticmethod
    def slots(hp):
        return {"exp_avg": 0.0, "exp_avg_sq": 0.0}

    @staticmethod
    def constants(hp, t, scalars):
        b1, b2 = hp["betas"]
        psi, lr = hp["momentum_decay"], hp["lr"]
        mu = b1 * (1.0 - 0.5 * 0.96 ** (t * psi))
        mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * psi))
        prod = scalars.get("mu_product", 1.0) * mu
        return {
            "inv_bc2": 1.0 / (1.0 - b2 ** t),
            "coef_g": lr * (1.0 - mu) / (1.0 - prod),
            "coef_m": lr * mu_next / (1.0 - prod * mu_next),
            "next_scalars": {"mu_product": prod},
        }

    @staticmethod
    def reference(p, g, s, c):
        """``m, v`` as Adam; ``d = sqrt(v/bc2) + eps``; ``p -= coef_g * g/d + coef_m * m/d``.

        Computed as ``r = 1/(sqrt(v * inv_bc2) + eps)`` with ``inv_bc2 = 1/bc2`` once per step, then
        ``p -= coef_g * (g*r)``, ``p -= coef_m * (m*r)``: the same numbers to rounding, with one division
        per element instead of three (see ``_kernels``)."""
        g = _signed_decayed(p, g, c)
        b1, b2 = c["betas"]
        m, v = s["exp_avg"], s["exp_avg_sq"]
        _ema(m, b1, g)
        _ema(v, b2, g * g)
        r = 1.0 / (np.sqrt(v * c["inv_bc2"]) + c["eps"])
        p -= c["coef_g"] * (g * r)
        p -= c["coef_m"] * (m * r)


class RAdam(Optimizer):
    r"""RAdam (Liu et al. 2020): Adam whose adaptive step is switched on once its variance is tractable.

    .. math::
        \rho_\infty = \frac{2}{1-\beta_2} - 1, \quad \rho_t = \rho_\infty - \frac{2t\beta_2^t}{1-\beta_2^t},
        \quad \hat m_t = \frac{m_t}{1-\beta_1^t},

        p_t = p_{t-1} - \alpha\,\hat m_t\, r_t \frac{\sqrt{1-\beta_2^t}}{\sqrt{v_t} + \epsilon}
        \text{ if } \rho_t > 5, \text{ else } p_{t-1} - \alpha \hat m_t,
        \qquad r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}}

    with ``lr`` = :math:`\alpha`; :math:`m_t, v_t` as Adam. The threshold 5 is torch's (the paper: 4);
    with :math:`\beta_2 = 0.999` the first five steps are plain momentum SGD.
    """

    fused_kernel = "RAdam"
    state_slots = ("exp_avg", "exp_avg_sq")
    group_scalars: dict = {}

    def __init__(self, params: Any, lr: Any = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, decoupled_weight_decay: bool = False, *,
                 maximize: bool = False, nonfinite: str = "raise"):
        super().__init__(params, locals())

    @classmethod
    def validate(cls, hp):
        return _common(hp)

    @staticmethod
    def slots(hp):
        return {"exp_avg": 0.0, "exp_avg_sq": 0.0}

    @staticmethod
    def constants(hp, t, scalars):
        b1, b2 = hp["betas"]
        bc1, bc2 = 1.0 - b1 ** t, 1.0 - b2 ** t
        rho_inf = 2.0 / (1.0 - b2) - 1.0
        rho_t = rho_inf - 2.0 * t * b2 ** t / bc2
        if rho_t > 5.0:
            rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            return {"adaptive": True, "inv_bc1": 1.0 / bc1, "bc2_sqrt": bc2 ** 0.5, "rect": rect}
        return {"adaptive": False, "inv_bc1": 1.0 / bc1, "bc2_sqrt": bc2 ** 0.5, "rect": 0.0}

    @staticmethod
    def reference(p, g, s, c):
        """``m, v`` as Adam; ``p -= (lr * m/bc1) * (sqrt(bc2)/(sqrt(v)+eps)) * r`` if rho_t > 5, else ``p -= lr * m/bc1``.

        ``m/bc1`` is computed as ``m * inv_bc1`` (``inv_bc1 = 1/bc1`` once per step), as in Adam."""
        g = _signed_decayed(p, g, c)
        b1, b2 = c["betas"]
        m, v = s["exp_avg"], s["exp_avg_sq"]
        _ema(m, b1, g)
        _ema(v, b2, g * g)
        mhat_lr = (m * c["inv_bc1"]) * c["lr"]
        if c["adaptive"]:
            p -= mhat_lr * (c["bc2_sqrt"] / (np.sqrt(v) + c["eps"])) * c["rect"]
        else:
            p -= mhat_lr


OPTIMIZERS: dict[str, type[Optimizer]] = {
    cls.__name__.lower(): cls for cls in (SGD, Adagrad, RMSprop, Adam, AdamW, Adamax, NAdam, RAdam)
}


def optimizer_class(name: Any) -> type[Optimizer]:
    """The optimizer class for ``name`` (case-insensitive, e.g. ``"adam"``), or the class itself."""
    if isinstance(name, type) and issubclass(name, Optimizer):
        return name
    if isinstance(name, str) and name.lower() in OPTIMIZERS:
        return OPTIMIZERS[name.lower()]
    raise ValueError(f"optimizer {name!r}: expected one of {', '.join(OPTIMIZERS)} (or an Optimizer class)")
