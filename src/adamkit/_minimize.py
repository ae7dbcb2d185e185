"""``adamkit.minimize``: scipy-style minimization with any adamkit optimizer, and a plug-in for
``scipy.optimize.minimize`` (``method=adamkit.as_scipy_method("adam")``).

The loop: evaluate the value and gradient at ``x``; stop if the gradient's max-norm is at most ``gtol``
or ``maxiter`` steps were taken; otherwise take one optimizer step (``x`` is updated in place) and call
the callback with the new iterate. Every call of ``fun`` and ``jac`` is counted as it is made.
"""

from __future__ import annotations

import inspect
import math
import numbers
import warnings
from typing import Any, Callable

import numpy as np
from scipy.optimize import OptimizeResult

from ._optimizer import Optimizer
from ._optimizers import OPTIMIZERS, optimizer_class

__all__ = ["minimize", "as_scipy_method"]

#: minimize's own options and their defaults (the optimizer's hyperparameters are accepted too).
OWN_OPTIONS: dict[str, Any] = {"maxiter": 10_000, "gtol": 1e-5, "disp": False, "finite_diff_rel_step": None}
JAC_METHODS = ("2-point", "3-point", "autograd", "jax")

SUCCESS, MAXITER, NONFINITE, CALLBACK_STOP = 0, 1, 3, 99
_MESSAGES = {
    SUCCESS: "Optimization terminated successfully.",
    MAXITER: "Maximum number of iterations has been exceeded.",
    CALLBACK_STOP: "`callback` raised `StopIteration`.",
}


# --------------------------------------------------------------------------------------------------
# Public entry points


def minimize(fun: Callable, x0: Any, args: Any = (), method: Any = "adam", jac: Any = None,
             hess: Any = None, hessp: Any = None, bounds: Any = None, constraints: Any = (),
             tol: float | None = None, callback: Callable | None = None,
             options: dict[str, Any] | None = None) -> OptimizeResult:
    """Minimize a scalar function of one array with an adamkit optimizer; scipy's interface and result.

    Args:
        fun: ``fun(x, *args) -> float`` (or ``-> (float, gradient)`` with ``jac=True``). ``x`` has the
            shape of ``x0`` and is a fresh copy at every call.
        x0: the starting point: an array of any shape (a column vector stays a column vector), or
            anything ``np.asarray`` turns into real numbers. float32 stays float32; other real types
            become float64. It is not modified.
        args: extra arguments passed to ``fun`` and ``jac`` (a non-tuple is wrapped in one).
        method: an optimizer name (case-insensitive: ``"adam"``, ``"adamw"``, ``"sgd"``, ``"nadam"``, ...)
            or class (``adamkit.Adam``).
        jac: the gradient: a callable ``jac(x, *args)``; ``True`` when ``fun`` returns ``(value, gradient)``;
            ``"2-point"`` (the default, also for ``None``/``False``) or ``"3-point"`` finite differences
            with scipy's relative step; ``"autograd"`` or ``"jax"`` to differentiate ``fun`` with that
            package (which must be installed; ``fun`` must then use its numpy).
        hess, hessp: ignored with a ``RuntimeWarning`` (first-order methods); bounds, constraints:
            refused with a ``ValueError`` (unconstrained methods). Accepted so that every argument sits
            where ``scipy.optimize.minimize`` has it.
        tol: the default for ``gtol``.
        callback: called after every step, as ``callback(xk)`` or, when its only parameter is named
            ``intermediate_result``, as ``callback(intermediate_result=OptimizeResult(x, fun, jac, nit))``
            (scipy's rule). Raising ``StopIteration`` ends the run (status 99, ``success=False``).
        options: the optimizer's hyperparameters (``lr`` may be a number or a schedule from
            :mod:`adamkit.schedules`, e.g. ``betas``, ``eps``, ``weight_decay``) and
            ``maxiter`` (steps, default 10000), ``gtol`` (stop when ``max|gradient| <= gtol``, default
            1e-5), ``disp`` (print a summary), ``finite_diff_rel_step``.

    Returns:
        ``scipy.optimize.OptimizeResult`` with ``x`` (shaped like ``x0``), ``fun``, ``jac`` (at ``x``),
        ``nit`` (optimizer steps), ``nfev`` (calls of ``fun``, finite-difference calls included),
        ``njev`` (gradient evaluations: calls of ``jac``, of ``fun`` with ``jac=True`` or of the
        autograd/jax gradient, or finite-difference approximations), ``status`` (0 converged,
        1 maxiter reached, 3 non-finite value, gradient or iterate, 99 callback stop), ``success``
        (``status == 0``) and ``message``. A non-finite value or gradient ends the run with status 3,
        a message saying at which iteration and what, and ``x``, ``fun``, ``jac`` at the last iterate
        whose value and gradient were finite.

    Example::

        >>> import numpy as np, adamkit as ak
        >>> from scipy.optimize import rosen, rosen_der
        >>> res = ak.minimize(rosen, np.array([-1.2, 1.0]), jac=rosen_der, method="adam",
        ...                   options={"lr": 0.03, "gtol": 1e-6, "maxiter": 20000})
        >>> res.success, np.allclose(res.x, 1.0, atol=1e-4), res.nfev == res.njev == res.nit + 1
        (True, True, True)

    Unlike scipy's quasi-Newton methods, first-order methods need a step size: tune ``lr`` (or give
    a decaying schedule), and expect many more iterations than BFGS on smooth deterministic problems.
    """
    cls = _method_class(method)
    _unsupported(cls.__name__, hess, hessp, bounds, constraints)
    return _run(fun, x0, args, cls, jac, tol, callback, options, where="options")


