"""state_dict / load_state_dict mismatches, damaged checkpoint files and atomic saving.

Every failing load must give a clear error and change nothing: the target's parameters and its whole
state_dict are compared bit for bit before and after.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import adamkit as ak
from adamkit import _checkpoint
from registry import REGISTRY, assert_same_tree, entries, snapshot


def _params(shape_w=(2, 3), dtype=np.float64, names=("w", "b"), seed=0):
    rng = np.random.default_rng(seed)
    return {names[0]: rng.standard_normal(shape_w).astype(dtype), names[1]: np.asarray(rng.standard_normal(), dtype)}


def _stepped(cls, params, kwargs=None, steps=2, seed=1):
    rng = np.random.default_rng(seed)
    opt = cls(params, lr=0.01, **(kwargs or {}))
    for _ in range(steps):
        opt.step({k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in params.items()})
    return opt


def _other(info):
    """Another optimizer of the registry (for the wrong-kind case)."""
    return REGISTRY[(REGISTRY.index(info) + 1) % len(REGISTRY)]


def _target(info):
    params = _params(seed=5)
    # the registry's second configuration: it has state slots for every optimizer (SGD: momentum)
    return params, _stepped(info.cls, params, info.configs[1], steps=1, seed=6)


class _Unchanged:
    """Context: the optimizer's parameters and state_dict are bit-identical at exit."""

    def __init__(self, params, opt):
        self.params, self.opt = params, opt

    def __enter__(self):
        self.before, self.sd = snapshot(self.params), self.opt.state_dict()
        return self

    def __exit__(self, *exc):
        assert snapshot(self.params) == self.before
        assert_same_tree(self.opt.state_dict(), self.sd)
        return False


# --------------------------------------------------------------------------------------------------
# Mismatched optimizers: by state_dict and through a file


def _source(info, case):
    """An optimizer that does not fit the target of ``_target(info)``, and the expected message."""
    kw = info.configs[1]
    if case == "kind":
        other = _other(info)
        return (_stepped(other.cls, _params(), other.configs[1]),
                rf"^state_dict is for optimizer '{other.name}'; this optimizer is '{info.name}'$")
    if case == "names":
        return (_stepped(info.cls, _params(names=("w", "c")), kw),
                r"^state_dict group 0 has parameters \['w', 'c'\]; this optimizer has \['w', 'b'\]$")
    if case == "shapes":
        return (_stepped(info.cls, _params(shape_w=(3, 2)), kw),
                r"^state_dict state 'w'/'\w+': expected shape \(2, 3\) and dtype float64, "
                r"got shape \(3, 2\) and dtype float64$")
    if case == "dtypes":
        return (_stepped(info.cls, _params(dtype=np.float32), kw),
                r"^state_dict state 'w'/'\w+': expected shape \(2, 3\) and dtype float64, "
                r"got shape \(2, 3\) and dtype float32$")
    if case == "groups":
        p = _params()
        opt = info.cls([{"params": {"w": p["w"]}}, {"params": {"b": p["b"]}}], lr=0.01, **kw)
        return opt, r"^state_dict has 2 parameter groups; this optimizer has 1$"
    raise AssertionError(case)


@pytest.mark.parametrize("via", ["state_dict", "file"])
@pytest.mark.parametrize("case", ["kind", "names", "shapes", "dtypes", "groups"])
@pytest.mark.parametrize("info", entries())
def test_load_mismatched_optimizer(info, case, via, tmp_path):
    source, match = _source(info, case)
    params, target = _target(info)
    if via == "file":
        source.save(tmp_path / "other.npz")
    with _Unchanged(params, target):
        with pytest.raises(ValueError, match=match):
            if via == "file":
                target.load(tmp_path / "other.npz")
            else:
                target.load_state_dict(source.state_dict())


