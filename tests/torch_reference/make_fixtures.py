"""Make the torch.optim reference trajectories used by ``tests/test_torch_parity.py``.

    python tests/torch_reference/make_fixtures.py        # rewrites tests/torch_reference/trajectories.npz

For every entry of ``configs.CONFIGS`` and both dtypes, runs ``torch.optim.<optimizer>`` with
``foreach=False`` (the plain for-loop implementation, the ground truth) for ``configs.STEPS`` steps on
the shared initial parameters and gradients, and stores the parameters after each step of
``configs.CHECKPOINTS``. The file also holds the initial parameters and every gradient (float64, exact
in float32), so the fixture test needs neither torch nor NumPy's random streams.

torch is a reference for the tests only, never a dependency of adamkit. Stored with torch 2.13.0 (CPU).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "trajectories.npz"


def _load_configs():
    """The shared table, loaded by path under one unique module name (no sys.path or package needed)."""
    name = "adamkit_torch_reference_configs"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "configs.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


configs = _load_configs()


def torch_optimizer(torch, name: str, params, kwargs: dict):
    """``torch.optim.<name>(params, **kwargs, foreach=False)``."""
    return getattr(torch.optim, name)(params, **kwargs, foreach=False)


def run_torch(name: str, kwargs: dict, dtype: str, init: np.ndarray, grads: np.ndarray,
              record=None) -> np.ndarray:
    """Run torch.optim and return the flat parameters after each step in ``record`` (1-based; all by default).

    ``init`` is flat float64 over ``configs.SHAPES``; ``grads`` is (steps, n) float64, cast to ``dtype``.
    Returns an array (len(record), n) of ``dtype``.
    """
    import torch

    tdtype = getattr(torch, dtype)
    # torch keeps scalar state (NAdam's running product mu_1...mu_t) as a tensor of its *default* dtype,
    # float32 unless changed, even for float64 parameters; adamkit keeps such scalars in float64
    # (CONVENTIONS.md). Run each dtype under that default, so torch's scalars are float64 for float64.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(tdtype)
    try:
        return _run(torch, name, kwargs, dtype, tdtype, init, grads, record)
    finally:
        torch.set_default_dtype(previous)


def _run(torch, name, kwargs, dtype, tdtype, init, grads, record):
    steps = grads.shape[0]
    record = range(1, steps + 1) if record is None else record
    want = set(record)
    params = [torch.nn.Parameter(torch.tensor(a, dtype=tdtype)) for a in configs.split(init)]
    opt = torch_optimizer(torch, name, params, kwargs)
    # one tensor (steps, *shape) per parameter; row t-1 is a contiguous tensor of the parameter's shape
    g_rows = [torch.from_numpy(np.ascontiguousarray(g)) for g in configs.split(grads.astype(dtype))]
    out = {}
    for t in range(1, steps + 1):
        for p, g in zip(params, g_rows):
            p.grad = g[t - 1]
        opt.step()
        if t in want:
            out[t] = np.concatenate([p.detach().numpy().ravel() for p in params])
    return np.stack([out[t] for t in record])


def main() -> None:
    import torch

    init = configs.make_init()
    grads = configs.make_grads()
    arrays: dict[str, np.ndarray] = {
        "init": init,
        "grads": grads,
        "checkpoints": np.asarray(configs.CHECKPOINTS, dtype=np.int64),
        "meta": np.array(json.dumps({
            "torch": torch.__version__, "numpy": np.__version__, "steps": configs.STEPS,
            "shapes": [list(s) for s in configs.SHAPES], "foreach": False,
            "torch_default_dtype": "the parameters' dtype (see run_torch)",
        })),
    }
    for cname, opt_name, kwargs in configs.CONFIGS:
        arrays[f"{cname}|config"] = np.array(json.dumps([opt_name, configs.config_json(kwargs)]))
        for dtype in configs.DTYPES:
            traj = run_torch(opt_name, kwargs, dtype, init, grads, configs.CHECKPOINTS)
            if not np.all(np.isfinite(traj)) or np.abs(traj).max() > 10:
                raise SystemExit(f"{cname} {dtype}: parameters leave O(1) (max |p| = {np.abs(traj).max():.3g})")
            arrays[f"{cname}|{dtype}"] = traj
    np.savez_compressed(FIXTURE, **arrays)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size / 1024:.1f} KiB, {len(configs.CONFIGS)} configurations "
          f"x {len(configs.DTYPES)} dtypes, torch {torch.__version__})")


if __name__ == "__main__":
    main()