def as_scipy_method(name: Any) -> Callable[..., OptimizeResult]:
    """An adamkit optimizer as a ``method=`` for ``scipy.optimize.minimize`` (scipy's custom-method protocol).

    The returned callable accepts what scipy passes: ``fun, x0, args, jac, hess, hessp, bounds,
    constraints, callback`` and the ``options`` (plus ``tol``, which scipy passes as an option). Bounds
    and constraints are rejected with a ``ValueError``; ``hess``/``hessp`` are ignored with a
    ``RuntimeWarning``. ``jac=True`` is unwrapped so each call of ``fun`` counts once in ``nfev`` and
    once in ``njev``. scipy replaces string ``jac`` values (``"2-point"``, ...) by ``None`` for custom
    methods, so they arrive here as 2-point finite differences; use :func:`adamkit.minimize` for the others.
    Options and results are those of :func:`adamkit.minimize`.

    Example::

        >>> import numpy as np, scipy.optimize as so, adamkit as ak
        >>> res = so.minimize(so.rosen, np.array([-1.2, 1.0]), jac=so.rosen_der,
        ...                   method=ak.as_scipy_method("adam"),
        ...                   options={"lr": 0.03, "gtol": 1e-6, "maxiter": 20000})
        >>> res.success, np.allclose(res.x, 1.0, atol=1e-4)
        (True, True)
    """
    cls = _method_class(name, what="name")

    def method(fun: Callable, x0: Any, args: Any = (), jac: Any = None, hess: Any = None, hessp: Any = None,
               bounds: Any = None, constraints: Any = (), callback: Callable | None = None,
               **options: Any) -> OptimizeResult:
        _unsupported(cls.__name__, hess, hessp, bounds, constraints, stacklevel=4)
        fun, jac = _unwrap_memoized(fun, jac)
        opts = dict(options)
        tol = opts.pop("tol", None)
        return _run(fun, x0, args, cls, jac, tol, callback, opts, where="options")

    method.__name__ = method.__qualname__ = f"adamkit_{cls.__name__.lower()}"
    method.__doc__ = f"adamkit's {cls.__name__} as a scipy.optimize.minimize method (see adamkit.as_scipy_method)."
    return method