def _edit(case, sd):
    """Damage a state_dict in place; return the expected message (and exception type)."""
    first_slot = next(iter(sd["state"]["w"]))
    if case == "missing-slot":
        del sd["state"]["w"][first_slot]
        return ValueError, rf"^state_dict state for parameter 'w' lacks slot\(s\) \['{first_slot}'\]$"
    if case == "missing-parameter":
        del sd["state"]["b"]
        return ValueError, r"^state_dict has no state for parameter 'b'$"
    if case == "unknown-parameter":
        sd["state"]["zzz"] = {}
        return ValueError, r"^state_dict has state for unknown parameter\(s\) \['zzz'\]$"
    if case == "slot-shape":
        sd["state"]["b"][first_slot] = np.zeros(2)
        return ValueError, rf"^state_dict state 'b'/'{first_slot}': expected shape \(\) and dtype float64, got shape \(2,\)"
    if case == "format":
        sd["format"] = 99
        return ValueError, r"^state_dict format 99: expected 1$"
    if case == "step":
        sd["group_state"][0]["step"] = -1
        return ValueError, r"^state_dict group_state\[0\]: expected a dict with an integer 'step' >= 0$"
    if case == "step_count":
        sd["step_count"] = 1.5
        return ValueError, r"^state_dict\['step_count'\]=1\.5: expected an integer >= 0$"
    if case == "skipped_steps":
        sd["skipped_steps"] = -2
        return ValueError, r"^state_dict\['skipped_steps'\]=-2: expected an integer >= 0$"
    if case == "bad-hyperparameter":
        sd["param_groups"][0]["lr"] = -1.0
        return ValueError, r"^lr=-1\.0: expected a finite number in \[0\.0, inf\]$"
    if case == "missing-hyperparameter":
        del sd["param_groups"][0]["lr"]
        return ValueError, r"^state_dict group 0 lacks hyperparameter\(s\) \['lr'\]$"
    if case == "unknown-slot":
        sd["state"]["w"]["bogus"] = np.zeros((2, 3))
        return ValueError, r"^state_dict state for parameter 'w' has slot\(s\) \['bogus'\] that \w+ does not use; it uses "
    if case == "unknown-group-scalar":
        sd["group_state"][0]["bogus"] = 1.0
        return ValueError, r"^state_dict group_state\[0\] has 'bogus', which \w+ does not keep; expected 'step'"
    if case == "bool-step_count":
        sd["step_count"] = True
        return ValueError, r"^state_dict\['step_count'\]=True: expected an integer >= 0$"
    if case == "state-not-a-dict":
        sd["state"] = [sd["state"]]
        return ValueError, r"^state_dict\['state'\]: expected a dict, got list$"
    if case == "groups-not-a-list":
        sd["param_groups"] = sd["param_groups"][0]
        return ValueError, r"^state_dict\['param_groups'\]: expected a list, got dict$"
    if case == "names-not-a-list":
        sd["param_groups"][0]["names"] = 5
        return ValueError, r"^state_dict group 0 has parameters 5; this optimizer has \['w', 'b'\]$"
    raise AssertionError(case)


EDITS = ["missing-slot", "missing-parameter", "unknown-parameter", "slot-shape", "format", "step",
         "step_count", "skipped_steps", "bad-hyperparameter", "missing-hyperparameter", "unknown-slot",
         "unknown-group-scalar", "bool-step_count", "state-not-a-dict", "groups-not-a-list", "names-not-a-list"]


@pytest.mark.parametrize("cls, key, value, exc, match", [
    (ak.NAdam, "mu_product", "x", TypeError, r"^state_dict group_state\[1\]\['mu_product'\]='x': expected a real number$"),
    (ak.NAdam, "mu_product", float("nan"), ValueError,
     r"^state_dict group_state\[1\]\['mu_product'\]=nan: expected a finite number in \[0\.0, 1\.0\]$"),
    (ak.NAdam, "mu_product", 1.5, ValueError, r"^state_dict group_state\[1\]\['mu_product'\]=1\.5: expected"),
    (ak.SGD, "momentum_started", "yes", TypeError,
     r"^state_dict group_state\[1\]\['momentum_started'\]='yes': expected True or False$"),
])
def test_group_scalars_are_checked_on_load(cls, key, value, exc, match):
    """A group's own scalars (NAdam's mu product, SGD's first-momentum flag) are checked like the rest:
    a NaN mu product would turn every parameter into NaN at the next step, a string would fail there
    after the first group was updated."""
    a, b = np.ones(3), np.ones(2)
    opt = cls([{"params": [a]}, {"params": [b]}], lr=0.1, **({"momentum": 0.9} if cls is ak.SGD else {}))
    opt.step([[np.full(3, 0.5)], [np.full(2, -0.5)]])
    sd = opt.state_dict()
    assert key in sd["group_state"][1]
    sd["group_state"][1][key] = value
    with _Unchanged([a, b], opt):
        with pytest.raises(exc, match=match):
            opt.load_state_dict(sd)


