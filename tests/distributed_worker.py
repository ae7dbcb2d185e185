"""MPI side of ``test_distributed.py``: run as ``mpiexec -n P python distributed_worker.py SCENARIO OUTDIR``.

The problem, the optimizer configurations and the batch sequence live here so that the test (which
imports this module without MPI) computes the single-process reference from the same definitions.
Rank 0 writes the results to ``OUTDIR``; each rank prints the lines the test looks for.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import numpy as np

import adamkit as ak

N_DATA, N_FEATURES = 64, 7
STEPS = 12
# global batch sizes, cycled: uneven splits over 2 and 3 ranks, and one batch smaller than 3 ranks
BATCH_SIZES = (23, 17, 2, 30, 9)


def data():
    rng = np.random.default_rng(1234)
    X = rng.normal(size=(N_DATA, N_FEATURES))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] - 0.2 * X[:, 2] ** 2
    return X, y


def initial_params(seed: int = 0) -> dict:
    """Leaves of several shapes: a 0-d array, a non-contiguous (transposed) view, a size-0 array."""
    rng = np.random.default_rng(seed)
    return {
        "W": rng.normal(scale=0.3, size=(N_FEATURES, 3)),
        "V": np.ascontiguousarray(rng.normal(scale=0.3, size=(3, 5))).T,  # (5, 3), not C-contiguous
        "b": rng.normal(scale=0.1, size=3),
        "v": rng.normal(scale=0.5, size=3),
        "c": np.array(0.1),
        "empty": np.zeros((0, 2)),
    }


def params_for(name: str, seed: int = 0) -> dict:
    """The initial parameters of configuration ``name``: "..._mixed" has one float32 leaf."""
    p = initial_params(seed)
    if name.endswith("_mixed"):
        p["b"] = p["b"].astype(np.float32)
    return p


def copy_params(p: dict) -> dict:
    out = {k: v.copy() for k, v in p.items()}
    out["V"] = np.ascontiguousarray(p["V"].T).T  # keep the layout: a transposed view
    return out


def loss_and_grad(p: dict, X: np.ndarray, y: np.ndarray):
    """Mean squared error of a one-hidden-layer model on the batch, and its gradient."""
    n = len(y)
    h = X @ p["W"] + X[:, :5] @ p["V"] + p["b"]
    z = np.tanh(h)
    e = z @ p["v"] + p["c"] - y
    dz = e[:, None] * p["v"][None, :] * (1.0 - z * z)
    grads = {
        "W": X.T @ dz / n,
        "V": X[:, :5].T @ dz / n,
        "b": dz.mean(axis=0),
        "v": (e[:, None] * z).mean(axis=0),
        "c": np.array(e.mean()),
        "empty": np.zeros((0, 2)),
    }
    return 0.5 * float(np.mean(e * e)), grads


def batches(steps: int):
    """The global mini-batches (index arrays), the same on every rank and in the reference."""
    rng = np.random.default_rng(99)
    return [rng.choice(N_DATA, size=BATCH_SIZES[t % len(BATCH_SIZES)], replace=False) for t in range(steps)]


def build(name: str, params: dict, **extra):
    """The optimizer configurations: every optimizer, with options that use per-group scalars."""
    P = params
    if name == "adam":
        return ak.Adam(P, lr=0.05, **extra)
    if name == "adamw_amsgrad":
        return ak.AdamW(P, lr=0.05, weight_decay=0.1, amsgrad=True, **extra)
    if name == "sgd_nesterov":
        return ak.SGD(P, lr=0.05, momentum=0.9, nesterov=True, **extra)
    if name == "nadam_groups":  # two groups, a schedule on one: per-group mu_product and step
        groups = [{"params": {k: P[k] for k in ("W", "V", "empty")},
                   "lr": ak.schedules.cosine(0.05, total_steps=40, warmup_steps=3)},
                  {"params": {k: P[k] for k in ("b", "v", "c")}, "lr": 0.01, "weight_decay": 0.01}]
        return ak.NAdam(groups, **extra)
    if name == "radam":
        return ak.RAdam(P, lr=0.05, **extra)
    if name == "rmsprop_centered":
        return ak.RMSprop(P, lr=0.01, centered=True, momentum=0.5, **extra)
    if name == "adagrad":
        return ak.Adagrad(P, lr=0.1, initial_accumulator_value=0.1, lr_decay=0.01, **extra)
    if name == "adamax":
        return ak.Adamax(P, lr=0.02, **extra)
    if name == "adam_clip":  # reduce(), clip() by global norm, then step()
        return ak.Adam(P, lr=0.05, **extra)
    if name == "adam_mixed":  # a float32 leaf among float64 ones: one buffer and collective per dtype
        return ak.Adam(P, lr=0.05, **extra)
    raise ValueError(name)


CONFIGS = ("adam", "adamw_amsgrad", "sgd_nesterov", "nadam_groups", "radam", "rmsprop_centered", "adagrad",
           "adamax", "adam_clip", "adam_mixed")
CLIP = 0.3  # max global norm of the "adam_clip" configuration (clips most steps)


def grads_for(opt, grads: dict):
    """The gradient structure mirroring the optimizer's parameters (grouped for nadam_groups)."""
    if isinstance(opt.params, list):
        return [{k: grads[k] for k in g["params"]} for g in opt.params]
    return grads