# --------------------------------------------------------------------------------------------------
# Argument checks


def _unsupported(label: str, hess: Any, hessp: Any, bounds: Any, constraints: Any, stacklevel: int = 3) -> None:
    """Refuse bounds and constraints; warn that a Hessian is ignored."""
    if bounds is not None:
        raise ValueError(f"bounds={bounds!r}: adamkit's {label} is an unconstrained method; expected "
                         f"bounds=None (use L-BFGS-B, TNC or trust-constr for bounds)")
    if _has_constraints(constraints):
        raise ValueError(f"constraints={constraints!r}: adamkit's {label} is an unconstrained method; "
                         f"expected no constraints (use SLSQP, COBYLA or trust-constr)")
    for hname, h in (("hess", hess), ("hessp", hessp)):
        if h is not None:
            warnings.warn(f"adamkit's {label} is a first-order method: {hname} is ignored",
                          RuntimeWarning, stacklevel=stacklevel)


def _method_class(method: Any, what: str = "method") -> type[Optimizer]:
    try:
        return optimizer_class(method)
    except ValueError:
        raise ValueError(f"{what}={method!r}: expected an adamkit optimizer name, one of "
                         f"{', '.join(OPTIMIZERS)} (case-insensitive), or an Optimizer class") from None


def _has_constraints(constraints: Any) -> bool:
    if constraints is None:
        return False
    if isinstance(constraints, (list, tuple)):
        return len(constraints) > 0
    return True


def _unwrap_memoized(fun: Callable, jac: Any) -> tuple[Callable, Any]:
    """scipy turns ``jac=True`` into ``fun=MemoizeJac(fun), jac=fun.derivative``; undo it."""
    owner = getattr(jac, "__self__", None)
    if owner is not None and owner is fun and type(owner).__name__ == "MemoizeJac" \
            and getattr(jac, "__name__", "") == "derivative" and callable(getattr(owner, "fun", None)):
        return owner.fun, True
    return fun, jac


def _check_x0(x0: Any) -> np.ndarray:
    if isinstance(x0, np.ndarray):
        a = x0
    else:
        try:
            a = np.asarray(x0)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"x0={x0!r}: expected an array of real numbers ({exc})") from None
    if a.dtype.kind not in "fiu":
        raise TypeError(f"x0: expected real numbers, got an array of dtype {a.dtype}")
    if a.size == 0:
        raise ValueError(f"x0: expected at least one element, got an empty array of shape {a.shape}")
    dtype = a.dtype if a.dtype in (np.float32, np.float64) else np.float64
    x = np.array(a, dtype=dtype, copy=True, order="C")
    bad = ~np.isfinite(x)
    if bad.any():
        where = [tuple(int(i) for i in ix) for ix in np.argwhere(bad)[:5]]
        where_s = ", ".join(str(w[0] if len(w) == 1 else w) for w in where) if x.ndim else "()"
        raise ValueError(f"x0: expected finite numbers, got {int(bad.sum())} non-finite value(s) "
                         f"(first at index {where_s}: {x[bad][0]!r})")
    return x


