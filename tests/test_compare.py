"""The comparison harness on small budgets: selection by median, failures recorded (never raised),
reproducibility across process counts, the JSON round trip, effective step sizes, and argument errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import adamkit as ak
from adamkit import _compare
from adamkit._compare import good_range, parse_method, run_one, select_lr


def quad(name="q", steps=40, target=None, **kw):
    """f(x) = 1/2 sum h x^2 with h = (1, 10); SGD diverges for lr > 0.2."""
    h = np.array([1.0, 10.0])

    def init(rng):
        return rng.standard_normal(2)

    def lg(x, rng):
        return 0.5 * float(x @ (h * x)), h * x

    return ak.Problem(name, init, lg, steps, target=target, floor=0.0, lrs=[1e-2, 1e-1, 1.0], **kw)


def noisy(name="n", steps=60):
    def init(rng):
        return np.ones(3)

    def lg(x, rng):
        z = rng.standard_normal(3)
        return float(x @ x) + float(z @ x), 2 * x + z

    return ak.Problem(name, init, lg, steps, stochastic=True, lrs=[1e-2, 1e-1])


# --------------------------------------------------------------------------------------------------
# selection


def rows(lr_losses):
    return [{"lr": lr, "final_loss": v, "seed": i} for lr, vs in lr_losses.items() for i, v in enumerate(vs)]


def test_selection_is_by_median_not_mean():
    # lr 0.1 has the better median (1) but a worse mean (34) than lr 0.01 (2, 2, 2)
    sel = select_lr(rows({0.01: [2.0, 2.0, 2.0], 0.1: [1.0, 1.0, 100.0]}))
    assert sel["chosen"] == 0.1
    grid = {row["lr"]: row for row in sel["grid"]}
    assert grid[0.1]["median"] == 1.0 and grid[0.1]["max"] == 100.0


def test_selection_counts_a_failure_as_infinite():
    # two of three seeds diverged at lr 1: its median is infinite whatever the survivor did
    sel = select_lr(rows({0.1: [3.0, 3.0, 3.0], 1.0: [None, None, 0.001]}))
    assert sel["chosen"] == 0.1
    assert {row["lr"]: row["failed"] for row in sel["grid"]} == {0.1: 0, 1.0: 2}
    # one failure of three still leaves a finite median
    assert select_lr(rows({0.1: [3.0, 3.0, 3.0], 1.0: [None, 1.0, 1.0]}))["chosen"] == 1.0
    assert select_lr(rows({0.1: [None, None, 1.0]}))["chosen"] is None


def test_good_range_width_in_decades():
    grid = [{"lr": lr, "median": m} for lr, m in [(1e-3, 9.0), (1e-2, 1.5), (1e-1, 1.0), (1.0, 1.9), (10.0, math.inf)]]
    g = good_range(grid, 1e-1, factor=2.0, floor=None, target=None)
    assert (g["lo"], g["hi"], g["count"]) == (1e-2, 1.0, 3) and g["width"] == pytest.approx(2.0)
    assert not g["at_edge"]
    # against a floor of 0.9 the excesses are 0.6, 0.1, 1.0: only the best is within 2x
    assert good_range(grid, 1e-1, 2.0, floor=0.9, target=None)["width"] == 0.0
    # reaching the target also counts as good
    assert good_range(grid, 1e-1, 2.0, floor=0.9, target=2.0)["width"] == pytest.approx(2.0)
    edge = good_range(grid[:3], 1e-1, 2.0, None, None)
    assert edge["at_edge"] and edge["width"] == pytest.approx(1.0)
    # against the best loss of another optimizer (0.5): only this grid's best is within 2x
    assert good_range(grid, 1e-1, 2.0, None, None, reference=0.5)["width"] == 0.0
    # another optimizer reached 0.1: none of these rates is good
    none = good_range(grid, 1e-1, 2.0, None, None, reference=0.1)
    assert none["width"] is None and none["count"] == 0


# --------------------------------------------------------------------------------------------------
# runs


def test_divergence_is_recorded_not_raised():
    p = quad()
    rec = run_one(p, parse_method("sgd"), 1.0, seed=0)  # lr 1 > 2/10: the steep coordinate blows up
    assert rec["status"] == "diverged" and rec["final_loss"] is None
    assert "step" in rec["message"] and rec["steps_done"] < p.steps
    ok = run_one(p, parse_method("sgd"), 0.1, seed=0)
    assert ok["status"] == "ok" and ok["final_loss"] < 0.5 * p.objective(p.init(_compare._rng(0, "q")))


def test_nan_loss_and_errors_are_recorded():
    def lg(x, rng):
        return (float("nan") if x[0] < 0.5 else float(x @ x)), 2 * x

    p = ak.Problem("nan", lambda rng: np.ones(2), lg, 20)
    rec = run_one(p, parse_method("sgd"), 0.1, 0)
    assert rec["status"] == "diverged" and "nan" in rec["message"].lower()

    def boom(x, rng):
        if x[0] < 0.9:
            raise RuntimeError("user bug")
        return float(x @ x), 2 * x

    rec = run_one(ak.Problem("boom", lambda rng: np.ones(2), boom, 20), parse_method("sgd"), 0.1, 0)
    assert rec["status"] == "error" and rec["message"] == "RuntimeError: user bug"


def test_a_run_whose_evaluation_fails_is_a_failed_run():
    """Its final loss does not count (a failure is an infinite loss in the selection), and a NaN metric is
    a divergence, not a number in the table."""
    for evaluate, status, message in ((lambda x: {"acc": "x"}, "error", "ValueError"),
                                      (lambda x: {"acc": float("nan")}, "diverged", "metric 'acc' = nan"),
                                      (lambda x: 5, "error", "AttributeError")):
        p = quad(evaluate=evaluate)
        rec = run_one(p, parse_method("sgd"), 0.1, 0)
        assert rec["status"] == status and message in rec["message"] and rec["final_loss"] is None, rec
    with pytest.warns(RuntimeWarning, match=r"compare: \d+ run\(s\) raised an error"):
        res = ak.compare([quad(evaluate=lambda x: {"acc": "x"})], ["sgd"], seeds=2, progress=False, jobs=1)
    assert res.summary()[0]["lr"] is None


class _Widths:
    """The part of Results that claim 6 reads: good-lr widths per (problem, optimizer)."""

    def __init__(self, widths):
        self.settings = {"factor": 2.0}
        self.widths = widths
        self.problems = [{"name": n, "floor": 0.0, "methods": list(w)} for n, w in widths.items()]

    def problem(self, name):
        return next(p for p in self.problems if p["name"] == name)

    def row(self, name, method):
        return {"lr": 0.1, "width": self.widths[name][method]}


def test_claim_6_counts_ties_for_neither_side():
    """Equal widths ('none' against 'none' included) are not wins: Adam wider on 1 problem, narrower on 1
    and tied on 3 does not hold against that optimizer."""
    from adamkit._report import _claim6

    tied = {f"p{i}": {"adam": None, "sgd": None} for i in range(3)}
    res = _Widths({**tied, "w": {"adam": 2.0, "sgd": 1.0}, "n": {"adam": 0.5, "sgd": 1.5}})
    c = _claim6(res)
    assert c.numbers["adam_wider_narrower_equal"] == {"sgd": [1, 1, 3]} and c.verdict == "does not hold"
    res = _Widths({**tied, "w": {"adam": 2.0, "sgd": 1.0}, "n": {"adam": 1.5, "sgd": 1.5}})
    assert _claim6(res).verdict == "holds"


def test_a_user_problem_named_like_a_built_in_one_does_not_test_its_claim():
    res = ak.compare([quad(name="quadratic")], ["sgd", "momentum", "adam"], seeds=1, progress=False, jobs=1)
    c = next(c for c in res.claims() if c.number == 2)
    assert c.verdict == "not tested" and "not adamkit's built-in one" in c.summary


def test_results_that_do_not_reproduce_are_flagged():
    """A problem drawing noise from a generator of its own, not from the rng it is given."""
    own = np.random.default_rng(0)
    p = ak.Problem("leaky", lambda rng: np.ones(2), lambda x, rng: (float(x @ x) + own.random(), 2 * x), 10,
                   stochastic=True, lrs=[1e-2, 1e-1])
    with pytest.warns(RuntimeWarning, match=r"compare: for leaky/sgd, rerunning a tuning seed did not reproduce"):
        res = ak.compare([p], ["sgd"], seeds=2, progress=False, jobs=1)
    assert any("not reproducible" in n for n in res.settings["notes"])


def test_nonfinite_gradient_is_a_divergence():
    p = ak.Problem("inf", lambda rng: np.ones(2), lambda x, rng: (1.0, np.array([np.inf, 0.0])), 5)
    rec = run_one(p, parse_method("adam"), 0.1, 0)
    assert rec["status"] == "diverged" and "non-finite gradient" in rec["message"]


def test_evals_to_target_is_exact_on_a_deterministic_problem():
    # SGD with lr 0.5 on f = x^2/2 halves x each step: f_t = f_0 / 4^t
    p = ak.Problem("half", lambda rng: np.array([1.0]), lambda x, rng: (0.5 * float(x @ x), x.copy()), 10,
                   target=0.5 / 4 ** 3 * 1.0001, floor=0.0)
    rec = run_one(p, parse_method("sgd"), 0.5, 0, detail=True)
    assert rec["evals_to_target"] == 3
    assert rec["final_loss"] == pytest.approx(0.5 / 4 ** 10)
    assert rec["curve_steps"][0] == 0 and rec["curve"][0] == 0.5 and rec["curve_steps"][-1] == 10


def test_evals_to_target_is_exact_with_a_full_loss():
    # a stochastic problem whose objective is only evaluated at checkpoints: the step is still exact
    h = np.array([1.0, 4.0])
    p = ak.Problem("nq", lambda rng: np.array([3.0, 3.0]),
                   lambda x, rng: (0.0, h * x + 0.3 * rng.standard_normal(2)), 200, stochastic=True,
                   full_loss=lambda x: 0.5 * float(x @ (h * x)), target=0.05)
    rec = run_one(p, parse_method("sgd"), 0.02, 0, detail=True, checkpoints=20)
    rng = _compare._rng(0, "nq")
    x = p.init(rng)
    opt = ak.SGD(x, lr=0.02)
    first = None
    for t in range(1, 201):
        opt.step(p.loss_and_grad(x, rng)[1])
        if first is None and p.full_loss(x) <= 0.05:
            first = t
    assert first is not None and rec["evals_to_target"] == first
    assert len(rec["curve"]) < 40  # the objective was not evaluated at every step


def test_stochastic_final_loss_is_the_mean_of_the_last_steps():
    p = noisy(steps=40)
    rec = run_one(p, parse_method("sgd"), 0.0 + 1e-12, 0)  # no movement: the mean of the last 2 sampled losses
    rng = _compare._rng(0, "n")
    x = p.init(rng)
    losses = [p.loss_and_grad(x, rng)[0] for _ in range(40)]
    assert rec["final_loss"] == pytest.approx(np.mean(losses[-2:]), rel=1e-9)


def test_online_problem_gets_t_and_projection():
    seen = []

    def lg(x, rng, t):
        seen.append(t)
        return float(x[0]), np.array([-5.0])

    p = ak.Problem("o", lambda rng: np.array([0.0]), lg, 4, online=True, full_loss=lambda x: float(x[0]),
                   project=lambda x: np.clip(x, -1, 1, out=x))
    rec = run_one(p, parse_method("sgd"), 1.0, 0, detail=True)
    assert seen == [1, 2, 3, 4] and rec["final_loss"] == 1.0 and max(rec["curve"]) <= 1.0


def test_effective_steps_match_the_adam_formula():
    w = np.array([1.0, -2.0, 3.0])
    opt = ak.Adam(w, lr=0.01, betas=(0.9, 0.99))
    for g in ([1.0, 0.5, -2.0], [0.3, 0.1, 1.0], [2.0, -1.0, 0.0]):
        opt.step(np.array(g))
    v = opt.state_dict()["state"]["params"]["exp_avg_sq"]
    expect = 0.01 / (np.sqrt(v / (1 - 0.99 ** 3)) + 1e-8)
    assert np.allclose(_compare.effective_steps(opt, parse_method("adam"), 0.01), expect, rtol=1e-12)
    a = ak.Adagrad(np.zeros(2), lr=0.1)
    a.step(np.array([3.0, 0.0]))
    e = _compare.effective_steps(a, parse_method("adagrad"), 0.1)
    assert e[0] == pytest.approx(0.1 / 3) and math.isnan(e[1])  # never had a gradient: no step


def test_first_steps_are_traced():
    p = quad(trace=True)
    rec = run_one(p, parse_method("adam"), 0.01, 0)
    # Adam's first update is lr * g / (|g| + eps) per coordinate: rms very close to lr
    assert rec["first_update_rms"][0] == pytest.approx(0.01, rel=1e-6)
    assert len(rec["first_update_rms"]) == len(rec["first_loss"]) == p.steps


# --------------------------------------------------------------------------------------------------
# compare


@pytest.fixture(scope="module")
def small():
    probs = [quad(target=1e-3), noisy()]
    return ak.compare(probs, ["sgd", "momentum", "adam"], seeds=4, tune_seeds=3, jobs=1, progress=False)


def test_compare_protocol(small):
    s = small.settings
    assert s["seeds"] == [0, 1, 2, 3] and s["tune_seeds"] == [0, 1, 2]
    # tuning: every grid point from the tuning seeds; final: the chosen setting on every seed
    assert len(small.tuning) == 3 * 3 * 3 + 3 * 2 * 3  # methods x grid (3 and 2 points) x tuning seeds
    assert len(small.final) == 2 * 3 * 4
    for row in small.summary():
        sel = small.selection(row["problem"], row["method"])
        assert row["lr"] == sel["chosen"]
        fin = [r for r in small.final if r["problem"] == row["problem"] and r["method"] == row["method"]]
        assert {r["lr"] for r in fin} == {row["lr"]} and sorted(r["seed"] for r in fin) == [0, 1, 2, 3]
        assert row["reproduced"] is True  # reruns of tuning seeds match bit for bit
        assert row["final_mean"] == pytest.approx(np.mean([r["final_loss"] for r in fin]))
    # SGD at lr 1 diverges on every seed: recorded, and never chosen
    sgd = small.row("q", "sgd")
    assert sgd["tuning_failures"] == 3 and sgd["lr"] != 1.0
    assert all(r["status"] == "diverged" for r in small.runs("q", "sgd") if r["lr"] == 1.0)
    assert len(small.failures()) >= 3


def test_results_json_round_trip(small, tmp_path):
    path = small.to_json(tmp_path / "sub" / "r.json")
    data = json.loads(path.read_text())  # standard JSON: no NaN or Infinity tokens
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()
    assert data["settings"]["format"] == _compare.RESULTS_FORMAT
    back = ak.load_results(path)
    assert back.table() == small.table() and back.table("markdown") == small.table("markdown")
    assert back.summary() == json.loads(json.dumps(_compare._jsonable(small.summary())))
    assert [c.verdict for c in back.claims()] == [c.verdict for c in small.claims()]
    with pytest.raises(ValueError, match="was not written by Results.to_json"):
        (tmp_path / "x.json").write_text("{}")
        ak.load_results(tmp_path / "x.json")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ak.load_results(tmp_path / "missing.json")
    del data["settings"]["factor"]
    (tmp_path / "y.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"is incomplete or inconsistent \(KeyError: 'factor'\)"):
        ak.load_results(tmp_path / "y.json")


def test_same_results_in_one_or_two_processes():
    probs = [quad(), noisy()]
    one = ak.compare(probs, ["sgd", "adam"], seeds=3, jobs=1, progress=False)
    two = ak.compare(probs, ["sgd", "adam"], seeds=3, jobs=2, progress=False)
    key = lambda r: (r["problem"], r["method"], r["lr"], r["seed"])  # noqa: E731
    assert [(key(r), r["final_loss"]) for r in one.tuning] == [(key(r), r["final_loss"]) for r in two.tuning]
    assert [(key(r), r["curve"]) for r in one.final] == [(key(r), r["curve"]) for r in two.final]
    # every recorded number, not just the losses (only the timings differ)
    strip = lambda runs: [{k: v for k, v in r.items() if k != "seconds"} for r in runs]  # noqa: E731
    assert strip(one.final) == strip(two.final) and strip(one.tuning) == strip(two.tuning)
    assert one.table() == two.table()


def test_claims_untested_without_their_problems(small):
    claims = small.claims()
    assert [c.number for c in claims] == list(range(1, 9))
    # only claim 6 (tuneability: Adam against SGD and momentum) can be measured on these problems
    assert [c.number for c in claims if c.verdict != "not tested"] == [6]
    assert "was not run" in claims[0].summary and "were not all run" in claims[4].summary
    # "n" has no known minimum, so its widths (on the raw loss) are not counted
    assert set(claims[5].numbers["widths_decades"]) == {"q"}
    assert claims[5].numbers["excluded_no_known_minimum"] == ["n"]


def test_table_lists_every_problem_and_method(small):
    t = small.table()
    for name in ("q", "n"):
        assert f"\n{name} [" in "\n" + t  # no description: name, then the facts
    assert t.count("momentum") == 2
    md = small.table("markdown")
    assert "| optimizer | lr* |" in md
    with pytest.raises(ValueError, match="fmt='html': expected 'text' or 'markdown'"):
        small.table("html")


def test_plots_are_written(small, tmp_path):
    from PIL import Image

    paths = small.plot(tmp_path / "figs")
    names = {p.name for p in paths}
    assert names == {"loss_curves.png", "lr_sensitivity.png", "tuneability.png"}  # the others need built-ins
    for p in paths:
        with Image.open(p) as im:
            im.verify()
            assert im.format == "PNG"


def test_variants_run_only_when_asked():
    p = quad(variants=[ak.Variant("adam-nobc", "adam", {"bias_correction": False})])
    with_v = ak.compare([p], ["adam"], seeds=3, jobs=1, progress=False)
    assert with_v.problem("q")["methods"] == ["adam", "adam-nobc"]
    without = ak.compare([p], ["adam"], seeds=3, jobs=1, progress=False, variants=False)
    assert without.problem("q")["methods"] == ["adam"]


def test_fewer_than_three_tuning_seeds_is_flagged():
    res = ak.compare([quad()], ["sgd"], seeds=2, jobs=1, progress=False)
    assert res.settings["tune_seeds"] == [0, 1]
    assert "at least 3" in res.settings["notes"][0]


@pytest.mark.parametrize("kwargs, error, message", [
    ({"problems": ["nope"]}, ValueError, r"problems: unknown problem 'nope'; expected a Problem or one of quadratic"),
    ({"problems": [3]}, TypeError, r"problems: expected Problem objects or built-in names, got 3"),
    ({"optimizers": ["adamm"]}, ValueError, r"optimizer 'adamm': expected a name \(sgd, momentum"),
    ({"optimizers": ["adam(beta=0.9)"]}, ValueError, r"unknown option\(s\) \['beta'\]; Adam takes betas"),
    ({"optimizers": ["adam(lr=0.1)"]}, ValueError, r"unknown option\(s\) \['lr'\].*lr comes from the grid"),
    ({"optimizers": ["sgd(momentum=-1)"]}, ValueError, r"optimizer 'sgd\(momentum=-1\)': momentum=-1"),
    ({"optimizers": ["adam", "adam"]}, ValueError, r"duplicate label\(s\) \['adam'\]"),
    ({"seeds": 0}, ValueError, r"seeds=0: expected a number of seeds >= 1"),
    ({"seeds": [1, 1]}, ValueError, r"seeds=\[1, 1\]: expected distinct integer seeds >= 0"),
    ({"tune_seeds": 4}, ValueError, r"tune_seeds=4: expected an integer from 1 to the number of seeds \(3\)"),
    ({"lrs": [0.1, 0]}, ValueError, r"lrs: entry 0 is not a positive finite number"),
    ({"lrs": {"other": [0.1]}}, ValueError, r"lrs: grid given for unknown problem\(s\) \['other'\]"),
    ({"jobs": 0}, ValueError, r"jobs=0: expected an integer >= 1"),
    ({"factor": 1.0}, ValueError, r"factor=1.0: expected a number > 1"),
    ({"seeds": "3"}, TypeError, r"^seeds='3': expected a number of seeds"),
])
def test_compare_argument_errors(kwargs, error, message):
    args = {"problems": [quad()], "optimizers": ["sgd"], "progress": False, "jobs": 1, **kwargs}
    with pytest.raises(error, match=message):
        ak.compare(**args)


def test_a_broken_problem_stops_before_the_work():
    p = ak.Problem("broken", lambda rng: np.ones(2), lambda x, rng: (_ for _ in ()).throw(KeyError("k")), 5)
    with pytest.raises(ValueError, match=r"problem 'broken': init, loss_and_grad or full_loss failed on seed 0: KeyError"):
        ak.compare([p], ["sgd"], progress=False, jobs=1)


@pytest.mark.parametrize("kw, message", [
    ({"init": lambda rng: 1.0}, r"problem 'bad': init\(rng\) is a float; expected float32 or float64 arrays"),
    ({"init": lambda rng: {"w": np.ones(2, int)}}, r"problem 'bad': init\(rng\).w is an array of shape \(2,\) of "
                                                   r"dtype int64; expected float32 or float64"),
    ({"schedule": lambda lr: 0.1}, r"problem 'bad': schedule\(lr\) returned 0\.1; expected a callable"),
])
def test_a_problem_that_every_run_would_fail_stops_before_the_work(kw, message):
    args = {"init": lambda rng: np.ones(2), **kw}
    p = ak.Problem("bad", args["init"], lambda x, rng: (1.0, x), 5,
                   schedule=args.get("schedule"))
    with pytest.raises(ValueError, match=message):
        ak.compare([p], ["sgd"], progress=False, jobs=1)


def test_parse_method_forms():
    m = parse_method("adam(betas=(0.9, 0.9999), bias_correction=False)")
    assert (m.label, m.optimizer, m.options) == ("adam(betas=(0.9,0.9999),bias_correction=False)", "adam",
                                                  {"betas": (0.9, 0.9999), "bias_correction": False})
    assert parse_method("momentum(momentum=0.5)").options == {"momentum": 0.5}
    assert parse_method("Momentum").options == {"momentum": 0.9}
    assert parse_method(("mine", "rmsprop", {"alpha": 0.9})).optimizer == "rmsprop"
    with pytest.raises(ValueError, match="expected a name"):
        parse_method("adam(0.1)")


def test_thread_settings_are_restored():
    # compare runs single-threaded BLAS / Numba inside, and must give the caller its settings back
    numba = pytest.importorskip("numba")
    from threadpoolctl import threadpool_info

    before = (numba.get_num_threads(), [i["num_threads"] for i in threadpool_info()])
    ak.compare([quad()], ["sgd"], seeds=3, jobs=1, progress=False)
    assert (numba.get_num_threads(), [i["num_threads"] for i in threadpool_info()]) == before
    assert _compare._WORK == {}  # no problem data kept alive


def test_an_optimizer_failing_at_every_rate_is_reported():
    # SGD diverges at every rate of this grid (lr > 2/10); Adam's steps are bounded by lr and survive
    p = ak.Problem("steep", lambda rng: np.ones(2), lambda x, rng: (5.0 * float(x @ x), 10.0 * x), 30,
                   lrs=[0.5, 1.0], floor=0.0)
    res = ak.compare([p], ["sgd", "adam"], seeds=3, jobs=1, progress=False)
    row = res.row("steep", "sgd")
    assert row["lr"] is None and row["tuning_failures"] == 6 and row["seeds"] == 0
    assert not res.runs("steep", "sgd", final=True)
    assert "failed at every lr" in res.table()
    assert res.row("steep", "adam")["lr"] is not None
    assert len(res.claims()) == 8  # the claims still evaluate


def test_a_report_that_fails_midway_leaves_the_earlier_one_as_it_was(small, tmp_path, monkeypatch):
    """Everything is drawn and written in a staging directory and moved into place at the end, so a
    failure (here in report.md) leaves the earlier report's files byte for byte, and no staging files."""
    from adamkit import _report

    small.report(tmp_path, jobs=1)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def broken(blocks):
        raise RuntimeError("disk full")
    monkeypatch.setattr(_report, "_md", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        small.report(tmp_path, jobs=1)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