def reference(name: str, steps: int, start: int = 0, params=None, opt=None):
    """Single process, the whole global batch each step; returns (params, optimizer, losses)."""
    X, y = data()
    if params is None:
        params = params_for(name)
        opt = build(name, params)
    losses = []
    for idx in batches(steps)[start:]:
        loss, g = loss_and_grad(params, X[idx], y[idx])
        if name.endswith("_clip"):
            g, _ = ak.clip_by_global_norm(g, CLIP)
        opt.step(grads_for(opt, g))
        losses.append(loss)
    return params, opt, losses


# ``adamkit.fit`` runs: the same settings single-process (the reference) and with ``comm``
FIT_RUNS = {
    # uneven last batches (64 rows by 10), accumulation over 2 mini-batches, clipping by global norm
    "replicated": dict(optimizer="adam", shard=False, batch_size=10, epochs=3, accumulate=2, clip_norm=0.5, seed=7),
    # sharded state, 64 rows by 9, with a checkpoint each epoch (resumed on another number of ranks)
    "sharded": dict(optimizer="sgd_nesterov", shard=True, batch_size=9, epochs=3, accumulate=1, clip_norm=None,
                    seed=3),
}
FIT_FIRST_EPOCHS = 1  # the "fit_part" runs stop here and write the checkpoint the resumed runs continue


def fit_loss_and_grad(params, batch):
    return loss_and_grad(params, *batch)


def fit_run(label: str, comm=None, *, epochs=None, checkpoint=None, resume=False):
    """One fit run of ``FIT_RUNS[label]``: single-process when ``comm`` is None. Returns (params, history)."""
    cfg = FIT_RUNS[label]
    params = initial_params(0)
    opt = build(cfg["optimizer"], params)
    if comm is not None and cfg["shard"]:
        from adamkit.distributed import DistributedOptimizer
        opt = DistributedOptimizer(opt, comm, shard_state=True)
    hist = ak.fit(fit_loss_and_grad, opt, data(), batch_size=cfg["batch_size"],
                  epochs=cfg["epochs"] if epochs is None else epochs, accumulate=cfg["accumulate"],
                  clip_norm=cfg["clip_norm"], seed=cfg["seed"], checkpoint=checkpoint, resume=resume,
                  progress=False, comm=comm if comm is not None and not cfg["shard"] else None)
    return params, hist


# --------------------------------------------------------------------------------------------------
# the MPI side


def _distributed_run(d, params, name, comm, start, steps, losses):
    from adamkit.distributed import split_evenly
    X, y = data()
    r, P = comm.Get_rank(), comm.Get_size()
    for idx in batches(steps)[start:]:
        counts, displs = split_evenly(len(idx), P)
        mine = idx[displs[r]:displs[r] + counts[r]]
        if len(mine):
            loss, g = loss_and_grad(params, X[mine], y[mine])
        else:  # an empty local batch: weight 0, nothing is read
            loss, g = 0.0, {k: np.zeros_like(v) for k, v in params.items()}
        if name.endswith("_clip"):
            reduced = d.reduce(grads_for(d.optimizer, g), weight=len(mine), loss=loss)
            reduced.clip(CLIP)
            losses.append(d.step(reduced))
        else:
            losses.append(d.step(grads_for(d.optimizer, g), weight=len(mine), loss=loss))