def _check_options(cls: type[Optimizer], options: Any, tol: Any, where: str) -> tuple[dict, dict]:
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise TypeError(f"{where}={options!r}: expected a dict of option names to values")
    hyper = [k for k in cls.defaults]
    unknown = sorted(k for k in options if k not in OWN_OPTIONS and k not in hyper)
    if unknown:
        raise ValueError(f"{where}: unknown option(s) {unknown}; method {cls.__name__} accepts "
                         f"{', '.join(hyper)} and minimize's {', '.join(OWN_OPTIONS)}")
    own = {**OWN_OPTIONS, **{k: v for k, v in options.items() if k in OWN_OPTIONS}}
    if tol is not None and "gtol" not in options:
        own["gtol"] = _real("tol", tol, minimum=0.0)
    maxiter = own["maxiter"]
    if isinstance(maxiter, bool) or not isinstance(maxiter, numbers.Integral) or maxiter < 0:
        raise ValueError(f"maxiter={maxiter!r}: expected an integer >= 0")
    own["maxiter"] = int(maxiter)
    own["gtol"] = _real("gtol", own["gtol"], minimum=0.0)
    if not isinstance(own["disp"], (numbers.Integral, np.bool_)) or own["disp"] not in (0, 1):  # bools, and scipy's 0 and 1
        raise TypeError(f"disp={own['disp']!r}: expected True or False")
    own["disp"] = bool(own["disp"])
    if own["finite_diff_rel_step"] is not None:
        own["finite_diff_rel_step"] = _real("finite_diff_rel_step", own["finite_diff_rel_step"], minimum=0.0,
                                            positive=True)
    hp = {k: v for k, v in options.items() if k in hyper}
    return own, hp


def _real(name: str, value: Any, minimum: float, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)) \
            or float(value) < minimum or (positive and float(value) == 0):
        raise ValueError(f"{name}={value!r}: expected a finite number {'>' if positive else '>='} {minimum:g}")
    return float(value)


def as_scalar(value: Any, what: str) -> float:
    """``value`` as a Python float; a real number or an array of one element, else ``ValueError``."""
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        return float(value)
    try:
        a = np.asarray(value)
    except Exception:  # noqa: BLE001 - anything that is not array-like
        a = None
    if a is None or a.dtype.kind not in "fiu" or a.size != 1:
        desc = f"an array of shape {a.shape} and dtype {a.dtype}" if isinstance(a, np.ndarray) and a.dtype != object \
            else f"a {type(value).__name__}"
        raise ValueError(f"{what} returned {desc}: expected a real scalar (a number or an array of one element)")
    return float(a.reshape(()))


# --------------------------------------------------------------------------------------------------
# The objective: one evaluation gives (value, gradient), every call counted