@pytest.mark.parametrize("case", EDITS)
@pytest.mark.parametrize("info", entries())
def test_load_damaged_state_dict(info, case):
    params, target = _target(info)
    sd = _stepped(info.cls, _params(), info.configs[1]).state_dict()
    exc, match = _edit(case, sd)
    with _Unchanged(params, target):
        with pytest.raises(exc, match=match):
            target.load_state_dict(sd)


@pytest.mark.parametrize("bad", [None, [], {"state": {}}, "state"])
def test_load_something_that_is_not_a_state_dict(bad):
    params, target = _target(REGISTRY[3])
    with _Unchanged(params, target):
        with pytest.raises(ValueError, match=r"^state_dict: expected a dict made by Optimizer\.state_dict\(\)$"):
            target.load_state_dict(bad)


def test_state_dict_hyperparameters_replace_the_constructors():
    """As in torch: loading restores the saved configuration (amsgrad and its slot included)."""
    src_params = _params()
    src = _stepped(ak.Adam, src_params, {"amsgrad": True, "betas": (0.8, 0.9)})
    params = {k: v.copy() for k, v in src_params.items()}
    opt = ak.Adam(params, lr=0.5)
    opt.load_state_dict(src.state_dict())
    assert opt.param_groups[0]["amsgrad"] is True and opt.param_groups[0]["betas"] == (0.8, 0.9)
    assert opt.param_groups[0]["lr"] == 0.01
    assert set(opt.state["w"]) == {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    g = {"w": np.ones((2, 3)), "b": np.ones(())}
    src.step(g)
    opt.step(g)
    assert snapshot(params) == snapshot(src_params)


# --------------------------------------------------------------------------------------------------
# Damaged files


def _saved(tmp_path, info=REGISTRY[3]):
    params = _params()
    opt = _stepped(info.cls, params, info.configs[1])
    path = opt.save(tmp_path / "opt.npz")
    return path, path.read_bytes()


@pytest.mark.parametrize("info", entries())
@pytest.mark.parametrize("keep", [0, 10, 0.5, -1])
def test_truncated_file(info, keep, tmp_path):
    path, data = _saved(tmp_path, info)
    n = keep if isinstance(keep, int) and keep >= 0 else (len(data) + keep if isinstance(keep, int) else int(len(data) * keep))
    path.write_bytes(data[:n])
    params, target = _target(info)
    with _Unchanged(params, target):
        with pytest.raises(ValueError, match=r"^checkpoint '.*opt\.npz' is truncated or corrupted and was not loaded"):
            target.load(path)


def test_every_damaged_byte_gives_a_clear_error_or_the_same_state(tmp_path):
    """Flip each byte of a checkpoint in turn: a ValueError, or (a field zip ignores) the very same state."""
    path, data = _saved(tmp_path)
    reference = ak.Adam(_params(seed=5), lr=0.01, **REGISTRY[3].configs[1])
    reference.load(path)
    expected = reference.state_dict()
    outcomes = {"error": 0, "same": 0}
    params, target = _target(REGISTRY[3])
    before, sd = snapshot(params), target.state_dict()
    # every 5th byte, and every byte of the central directory at the end (names, versions, methods, offsets)
    for i in sorted(set(range(0, len(data), 5)) | set(range(max(0, len(data) - 400), len(data)))):
        damaged = bytearray(data)
        damaged[i] ^= 0xFF
        path.write_bytes(bytes(damaged))
        try:
            target.load(path)
        except ValueError as exc:
            assert str(exc).startswith(f"checkpoint {str(path)!r}"), str(exc)
            outcomes["error"] += 1
        else:
            assert_same_tree(target.state_dict(), expected)
            outcomes["same"] += 1
            params, target = _target(REGISTRY[3])
    # nothing changed by the failed loads (the target is replaced after each successful one)
    assert snapshot(params) == before
    assert_same_tree(target.state_dict(), sd)
    # the data and the description are covered by zip's CRC: most damage is detected
    assert outcomes["error"] > 0.7 * sum(outcomes.values())


def test_garbage_file(tmp_path):
    path = tmp_path / "opt.npz"
    path.write_bytes(np.random.default_rng(0).bytes(1000))
    params, target = _target(REGISTRY[0])
    with _Unchanged(params, target):
        with pytest.raises(ValueError, match=r"^checkpoint '.*' is truncated or corrupted and was not loaded"):
            target.load(path)


def test_npz_that_is_not_an_adamkit_file(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, w=np.zeros(3))
    params, target = _target(REGISTRY[0])
    with _Unchanged(params, target):
        with pytest.raises(ValueError, match=r"^checkpoint '.*plain\.npz' is not an adamkit file \(no description inside\); not loaded$"):
            target.load(path)


def test_adamkit_file_without_optimizer_state(tmp_path):
    path = _checkpoint.save_npz(tmp_path / "other.npz", {"x": np.zeros(2)}, {"kind": "fit"})
    params, target = _target(REGISTRY[0])
    with _Unchanged(params, target):
        with pytest.raises(ValueError, match=r"^checkpoint '.*other\.npz' does not hold optimizer state"):
            target.load(path)


def test_missing_file(tmp_path):
    params, target = _target(REGISTRY[0])
    with _Unchanged(params, target):
        with pytest.raises(FileNotFoundError, match=r"^path='.*nothing\.npz': no such checkpoint file$"):
            target.load(tmp_path / "nothing.npz")


# --------------------------------------------------------------------------------------------------
# Atomic saving


def test_save_leaves_no_temporary_file_and_replaces_the_old_one(tmp_path):
    params = _params()
    opt = _stepped(ak.Adam, params, steps=1)
    opt.save(tmp_path / "opt.npz")
    opt.step({"w": np.ones((2, 3)), "b": np.ones(())})
    path = opt.save(str(tmp_path / "opt.npz"))  # a str path works too, and overwrites
    assert sorted(os.listdir(tmp_path)) == ["opt.npz"]
    fresh = ak.Adam({k: v.copy() for k, v in params.items()})
    fresh.load(path)
    assert fresh.step_count == 2
    assert_same_tree(fresh.state_dict(), opt.state_dict())


def _fail_after_writing_some(*args, **kwargs):
    f = args[0]
    f.write(b"PK\x03\x04 half a file")
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("failure", ["write", "rename", "interrupt"])
def test_failed_save_keeps_the_old_file(failure, tmp_path, monkeypatch):
    params = _params()
    opt = _stepped(ak.Adam, params, steps=1)
    path = opt.save(tmp_path / "opt.npz")
    old = path.read_bytes()
    opt.step({"w": np.ones((2, 3)), "b": np.ones(())})
    if failure == "write":
        monkeypatch.setattr(np, "savez", _fail_after_writing_some)
        expected = OSError
    elif failure == "rename":
        def replace(src, dst):
            raise OSError(13, "Permission denied")
        monkeypatch.setattr(os, "replace", replace)
        expected = OSError
    else:
        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt
        monkeypatch.setattr(np, "savez", interrupted)
        expected = KeyboardInterrupt
    with pytest.raises(expected):
        opt.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert sorted(os.listdir(tmp_path)) == ["opt.npz"]
    fresh = ak.Adam({k: v.copy() for k, v in params.items()})
    fresh.load(path)
    assert fresh.step_count == 1


def test_save_checks_the_path(tmp_path):
    opt = _stepped(ak.Adam, _params(), steps=1)
    with pytest.raises(ValueError, match=r"^path='.*opt\.pt': expected a file name ending in '\.npz'$"):
        opt.save(tmp_path / "opt.pt")
    with pytest.raises(ValueError, match=r"^path='.*missing/opt\.npz': directory '.*missing' does not exist$"):
        opt.save(tmp_path / "missing" / "opt.npz")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("key", ["param_groups", "group_state", "state", "names"])
def test_state_dict_lacking_an_entry(key):
    params, target = _target(REGISTRY[3])
    sd = target.state_dict()
    if key == "names":
        del sd["param_groups"][0]["names"]
    else:
        del sd[key]
    with _Unchanged(params, target):
        with pytest.raises(ValueError, match=rf"state_dict.*'?{key}'?"):
            target.load_state_dict(sd)


@pytest.mark.parametrize("hp", [
    {"lr": np.float32(0.01), "betas": (np.float32(0.9), 0.999)},
    {"lr": np.float64(0.01), "eps": np.float32(1e-6), "amsgrad": np.bool_(True)},
])
def test_numpy_scalar_hyperparameters_save_and_load(hp, tmp_path):
    """NumPy scalars are accepted as hyperparameters, so a checkpoint must hold them: saved as the plain
    numbers the optimizer computes with, and the loaded optimizer continues bit for bit."""
    a = np.linspace(-1, 1, 5)
    opt = ak.Adam(a, **hp)
    opt.step(np.full(5, 0.3))
    opt.save(tmp_path / "s.npz")
    b = a.copy()
    twin = ak.Adam(b)
    twin.load(tmp_path / "s.npz")
    assert twin.param_groups[0]["lr"] == float(hp["lr"])
    for o in (opt, twin):
        o.step(np.full(5, -0.2))
    assert a.tobytes() == b.tobytes()


def test_numpy_integer_and_fraction_hyperparameters_save():
    from fractions import Fraction
    a = np.ones(2)
    opt = ak.SGD(a, lr=Fraction(1, 10), momentum=np.int64(0))
    sd = opt.state_dict()["param_groups"][0]
    assert (sd["lr"], type(sd["lr"])) == (0.1, float) and (sd["momentum"], type(sd["momentum"])) == (0, int)


def test_reset_state_checks_every_group_before_resetting_any():
    a, b = np.ones(3), np.ones(2)
    opt = ak.Adam([{"params": [a]}, {"params": [b]}], lr=0.1)
    opt.step([[np.full(3, 0.5)], [np.full(2, 0.5)]])
    opt.param_groups[1]["lr"] = -1.0
    before = opt.state_dict()
    with pytest.raises(ValueError, match=r"^lr=-1\.0: expected"):
        opt.reset_state()
    assert_same_tree(opt.state_dict(), before)


@pytest.mark.parametrize("group, exc", [(True, TypeError), (1.0, TypeError), (1, IndexError), (-1, IndexError)])
def test_learning_rate_group_argument(group, exc):
    opt = ak.Adam(np.ones(2))
    with pytest.raises(exc, match=rf"^group={group!r}: expected"):
        opt.learning_rate(group)


def test_a_user_subclass_without_slot_declarations_loads_its_own_state():
    """state_slots and group_scalars are optional: a subclass of the public Optimizer that does not
    declare them still saves and loads (its slots and scalars are then not checked by name)."""
    class Momentum(ak.Optimizer):
        fused_kernel = None

        def __init__(self, params, lr=0.1, beta=0.9, *, nonfinite="raise"):
            super().__init__(params, locals())

        @classmethod
        def validate(cls, hp):
            return dict(hp)

        @staticmethod
        def slots(hp):
            return {"m": 0.0}

        @staticmethod
        def constants(hp, t, scalars):
            return {"next_scalars": {"seen": scalars.get("seen", 0) + 1}}

        @staticmethod
        def reference(p, g, s, c):
            s["m"] *= c["beta"]
            s["m"] += g
            p -= c["lr"] * s["m"]

    a = np.ones(2)
    opt = Momentum(a)
    opt.step(np.full(2, 0.5))
    sd = opt.state_dict()
    twin = Momentum(np.ones(2))
    twin.load_state_dict(sd)
    assert_same_tree(twin.state_dict(), sd)