def scenario_dataparallel(comm, out: Path):
    from adamkit.distributed import DistributedOptimizer
    r = comm.Get_rank()
    results, info = {}, {}
    for name in CONFIGS:
        for shard in (False, True):
            params = params_for(name, seed=r)  # only rank 0's values count: they are broadcast
            d = DistributedOptimizer(build(name, params), comm, shard_state=shard)
            synced_at_start = d.check_synchronized()
            losses: list = []
            _distributed_run(d, params, name, comm, 0, STEPS, losses)
            key = f"{name}/{'sharded' if shard else 'replicated'}"
            nbytes = comm.gather(d.state_nbytes, root=0)
            sync = d.check_synchronized()
            for k, v in params.items():
                results[f"{key}/{k}"] = v
            info[key] = {"synced_at_start": synced_at_start, "synchronized": sync, "state_nbytes": nbytes,
                         "losses": losses, "step_count": d.step_count,
                         "collectives_per_step": d.collectives_per_step}
    if r == 0:
        np.savez(out / "params.npz", **results)
        (out / "info.json").write_text(json.dumps(info))


def scenario_save(comm, out: Path, shard: bool, steps: int):
    from adamkit.distributed import DistributedOptimizer
    r = comm.Get_rank()
    for name in CONFIGS:
        params = params_for(name)
        d = DistributedOptimizer(build(name, params), comm, shard_state=shard)
        _distributed_run(d, params, name, comm, 0, steps, [])
        d.save(out / f"opt_{name}.npz")
        if r == 0:
            np.savez(out / f"params_{name}.npz", **params)


def scenario_resume(comm, out: Path, shard: bool, start: int, steps: int):
    from adamkit.distributed import DistributedOptimizer
    r = comm.Get_rank()
    results = {}
    for name in CONFIGS:
        params = params_for(name)
        if r == 0:  # only rank 0 reads the parameters: the constructor broadcasts them
            with np.load(out / f"params_{name}.npz") as f:
                for k in params:
                    params[k][...] = f[k]
        d = DistributedOptimizer(build(name, params), comm, shard_state=shard)
        d.load(out / f"opt_{name}.npz")
        _distributed_run(d, params, name, comm, start, steps, [])
        for k, v in params.items():
            results[f"{name}/{k}"] = v
        results[f"{name}/#step_count"] = np.array(d.step_count)
    if r == 0:
        np.savez(out / "resumed.npz", **results)


def scenario_fit(comm, out: Path, part: str):
    """``part``: "full" (both FIT_RUNS, and the first epoch of each with a checkpoint) or "resume"."""
    results, histories = {}, {}
    for label in FIT_RUNS:
        ckpt = out / f"fit_{label}.npz"
        if part == "full":
            params, hist = fit_run(label, comm)
            fit_run(label, comm, epochs=FIT_FIRST_EPOCHS, checkpoint=ckpt)
        else:
            params, hist = fit_run(label, comm, checkpoint=ckpt, resume=True)
        for k, v in params.items():
            results[f"{label}/{k}"] = v
        histories[label] = {"loss": hist.loss, "grad_norm": hist.grad_norm, "epoch_loss": hist.epoch_loss,
                            "steps": hist.steps, "lr": hist.lr}
    if comm.Get_rank() == 0:
        np.savez(out / f"fit_{part}.npz", **results)
        (out / f"fit_{part}.json").write_text(json.dumps(histories))