class _Objective:
    def __init__(self, fun: Callable, jac: Any, args: tuple, x: np.ndarray, rel_step: float | None):
        self.fun, self.args = fun, args
        self.shape, self.dtype = x.shape, x.dtype
        self.nfev = self.njev = 0
        self.rel_step = rel_step
        if callable(jac) and not isinstance(jac, bool):
            self.mode, self.jac = "callable", jac
        elif jac is True:
            self.mode = "combined"
        elif jac is None or jac is False:
            self.mode = "2-point"
        elif isinstance(jac, str) and jac in JAC_METHODS:
            self.mode = jac
        else:
            raise ValueError(f"jac={jac!r}: expected a callable, True (fun returns value and gradient), None, "
                             f"or one of {', '.join(map(repr, JAC_METHODS))}")
        if self.mode in ("autograd", "jax"):
            self.value_and_grad = _auto_value_and_grad(self.mode, fun, args, x.dtype)

    def _value(self, x: np.ndarray) -> float:
        self.nfev += 1
        return as_scalar(self.fun(x, *self.args), "fun")

    def _grad(self, g: Any, what: str) -> np.ndarray:
        try:
            a = np.asarray(g)
        except Exception:  # noqa: BLE001
            a = np.asarray(None)
        if a.dtype.kind not in "fiu":
            raise ValueError(f"{what} returned {type(g).__name__} of dtype {a.dtype}: expected a real array of "
                             f"shape {self.shape} (the shape of x0)")
        if a.shape != self.shape:
            if _squeezed(a.shape) != _squeezed(self.shape):
                raise ValueError(f"{what} returned an array of shape {a.shape}: expected shape {self.shape} "
                                 f"(the shape of x0)")
            a = a.reshape(self.shape)
        with np.errstate(over="ignore"):
            return np.array(a, dtype=self.dtype, copy=True)

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray | None]:
        """(value, gradient) at a copy of ``x``; the gradient is None when the value is not finite."""
        mode = self.mode
        if mode == "combined":
            self.nfev += 1
            self.njev += 1
            out = self.fun(x.copy(), *self.args)
            if not isinstance(out, (tuple, list)) or len(out) != 2:
                raise ValueError(f"fun returned {type(out).__name__}: with jac=True expected a pair "
                                 f"(value, gradient)")
            return as_scalar(out[0], "fun"), self._grad(out[1], "fun (its gradient)")
        if mode in ("autograd", "jax"):
            self.nfev += 1
            self.njev += 1
            f, g = self.value_and_grad(x.copy())
            return as_scalar(f, "fun"), self._grad(g, f"the {mode} gradient of fun")
        f = self._value(x.copy())
        if not math.isfinite(f):
            return f, None
        if mode == "callable":
            self.njev += 1
            return f, self._grad(self.jac(x.copy(), *self.args), "jac")
        self.njev += 1
        return f, self._finite_difference(x, f)

    def _finite_difference(self, x: np.ndarray, f0: float) -> np.ndarray:
        """scipy's relative step: h = rel_step * sign(x) * max(1, |x|), rel_step = eps**(1/2) or eps**(1/3)."""
        eps = np.finfo(self.dtype).eps
        rel = self.rel_step if self.rel_step is not None else (eps ** 0.5 if self.mode == "2-point" else eps ** (1 / 3))
        flat = x.reshape(-1)
        g = np.empty(flat.size, dtype=np.float64)
        for i in range(flat.size):
            xi = float(flat[i])
            h = rel * (1.0 if xi >= 0 else -1.0) * max(1.0, abs(xi))
            xp = flat.copy()
            xp[i] = xi + h
            dp = float(xp[i]) - xi  # the step actually representable
            if dp == 0:
                raise ValueError(f"finite_diff_rel_step={self.rel_step!r}: the finite-difference step at x[{i}] = "
                                 f"{xi!r} rounds to 0 in {self.dtype}; expected a relative step of at least "
                                 f"{float(np.finfo(self.dtype).eps)!r}")
            if self.mode == "2-point":
                g[i] = (self._value(xp.reshape(self.shape)) - f0) / dp
            else:
                xm = flat.copy()
                xm[i] = xi - h
                dm = xi - float(xm[i])
                g[i] = (self._value(xp.reshape(self.shape)) - self._value(xm.reshape(self.shape))) / (dp + dm)
        return g.reshape(self.shape).astype(self.dtype)


def _squeezed(shape: tuple) -> tuple:
    """The shape without its length-1 axes: (n, 1), (1, n) and (n,) hold a vector the same way."""
    return tuple(d for d in shape if d != 1)


def _auto_value_and_grad(kind: str, fun: Callable, args: tuple, dtype: np.dtype) -> Callable:
    """``x -> (value, gradient)`` from autograd or jax, or an ImportError saying what to install."""
    def f(x):
        return fun(x, *args)

    if kind == "autograd":
        try:
            import autograd  # noqa: PLC0415
        except ImportError:
            raise ImportError("jac='autograd' needs the autograd package, which is not installed "
                              "(pip install autograd); or pass jac as a callable, True or '2-point'") from None
        return autograd.value_and_grad(f)
    try:
        import jax  # noqa: PLC0415
        import jax.numpy as jnp  # noqa: PLC0415
    except ImportError:
        raise ImportError("jac='jax' needs the jax package, which is not installed (pip install jax); "
                          "or pass jac as a callable, True or '2-point'") from None
    if dtype == np.float64 and not jax.config.read("jax_enable_x64"):
        warnings.warn("jac='jax' with float64 x0: jax computes in float32 unless "
                      "jax.config.update('jax_enable_x64', True) is set first", RuntimeWarning, stacklevel=4)
    vg = jax.value_and_grad(f)

    def value_and_grad(x):
        v, g = vg(jnp.asarray(x))
        return float(v), np.asarray(g)

    return value_and_grad


# --------------------------------------------------------------------------------------------------
# The loop


