"""adamkit.distributed: data-parallel and sharded (ZeRO-1) optimizers over MPI.

The multi-rank tests run ``tests/distributed_worker.py`` under ``mpiexec -n 2`` and ``-n 3`` as
subprocesses and compare with the single-process reference computed here from the same definitions.
They are skipped when mpi4py or mpiexec is missing, unless ``ADAMKIT_REQUIRE_MPI=1`` (set in CI),
which turns the skip into a failure.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import adamkit as ak

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import distributed_worker as W  # noqa: E402

RTOL = ATOL = 1e-12
TIMEOUT = 120  # seconds for one mpiexec run (a hang fails the test instead of stalling CI)


def _require(what: str) -> None:
    if os.environ.get("ADAMKIT_REQUIRE_MPI", "") not in ("", "0"):
        pytest.fail(f"{what}, and ADAMKIT_REQUIRE_MPI is set: install with pip install '.[mpi]'")
    pytest.skip(what)


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        _require("mpi4py is not installed")
    return MPI


def _mpiexec() -> list[str]:
    """mpiexec of the MPI that mpi4py uses: the one installed next to this Python first."""
    _mpi()
    cand = Path(sys.executable).parent / "mpiexec"
    exe = str(cand) if cand.exists() else shutil.which("mpiexec")
    if exe is None:
        _require("mpiexec is not on the PATH")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    # MPICH runs more ranks than cores as is; Open MPI needs to be told (and to be allowed as root)
    return [exe, "--oversubscribe", "--allow-run-as-root"] if "Open MPI" in version else [exe]


def run_mpi(n: int, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"  # ranks share 2 cores: no BLAS threads on top
    cmd = [*_mpiexec(), "-n", str(n), sys.executable, str(HERE / "distributed_worker.py"), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(cmd)} did not finish within {TIMEOUT} s (a hang?)\n{exc.stdout}\n{exc.stderr}")
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited with {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def tol(name: str) -> float:
    """1e-12 for float64; a float32 leaf ("..._mixed") has its gradient summed in float32 over the ranks."""
    return 1e-5 if name.endswith("_mixed") else RTOL


def assert_params_close(got: dict, want: dict, what: str, rtol: float = RTOL) -> None:
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=rtol, atol=rtol, err_msg=f"{what}: leaf {k!r}")


@pytest.fixture(scope="module")
def references():
    return {name: W.reference(name, W.STEPS) for name in W.CONFIGS}


# --------------------------------------------------------------------------------------------------
# Without MPI


def test_import_adamkit_does_not_import_mpi4py():
    code = ("import sys, adamkit, adamkit.distributed; "
            "cls = adamkit.DistributedOptimizer; "
            "assert cls is adamkit.distributed.DistributedOptimizer; "
            "print('mpi4py' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_missing_mpi4py_says_how_to_install(monkeypatch):
    import adamkit.distributed as dist
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # makes `import mpi4py` fail
    with pytest.raises(ImportError, match=r"pip install 'adamkit\[mpi\]'"):
        dist.mpi()
    with pytest.raises(ImportError, match=r"pip install 'adamkit\[mpi\]'"):
        dist.DistributedOptimizer(ak.Adam(np.zeros(3)))


def test_split_evenly():
    from adamkit.distributed import split_evenly
    assert split_evenly(10, 3) == ([4, 3, 3], [0, 4, 7])
    assert split_evenly(2, 3) == ([1, 1, 0], [0, 1, 2])
    assert split_evenly(0, 2) == ([0, 0], [0, 0])


# --------------------------------------------------------------------------------------------------
# One rank, in this process (also compiles the kernels the MPI runs will load from Numba's cache)


@pytest.fixture(scope="module")
def single_rank(tmp_path_factory):
    MPI = _mpi()
    out = tmp_path_factory.mktemp("p1")
    W.scenario_dataparallel(MPI.COMM_WORLD, out)
    return out


def test_one_rank_is_the_plain_optimizer_bit_for_bit(single_rank, references):
    res = np.load(single_rank / "params.npz")
    info = json.loads((single_rank / "info.json").read_text())
    for name, (want, _, losses) in references.items():
        for mode in ("replicated", "sharded"):
            key = f"{name}/{mode}"
            for k, v in want.items():
                if name.endswith("_clip") and mode == "sharded":  # the norm is summed in another order
                    np.testing.assert_allclose(res[f"{key}/{k}"], v, rtol=RTOL, atol=ATOL)
                elif v.dtype == np.float32:
                    # its float64 gradient is weighted into a float32 buffer (g*w, then /w): two roundings
                    # to float32 where the plain optimizer casts once, so a last bit may differ
                    np.testing.assert_allclose(res[f"{key}/{k}"], v, rtol=tol(name), atol=tol(name))
                else:
                    assert np.array_equal(res[f"{key}/{k}"], v), f"{key}: leaf {k!r}"
            assert info[key]["losses"] == pytest.approx(losses, rel=1e-15, abs=0)
            assert info[key]["step_count"] == W.STEPS


def _dist(params=None, **kw):
    MPI = _mpi()
    from adamkit.distributed import DistributedOptimizer
    params = W.initial_params(0) if params is None else params
    return DistributedOptimizer(ak.Adam(params, lr=0.1), MPI.COMM_WORLD, **kw), params


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"optimizer": "adam"}, TypeError, r"optimizer='adam': expected an adamkit optimizer"),
    ({"comm": 3}, TypeError, r"comm=3: expected an mpi4py intracommunicator"),
    ({"shard_state": "yes"}, TypeError, r"shard_state='yes': expected True or False"),
])
def test_constructor_rejects_bad_arguments(kwargs, exc, match):
    _mpi()
    from adamkit.distributed import DistributedOptimizer
    args = {"optimizer": ak.Adam(np.zeros(3)), **kwargs}
    with pytest.raises(exc, match=match):
        DistributedOptimizer(**args)


@pytest.mark.parametrize("shard", [False, True])
@pytest.mark.parametrize("call, exc, match", [
    (lambda d, g: d.step(g, weight=-1), ValueError, r"weight=-1: expected a finite number >= 0"),
    (lambda d, g: d.step(g, weight=float("nan")), ValueError, r"weight=nan: expected a finite number >= 0"),
    (lambda d, g: d.step(g, weight=True), ValueError, r"weight=True: expected a finite number >= 0"),
    (lambda d, g: d.step(g, loss="x"), TypeError, r"loss='x': expected a real number"),
    (lambda d, g: d.step({**g, "W": np.zeros((2, 2))}), ValueError,
     r"gradient for parameter 'W': expected shape \(7, 3\), got shape \(2, 2\)"),
    (lambda d, g: d.step({**g, "b": np.zeros(3, dtype=int)}), TypeError,
     r"gradient for parameter 'b': expected a real floating-point array, got dtype int"),
    (lambda d, g: d.step([g]), ValueError, r"local_grads: expected a dict with keys"),
    (lambda d, g: d.step(g, weight=0), ValueError, r"weights of all 1 ranks sum to 0"),
    (lambda d, g: d.learning_rate(5), IndexError, r"group=5: expected 0 <= group < 1"),
    (lambda d, g: d.save("ckpt.txt"), ValueError, r"path='ckpt.txt': expected a file name ending in '.npz'"),
    (lambda d, g: d.load("/nonexistent/ckpt.npz"), FileNotFoundError, r"no such checkpoint file"),
])
def test_bad_input_is_a_clear_error_and_changes_nothing(shard, call, exc, match):
    d, p = _dist(shard_state=shard)
    before = W.copy_params(p)
    g = {k: np.ones_like(v) for k, v in p.items()}
    with pytest.raises(exc, match=match):
        call(d, g)
    assert all(np.array_equal(p[k], before[k]) for k in p)
    assert d.step_count == 0


@pytest.mark.parametrize("shard", [False, True])
def test_reduce_then_step(shard):
    """reduce() averages (mean loss, global norm, clipping); step() applies it once."""
    d, p = _dist(shard_state=shard)
    g = {k: np.full(v.shape, 2.0) for k, v in p.items()}
    red = d.reduce(g, weight=4, loss=1.5)
    assert red.loss == 1.5 and red.weight == 4.0 and red.nonfinite_ranks == 0
    assert red.norm() == pytest.approx(ak.global_norm(g), rel=1e-15)
    assert red.clip(1.0) == pytest.approx(ak.global_norm(g), rel=1e-15)
    with pytest.raises(ValueError, match=r"max_norm=0: expected a finite number > 0"):
        red.clip(0)
    with pytest.raises(TypeError, match=r"weight and loss were given to reduce\(\); expected none here"):
        d.step(red, weight=1)
    ref_p = W.initial_params(0)
    clipped, _ = ak.clip_by_global_norm(g, 1.0)
    ak.Adam(ref_p, lr=0.1).step(clipped)
    assert d.step(red) == 1.5
    for k in p:
        np.testing.assert_allclose(p[k], ref_p[k], rtol=1e-15, atol=0)
    with pytest.raises(ValueError, match=r"already applied"):
        d.step(red)
    with pytest.raises(ValueError, match=r"already applied"):
        red.norm()


@pytest.mark.parametrize("shard", [False, True])
def test_load_state_dict_checks_against_the_parameters(shard):
    d, p = _dist(shard_state=shard)
    d.step({k: np.ones_like(v) for k, v in p.items()})
    sd = d.state_dict()
    bad_shape = {**sd, "state": {**sd["state"], "b": {"exp_avg": np.zeros(4), "exp_avg_sq": np.zeros(4)}}}
    missing_slot = {**sd, "state": {**sd["state"], "b": {"exp_avg": np.zeros(3)}}}
    cases = [
        ({**sd, "optimizer": "SGD"}, r"state_dict is for optimizer 'SGD'; this optimizer is 'Adam'"),
        ({**sd, "param_groups": [{**sd["param_groups"][0], "names": ["W"]}]}, r"state_dict group 0 has parameters"),
        (bad_shape, r"state_dict state 'b'/'exp_avg': expected shape \(3,\) and dtype float64, got shape \(4,\)"),
        (missing_slot, r"has slots \['exp_avg'\]; the other parameters of group 0 have"),
        ({**sd, "param_groups": [{**sd["param_groups"][0], "eps": -1.0}]}, r"eps=-1.0: expected"),
        ({**sd, "step_count": -2}, r"state_dict\['step_count'\]=-2: expected an integer >= 0"),
    ]
    state_before = d.state_dict()
    for bad, match in cases:
        with pytest.raises(ValueError, match=match):
            d.load_state_dict(bad)
    after = d.state_dict()
    assert after["step_count"] == state_before["step_count"] == 1
    for n, slots in state_before["state"].items():
        for s, v in slots.items():
            assert np.array_equal(after["state"][n][s], v)


@pytest.mark.parametrize("shard", [False, True])
def test_state_dict_roundtrip_and_file_format(tmp_path, shard):
    """The distributed file is the plain optimizer's file: each loads the other's."""
    d, p = _dist(shard_state=shard)
    ref_p = W.initial_params(0)
    ref = ak.Adam(ref_p, lr=0.1)
    rng = np.random.default_rng(0)
    for _ in range(3):
        g = {k: rng.normal(size=v.shape) for k, v in p.items()}
        d.step(g)
        ref.step(g)
    d.save(tmp_path / "d.npz")
    plain = ak.Adam(W.initial_params(0), lr=0.1)
    plain.load(tmp_path / "d.npz")
    a, b = plain.state_dict(), ref.state_dict()
    assert a["step_count"] == b["step_count"] == 3 and a["group_state"] == b["group_state"]
    for n in b["state"]:
        for s in b["state"][n]:
            assert np.array_equal(a["state"][n][s], b["state"][n][s])
    ref.save(tmp_path / "ref.npz")
    d2, _ = _dist(shard_state=not shard)
    d2.load(tmp_path / "ref.npz")
    c = d2.state_dict()
    for n in b["state"]:
        for s in b["state"][n]:
            assert np.array_equal(c["state"][n][s], b["state"][n][s])


def test_sharded_state_and_hyperparameter_changes(tmp_path):
    """A changed lr in param_groups reaches the shard; reset_state forgets the moments; the template's
    own state is released."""
    d, p = _dist(shard_state=True)
    assert all(not s for s in d.optimizer.state.values())  # moved into the shard
    ref_p = W.initial_params(0)
    ref = ak.Adam(ref_p, lr=0.1)
    g = {k: np.full(v.shape, 0.5) for k, v in p.items()}
    for opt in (d, ref):
        opt.step(g)
        opt.param_groups[0]["lr"] = 0.01
        opt.step(g)
        opt.reset_state()
        opt.step(g)
    for k in p:
        assert np.array_equal(p[k], ref_p[k]), k
    assert d.learning_rate() == 0.01 and d.step_count == ref.step_count == 3


# --------------------------------------------------------------------------------------------------
# Several ranks, under mpiexec


@pytest.mark.parametrize("nranks", [2, 3])
def test_data_parallel_equals_one_process_on_the_global_batch(nranks, tmp_path, single_rank, references):
    run_mpi(nranks, "dataparallel", str(tmp_path))
    res = np.load(tmp_path / "params.npz")
    info = json.loads((tmp_path / "info.json").read_text())
    for name, (want, opt, losses) in references.items():
        ndtypes = len({v.dtype for v in want.values()})
        per_rank = opt.state_dict()
        full_state = sum(a.nbytes for s in per_rank["state"].values() for a in s.values())
        for mode in ("replicated", "sharded"):
            key = f"{name}/{mode}"
            got = {k: res[f"{key}/{k}"] for k in want}
            assert_params_close(got, want, f"{key} on {nranks} ranks", tol(name))
            np.testing.assert_allclose(info[key]["losses"], losses, rtol=tol(name), atol=tol(name))
            assert info[key]["synced_at_start"] and info[key]["synchronized"], key
            assert info[key]["step_count"] == W.STEPS
            nbytes = info[key]["state_nbytes"]
            if mode == "replicated":
                assert nbytes == [full_state] * nranks
                assert info[key]["collectives_per_step"] == ndtypes  # one buffer per dtype
            else:  # each rank holds its 1/P share of the state, and together all of it
                from adamkit.distributed import split_evenly
                sizes = {}
                for v in want.values():
                    sizes[v.dtype] = sizes.get(v.dtype, 0) + v.size
                slots = full_state // sum(n * dt.itemsize for dt, n in sizes.items())
                expected = [sum(split_evenly(n, nranks)[0][r] * dt.itemsize * slots for dt, n in sizes.items())
                            for r in range(nranks)]
                assert nbytes == expected and sum(nbytes) == full_state
                # reduce-scatter and all-gather, and the check of the reduced sum (nonfinite="raise")
                assert info[key]["collectives_per_step"] == 2 * ndtypes + 1
        for k in want:  # sharded equals unsharded
            np.testing.assert_allclose(res[f"{name}/sharded/{k}"], res[f"{name}/replicated/{k}"],
                                       rtol=tol(name), atol=tol(name))


@pytest.mark.parametrize("save_on, save_mode, resume_on, resume_mode", [
    (3, "sharded", 2, "replicated"),
    (2, "replicated", 3, "sharded"),
])
def test_resume_on_a_different_number_of_ranks(save_on, save_mode, resume_on, resume_mode, tmp_path, single_rank,
                                               references):
    k = 5
    run_mpi(save_on, "save", str(tmp_path), save_mode, str(k))
    # the file holds the whole state: a single-process optimizer loads it and matches the reference
    for name in W.CONFIGS:
        _, ref_opt, _ = W.reference(name, k)
        plain = W.build(name, W.params_for(name))
        plain.load(tmp_path / f"opt_{name}.npz")
        a, b = plain.state_dict(), ref_opt.state_dict()
        assert a["step_count"] == b["step_count"] == k
        for ga, gb in zip(a["group_state"], b["group_state"], strict=True):  # step, mu_product, ...
            assert ga.keys() == gb.keys() and all(math.isclose(ga[x], gb[x], rel_tol=tol(name)) for x in ga), (ga, gb)
        for n in b["state"]:
            for s in b["state"][n]:
                np.testing.assert_allclose(a["state"][n][s], b["state"][n][s], rtol=tol(name), atol=tol(name),
                                           err_msg=f"{name}: {n}/{s}")
    run_mpi(resume_on, "resume", str(tmp_path), resume_mode, str(k), str(W.STEPS))
    res = np.load(tmp_path / "resumed.npz")
    for name, (want, _, _) in references.items():
        got = {key: res[f"{name}/{key}"] for key in want}
        assert_params_close(got, want, f"{name}: {save_on} {save_mode} ranks -> {resume_on} {resume_mode}", tol(name))
        assert int(res[f"{name}/#step_count"]) == W.STEPS


@pytest.fixture(scope="module")
def fit_references():
    return {label: W.fit_run(label) for label in W.FIT_RUNS}


def test_fit_with_comm_equals_one_process_and_resumes_on_other_rank_counts(tmp_path, single_rank, fit_references):
    """fit(..., comm=...) splits each global batch over the ranks; a checkpoint written on 3 ranks is
    resumed on 2 and ends where the uninterrupted single-process run ends."""
    run_mpi(3, "fit", str(tmp_path), "full")
    for label in W.FIT_RUNS:  # the first-epoch checkpoints, before the 2-rank runs continue them
        shutil.copy(tmp_path / f"fit_{label}.npz", tmp_path / f"fit_{label}_epoch1.npz")
    run_mpi(2, "fit", str(tmp_path), "resume")
    for part in ("full", "resume"):
        res = np.load(tmp_path / f"fit_{part}.npz")
        hist = json.loads((tmp_path / f"fit_{part}.json").read_text())
        for label, (want, ref) in fit_references.items():
            got = {k: res[f"{label}/{k}"] for k in want}
            assert_params_close(got, want, f"fit {label} ({part})")
            h = hist[label]
            assert h["steps"] == ref.steps
            for key in ("loss", "grad_norm", "epoch_loss", "lr"):
                np.testing.assert_allclose(h[key], getattr(ref, key), rtol=RTOL, atol=ATOL, err_msg=f"{label} {key}")
    # the checkpoint written by the 3-rank run is an ordinary fit checkpoint: one process resumes it
    for label, (want, _) in fit_references.items():
        params, hist = W.fit_run(label, checkpoint=tmp_path / f"fit_{label}_epoch1.npz", resume=True)
        assert hist.epochs == W.FIT_RUNS[label]["epochs"] and len(hist.epoch_loss) == hist.epochs
        assert_params_close(params, want, f"fit {label} resumed in one process")


def test_errors_are_raised_on_every_rank_without_hanging(tmp_path, single_rank):
    n = 3
    run_mpi(n, "errors", str(tmp_path))
    reports = [json.loads((tmp_path / f"errors_rank{r}.json").read_text()) for r in range(n)]
    expected = {
        "shape": "ValueError: DistributedOptimizer: the ranks' optimizers disagree: parameter 'W' has shape (7, 3) "
                 "on rank 0 and (7, 4) on rank 2",
        "lr": "ValueError: DistributedOptimizer: the ranks' optimizers disagree: hyperparameter 'lr' of group 0 "
              "is 0.02 on rank 0 and 0.01 on rank 2",
        "names": "ValueError: DistributedOptimizer: the ranks' optimizers disagree: parameter names differ in "
                 "group 0: only on rank 2: ['extra']",
        "dtype": "ValueError: DistributedOptimizer: the ranks' optimizers disagree: parameter 'b' has dtype "
                 "float64 on rank 0 and float32 on rank 2",
        "class": "ValueError: DistributedOptimizer: the ranks' optimizers disagree: optimizer class is "
                 "'adamkit._optimizers.Adam' on rank 0 and 'adamkit._optimizers.AdamW' on rank 2",
        "shard": "ValueError: DistributedOptimizer: the ranks' optimizers disagree: shard_state is False on "
                 "rank 0 and True on rank 2",
        "nonfinite": "FloatingPointError: non-finite gradient on 1 of 3 ranks at step 1",
        "skip": "skipped_steps=1 step_count=0 unchanged=True",
        "weight": "ValueError: weight: the weights of all 3 ranks sum to 0.0",
        "overflow": "FloatingPointError: non-finite gradient on 3 of 3 ranks at step 1",
        "history": "ValueError: DistributedOptimizer: the optimizer of rank(s) [2] has taken steps and rank 0's "
                   "has not",
        "schedule": "ValueError: DistributedOptimizer: the ranks' optimizers disagree: hyperparameter 'lr' of "
                    "group 0 is",
        "eps": "ValueError: eps=1e-50: out of range for the float32 parameters",
        "loss": "ValueError: loss: given on 1 of 3 ranks; expected on every rank or on none",
        "template": "RuntimeError: state_dict: this optimizer's state is held by a DistributedOptimizer with "
                    "shard_state=True",
        "rewrap": "ValueError: optimizer: on rank(s) [0, 1, 2] its state is held by a DistributedOptimizer",
        "schedule_nan": "ValueError: lr schedule",
    }
    for r, rep in enumerate(reports):
        for label, start in expected.items():
            assert rep[label].startswith(start), (r, label, rep[label])
    assert "on rank 2 in parameter 'b'" in reports[2]["nonfinite"]


@pytest.mark.parametrize("how", ["hook", "context"])
def test_an_exception_on_one_rank_aborts_the_job_with_its_message(how, tmp_path, single_rank):
    proc = run_mpi(3, "abort", str(tmp_path), how, check=False)
    assert proc.returncode != 0
    assert "RuntimeError: boom: rank 1 could not compute its gradient" in proc.stderr
    assert "uncaught RuntimeError on rank 1 of 3; aborting the MPI job" in proc.stderr
    assert "was not aborted" not in proc.stdout


def test_sharded_load_checks_each_group_in_its_own_dtypes(tmp_path):
    """A float64 group may keep an eps (1e-50) that a float32 group could not: the sharded load checks
    each group's hyperparameters against that group's dtypes, as the plain optimizer does."""
    MPI = _mpi()
    from adamkit.distributed import DistributedOptimizer

    def make():
        groups = [{"params": {"a": np.ones(3, np.float32)}}, {"params": {"b": np.ones(2)}, "eps": 1e-50}]
        return DistributedOptimizer(ak.Adam(groups, lr=0.1), MPI.COMM_WORLD, shard_state=True)
    d = make()
    d.step([{"a": np.full(3, 0.5, np.float32)}, {"b": np.full(2, 0.5)}])
    d.save(tmp_path / "d.npz")
    e = make()
    e.load(tmp_path / "d.npz")
    assert e.step_count == 1 and e.param_groups[1]["eps"] == 1e-50


@pytest.mark.parametrize("where", ["grad", "signal"])
def test_an_interrupted_fit_stops_every_rank_at_the_same_step(where, tmp_path, single_rank):
    """One rank's Ctrl-C (raised in its loss_and_grad, or a SIGINT while it computes) rides the step's
    collective: every rank stops before the same step, the checkpoint is written, nothing hangs."""
    run_mpi(2, "interrupt", str(tmp_path), where)
    reports = [json.loads((tmp_path / f"interrupt_rank{r}.json").read_text()) for r in range(2)]
    assert reports[0]["stop_reason"] == reports[1]["stop_reason"] == "interrupted"
    # raised in (or signalled during) loss_and_grad: step 3 is not taken on any rank
    assert reports[0]["steps"] == reports[1]["steps"] == 2 and reports[0]["exists"]
    assert reports[0]["w"] == reports[1]["w"]


def test_fit_with_validation_data_of_its_own_on_each_rank_stops_every_rank_alike(tmp_path, single_rank):
    run_mpi(2, "validation", str(tmp_path))
    a, b = (json.loads((tmp_path / f"validation_rank{r}.json").read_text()) for r in range(2))
    assert a["shares"] == b["shares"] == [3, 3]  # local_part of a tuple of lists: each list split
    assert a["caught"].startswith("metric failed") and b["caught"].startswith("metric failed (raised on rank 0")
    for x in (a, b):
        del x["caught"]
    assert a == b and a["epochs"] < 30 and a["stop_reason"] == "early_stopping"


def test_local_part_of_a_tuple_is_the_tuple_of_the_shares():
    d, _ = _dist()
    X, y = np.arange(10.0).reshape(5, 2), np.arange(5.0)
    part = d.local_part((X, y))
    assert isinstance(part, tuple) and np.array_equal(part[0], X[:len(part[1])]) and len(part[0]) == len(part[1])
    with pytest.raises(ValueError, match=r"^batch: a tuple of arrays of lengths \[5, 4\]; expected one length"):
        d.local_part((X, y[:4]))
    samples = tuple((np.full(4, i), np.full(4, 10 * i)) for i in range(6))  # a tuple of samples: cut as one
    part = d.local_part(samples)
    assert len(part) == len(d.local_part(list(samples))) and all(a is b for a, b in zip(part, samples))
    assert d.local_part((0, 1, 2, 3)) == (0, 1, 2, 3)[:len(d.local_part((0, 1, 2, 3)))]