def scenario_errors(comm, out: Path):
    """Each check raises the same error on every rank; each rank prints it and goes on."""
    from adamkit.distributed import DistributedOptimizer
    r, P = comm.Get_rank(), comm.Get_size()
    last = P - 1

    report: dict[str, str] = {}

    def attempt(label, fn):
        try:
            fn()
            report.setdefault(label, "no error")
        except Exception as exc:  # noqa: BLE001 - recorded for the test to read
            report[label] = f"{type(exc).__name__}: {exc}"

    def mismatched_shape():
        p = initial_params(0)
        if r == last:
            p["W"] = np.zeros((N_FEATURES, 4))
        DistributedOptimizer(ak.Adam(p), comm)

    def mismatched_lr():
        DistributedOptimizer(ak.Adam(initial_params(0), lr=0.01 if r == last else 0.02), comm)

    def mismatched_names():
        p = initial_params(0)
        if r == last:
            p["extra"] = np.zeros(2)
        DistributedOptimizer(ak.Adam(p), comm)

    def mismatched_dtype():
        p = initial_params(0)
        if r == last:
            p["b"] = p["b"].astype(np.float32)
        DistributedOptimizer(ak.Adam(p), comm)

    def mismatched_class():
        p = initial_params(0)
        DistributedOptimizer(ak.Adam(p) if r != last else ak.AdamW(p), comm)

    def mismatched_shard():
        DistributedOptimizer(ak.Adam(initial_params(0)), comm, shard_state=(r == last))

    def nonfinite_sharded():
        p = initial_params(0)
        d = DistributedOptimizer(ak.Adam(p), comm, shard_state=True)
        g = {k: np.ones_like(v) for k, v in p.items()}
        if r == last:
            g["b"][1] = np.nan
        d.step(g)

    def nonfinite_skip():
        p = initial_params(0)
        d = DistributedOptimizer(ak.Adam(p, nonfinite="skip"), comm, shard_state=True)
        before = copy_params(p)
        g = {k: np.ones_like(v) for k, v in p.items()}
        if r == last:
            g["W"][0, 0] = np.inf
        d.step(g)
        same = all(np.array_equal(p[k], before[k]) for k in p)
        report["skip"] = f"skipped_steps={d.skipped_steps} step_count={d.step_count} unchanged={same}"

    def zero_total_weight():
        p = initial_params(0)
        d = DistributedOptimizer(ak.Adam(p), comm)
        d.step({k: np.ones_like(v) for k, v in p.items()}, weight=0)

    def sum_overflows():  # every rank's float32 gradient is finite; their sum is not
        p = {"w": np.zeros(4, np.float32)}
        d = DistributedOptimizer(ak.Adam(p), comm, shard_state=True)
        d.step({"w": np.full(4, 2e38, np.float32)})

    def stepped_elsewhere():  # rank `last` has stepped before wrapping, rank 0 has not
        p = initial_params(0)
        opt = ak.Adam(p)
        if r == last:
            opt.step({k: np.ones_like(v) for k, v in p.items()})
        DistributedOptimizer(opt, comm)

    def schedules_differ():  # two lambdas of one name and place, with different rates
        rate = 0.1 if r == last else 0.01
        DistributedOptimizer(ak.Adam(initial_params(0), lr=lambda t: rate), comm)

    def eps_too_small_for_one_shard():  # float32 only in the last elements: one rank's shard holds it
        groups = [{"params": {"a": np.ones(8), "b": np.ones(1, np.float32)}}]
        d = DistributedOptimizer(ak.Adam(groups), comm, shard_state=True)
        d.param_groups[0]["eps"] = 1e-50
        d.step([{"a": np.ones(8), "b": np.ones(1, np.float32)}])

    def loss_on_some_ranks():
        p = initial_params(0)
        d = DistributedOptimizer(ak.Adam(p), comm)
        d.step({k: np.ones_like(v) for k, v in p.items()}, loss=5.0 if r == 0 else None)

    def rewrap_after_sharding():
        p = initial_params(0)
        opt = ak.Adam(p)
        DistributedOptimizer(opt, comm, shard_state=True)
        DistributedOptimizer(opt, comm)

    def schedule_fails_later():  # one element, so some ranks own no part of the state
        p = {"w": np.zeros(1)}
        d = DistributedOptimizer(ak.Adam(p, lr=lambda t: 0.1 if t < 2 else float("nan")), comm, shard_state=True)
        for _ in range(3):
            d.step({"w": np.ones(1)})

    def template_after_sharding():
        p = initial_params(0)
        opt = ak.Adam(p)
        DistributedOptimizer(opt, comm, shard_state=True)
        opt.state_dict()

    for label, fn in [("shape", mismatched_shape), ("lr", mismatched_lr), ("names", mismatched_names),
                      ("dtype", mismatched_dtype), ("class", mismatched_class), ("shard", mismatched_shard),
                      ("nonfinite", nonfinite_sharded), ("skip", nonfinite_skip), ("weight", zero_total_weight),
                      ("overflow", sum_overflows), ("history", stepped_elsewhere), ("schedule", schedules_differ),
                      ("eps", eps_too_small_for_one_shard), ("loss", loss_on_some_ranks),
                      ("template", template_after_sharding), ("rewrap", rewrap_after_sharding),
                      ("schedule_nan", schedule_fails_later)]:
        attempt(label, fn)
    (out / f"errors_rank{r}.json").write_text(json.dumps(report))