def _callback_caller(callback: Any) -> Callable | None:
    if callback is None:
        return None
    if not callable(callback):
        raise TypeError(f"callback={callback!r}: expected a callable or None")
    try:
        new_style = set(inspect.signature(callback).parameters) == {"intermediate_result"}
    except (TypeError, ValueError):
        new_style = False
    if hasattr(callback, "stop_iteration"):
        # already wrapped by scipy (scipy's _wrap_callback): it takes the OptimizeResult positionally
        return lambda x, f, g, nit: callback(OptimizeResult(x=x, fun=f, jac=g, nit=nit))
    if new_style:
        return lambda x, f, g, nit: callback(intermediate_result=OptimizeResult(x=x, fun=f, jac=g, nit=nit))
    return lambda x, f, g, nit: callback(x)


def _nonfinite_what(f: float, g: np.ndarray | None) -> str:
    if not math.isfinite(f):
        return f"fun returned {f!r}"
    bad = np.argwhere(~np.isfinite(g))
    first = tuple(int(i) for i in bad[0])
    idx = first[0] if len(first) == 1 else first
    return f"the gradient has {len(bad)} non-finite entr{'y' if len(bad) == 1 else 'ies'} (first at index {idx}: {g[first]!r})"


def _run(fun, x0, args, cls, jac, tol, callback, options, where):
    if not callable(fun):
        raise TypeError(f"fun={fun!r}: expected a callable fun(x, *args) returning a scalar")
    x = _check_x0(x0)
    if not isinstance(args, tuple):
        args = (args,)
    own, hp = _check_options(cls, options, tol, where)
    call_back = _callback_caller(callback)
    obj = _Objective(fun, jac, args, x, own["finite_diff_rel_step"])
    opt = cls(x, **hp)  # validates the hyperparameters; updates x in place from now on
    gtol, maxiter = own["gtol"], own["maxiter"]

    nit = 0
    f, g = obj(x)
    status = None
    if g is None or not np.isfinite(g).all():
        status, message = NONFINITE, f"Non-finite result at the initial point x0: {_nonfinite_what(f, g)}."
        last = (x, f, g)
    else:
        last = (x.copy(), f, g)  # the last iterate whose value and gradient are finite
    while status is None:
        gmax = float(np.max(np.abs(g)))
        if gmax <= gtol:
            status, message = SUCCESS, f"{_MESSAGES[SUCCESS]} The gradient's max-norm {gmax:.3g} <= gtol={gtol:g}."
            break
        if nit >= maxiter:
            status, message = MAXITER, (f"{_MESSAGES[MAXITER]} (maxiter={maxiter}; the gradient's max-norm "
                                        f"{gmax:.3g} > gtol={gtol:g})")
            break
        opt.step(g)
        nit += 1
        if not np.isfinite(x).all():
            status, message = NONFINITE, (f"Non-finite iterate: step {nit} made x non-finite; x is the iterate "
                                          f"of step {nit - 1}.")
            break
        f, g = obj(x)
        if g is None or not np.isfinite(g).all():
            status, message = NONFINITE, (f"Non-finite result at iteration {nit}: {_nonfinite_what(f, g)}; x is "
                                          f"the last iterate with a finite value and gradient (iteration {nit - 1}).")
            break
        last = (x.copy(), f, g)
        if call_back is not None:
            try:
                call_back(last[0].copy(), f, g.copy(), nit)
            except StopIteration:
                status, message = CALLBACK_STOP, _MESSAGES[CALLBACK_STOP]
                break

    xr, fr, gr = last
    result = OptimizeResult(x=xr, fun=fr, jac=gr, nit=nit, nfev=obj.nfev, njev=obj.njev,
                            status=status, success=status == SUCCESS, message=message)
    if own["disp"]:
        print(f"{message}\n         Current function value: {fr:.6g}\n         Iterations: {nit}\n"
              f"         Function evaluations: {obj.nfev}\n         Gradient evaluations: {obj.njev}")
    return result