def scenario_interrupt(comm, out: Path, where: str):
    """Rank 1 is interrupted (KeyboardInterrupt) during step 3 of a fit (``where="grad"``: inside its
    loss_and_grad; ``"signal"``: a SIGINT to itself there, deferred by fit): every rank must stop before
    the same step, write the checkpoint and return "interrupted", not hang."""
    import os
    import signal
    r = comm.Get_rank()
    X, y = data()
    params = initial_params(0)
    calls = [0]

    def lg(p, batch):
        calls[0] += 1
        if r == 1 and calls[0] == 3:
            if where == "grad":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGINT)
        return loss_and_grad(p, batch[0], batch[1])

    ckpt = out / "interrupt.npz"
    hist = ak.fit(lg, ak.Adam(params, lr=0.05), (X, y), batch_size=8, epochs=2, seed=0, checkpoint=ckpt,
                  comm=comm)
    (out / f"interrupt_rank{r}.json").write_text(json.dumps(
        {"stop_reason": hist.stop_reason, "steps": hist.steps, "exists": ckpt.exists(),
         "w": params["W"].ravel().tolist()}))


def scenario_validation(comm, out: Path):
    """Every rank evaluates its own validation data (here: different rows): early stopping follows rank
    0's metric on every rank, so all stop after the same epoch."""
    r = comm.Get_rank()
    X, y = data()
    params = initial_params(0)
    Xv, yv = X[r * 8:(r + 1) * 8], y[r * 8:(r + 1) * 8] + 5.0 * r
    seen = []
    hist = ak.fit(lambda p, b: loss_and_grad(p, b[0], b[1]), ak.Adam(params, lr=0.3), (X, y), batch_size=8,
                  epochs=30, seed=0, validation_data=(Xv, yv), patience=2, comm=comm,
                  callback=(lambda h: seen.append(h.epochs)) if r == 0 else None)  # a logger on rank 0 only
    from adamkit.distributed import DistributedOptimizer
    d = DistributedOptimizer(ak.SGD({"w": np.zeros(1)}), comm)
    shares = [len(x) for x in d.local_part((list(range(6)), list(range(6, 12))))]  # lists: each split

    def failing_metric(p, batch):
        raise ValueError("metric failed")
    try:
        ak.fit(lambda p, b: loss_and_grad(p, b[0], b[1]), ak.Adam(initial_params(0), lr=0.3), (X, y),
               batch_size=8, epochs=2, validation_data=(Xv, yv), metric=failing_metric, comm=comm)
        caught = None
    except ValueError as exc:  # caught on every rank: no rank may be left waiting
        caught = str(exc)
    (out / f"validation_rank{r}.json").write_text(json.dumps(
        {"stop_reason": hist.stop_reason, "epochs": hist.epochs, "val": hist.val_metric, "shares": shares,
         "caught": caught}))


def scenario_abort(comm, out: Path, how: str):
    """Rank 1 fails while the others wait in a collective: the job must end, with rank 1's message.
    ``how``: "hook" (the excepthook the constructor installs) or "context" (``abort_on_exception``)."""
    from adamkit.distributed import DistributedOptimizer, abort_on_exception
    p = initial_params(0)
    d = DistributedOptimizer(ak.Adam(p), comm, abort_on_error=(how == "hook"))
    with abort_on_exception(comm) if how == "context" else contextlib.nullcontext():
        if comm.Get_rank() == 1:
            raise RuntimeError("boom: rank 1 could not compute its gradient")
        d.step({k: np.ones_like(v) for k, v in p.items()})
    print(f"rank {comm.Get_rank()} was not aborted", flush=True)


def main(argv):
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    scenario, out = argv[1], Path(argv[2])
    if scenario == "dataparallel":
        scenario_dataparallel(comm, out)
    elif scenario == "save":
        scenario_save(comm, out, shard=argv[3] == "sharded", steps=int(argv[4]))
    elif scenario == "resume":
        scenario_resume(comm, out, shard=argv[3] == "sharded", start=int(argv[4]), steps=int(argv[5]))
    elif scenario == "fit":
        scenario_fit(comm, out, argv[3])
    elif scenario == "errors":
        scenario_errors(comm, out)
    elif scenario == "validation":
        scenario_validation(comm, out)
    elif scenario == "interrupt":
        scenario_interrupt(comm, out, argv[3])
    elif scenario == "abort":
        scenario_abort(comm, out, argv[3])
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")


if __name__ == "__main__":
    main(sys.argv)
