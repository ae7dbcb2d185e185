"""The report of a comparison: the results table, the figures, the seed notes' claims and their verdicts,
and ``report.md`` / a self-contained ``report.html``.

Everything here reads only the stored runs of a :class:`adamkit._compare.Results`, so a report can be
rebuilt from ``results.json``. Each claim states the experiment that tests it, the numbers, and a verdict
decided by a rule written down next to it (in :func:`evaluate_claims`): ``holds``, ``partly holds``,
``does not hold``, or ``not tested`` when the problems or optimizers it needs were not run.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._files import write_atomic

HOLDS, PARTLY, FAILS, UNTESTED = "holds", "partly holds", "does not hold", "not tested"

COLORS = {
    "sgd": "#1f77b4", "momentum": "#ff7f0e", "adagrad": "#2ca02c", "rmsprop": "#9467bd", "adam": "#d62728",
    "amsgrad": "#8c564b", "adam-nobc": "#e377c2", "adam-b2=.9999": "#17becf", "adam-b2=.9999-nobc": "#bcbd22",
    "adam-reddi": "#7f7f7f", "amsgrad-reddi": "#393b79", "nesterov": "#ffbb78", "adamw": "#98df8a",
    "adamax": "#c5b0d5", "nadam": "#c49c94", "radam": "#f7b6d2",
}
_EXTRA = ["#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1"]


def _color(label: str, order: Sequence[str] = ()) -> str:
    if label in COLORS:
        return COLORS[label]
    i = list(order).index(label) if label in order else abs(hash(label))
    return _EXTRA[i % len(_EXTRA)]


def _g(x: Any, digits: int = 4) -> str:
    """A number for humans: 4 significant digits, 'n/a' for None, 'inf' for infinity."""
    if x is None:
        return "n/a"
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else "-inf" if x < 0 else "nan"
    return f"{x:.{digits}g}"


def _pm(mean: Any, sd: Any) -> str:
    if mean is None:
        return "failed"
    return f"{_g(mean)} ± {_g(sd, 2)}"


# --------------------------------------------------------------------------------------------------
# Table


TABLE_COLUMNS = ["optimizer", "lr*", "final loss (mean ± sd)", "metrics", "evals to target", "good-lr width", "failed"]


def _rows(res: Any) -> list[tuple[dict, list[list[str]]]]:
    out = []
    for p in res.problems:
        rows = []
        for label in p["methods"]:
            r = res.row(p["name"], label)
            lr = "—" if r["lr"] is None else _g(r["lr"], 3) + (" (edge)" if r["lr_at_edge"] else "")
            if r["lr"] is None:
                final = "failed at every lr"
            else:
                final = _pm(r["final_mean"], r["final_sd"])
                if r["final_failures"]:
                    final += f" ({r['final_failures']} of {r['seeds']} failed)"
            mets = ", ".join(f"{k} {_g(v['mean'], 3)}" for k, v in r["metrics"].items())
            if p["target"] is None:
                evals = "no target"
            elif r["lr"] is None:
                evals = "—"
            else:
                evals = (f"{_g(r['evals_median'], 4)} ({r['reached']}/{r['seeds']})" if r["evals_median"] is not None
                         else f"not reached ({r['reached']}/{r['seeds']})")
            width = ("—" if r["lr"] is None else "none" if r["width"] is None
                     else f"{'≥' if r['width_at_edge'] else ''}{r['width']:.1f} dec")
            failed = f"{r['tuning_failures']}/{r['tuning_runs']}"
            rows.append([label, lr, final, mets or "—", evals, width, failed])
        out.append((p, rows))
    return out


def _problem_line(p: dict) -> str:
    bits = [f"{p['steps']} steps", "stochastic" if p["stochastic"] else "deterministic"]
    if p.get("floor") is not None:
        bits.append(f"floor {_g(p['floor'], 6)}")
    if p.get("target") is not None:
        bits.append(f"target {_g(p['target'], 4)}")
    bits.append(f"lr grid {_g(p['lrs'][0], 2)}..{_g(p['lrs'][-1], 2)} ({len(p['lrs'])})")
    if p.get("schedule"):
        bits.append(f"schedule {p['schedule']}")
    desc = f": {p['description']}" if p.get("description") else ""
    return f"{p['name']}{desc} [{', '.join(bits)}]"


def results_table(res: Any, fmt: str = "text") -> str:
    """The table of :meth:`Results.table`."""
    blocks = _rows(res)
    s = res.settings
    head = (f"lr* chosen by the median final loss over {len(s['tune_seeds'])} seed(s); final loss over "
            f"{len(s['seeds'])} seed(s) at lr*; evals to target: the median over the seeds of the gradient "
            f"evaluations to reach the target, a run that never reaches it counting as infinite ('not reached "
            f"(k/n)' when the median is infinite: k of the n runs reached it); good-lr width: decades of contiguous learning rates around lr* whose median loss is "
            f"within {s['factor']:g}x of the best any optimizer reached (excess over the known minimum) or "
            f"reaches the target, 'none' if lr* itself is not; failed: diverged or NaN tuning runs.")
    if fmt == "markdown":
        lines = [head, ""]
        for p, rows in blocks:
            lines += [f"**{_problem_line(p)}**", "", "| " + " | ".join(TABLE_COLUMNS) + " |",
                      "|" + "---|" * len(TABLE_COLUMNS)]
            lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
            lines.append("")
        return "\n".join(lines)
    widths = [len(c) for c in TABLE_COLUMNS]
    for _, rows in blocks:
        for row in rows:
            widths = [max(w, len(c)) for w, c in zip(widths, row)]
    lines = [head, ""]
    for p, rows in blocks:
        lines.append(_problem_line(p))
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(TABLE_COLUMNS, widths)))
        for row in rows:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Claims


@dataclass
class Claim:
    """One claim of the seed notes, the experiment that tests it, what was measured and the verdict."""

    number: int
    claim: str
    notes_say: str
    experiment: str
    rule: str
    verdict: str = UNTESTED
    summary: str = ""
    numbers: dict = field(default_factory=dict)
    figures: list = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.number}. {self.claim}: {self.verdict.upper()}. {self.summary}"

    def to_dict(self) -> dict:
        return asdict(self)


def _excess(v: float | None, floor: float | None) -> float:
    if v is None:
        return math.inf
    return v - (floor or 0.0)


def _missing(res: Any, problem: str, methods: Sequence[str]) -> str | None:
    try:
        p = res.problem(problem)
    except KeyError:
        return f"problem {problem!r} was not run"
    if not p.get("builtin", True):
        return f"the problem named {problem!r} is not adamkit's built-in one, on which this claim is tested"
    ran = p["methods"]
    lack = [m for m in methods if m not in ran]
    if lack:
        return f"optimizer(s) {lack} were not run on {problem!r}"
    for m in methods:
        if res.row(problem, m)["lr"] is None:
            return f"{m} failed at every learning rate on {problem!r}"
    return None


def _untested(c: Claim, why: str) -> Claim:
    c.verdict = UNTESTED
    c.summary = f"Not tested: {why}. Run `adamkit compare` with the built-in problems and default optimizers."
    return c


def _stats(res: Any, problem: str, method: str) -> dict:
    r = res.row(problem, method)
    return {"lr": r["lr"], "mean": r["final_mean"], "sd": r["final_sd"], "min": r["final_min"], "max": r["final_max"],
            "evals_to_target": r["evals_median"], "reached": f"{r['reached']}/{r['seeds']}",
            "metrics": {k: v["mean"] for k, v in r["metrics"].items()}}


def _clearly_less(a: dict, b: dict) -> bool:
    """``a``'s mean final loss is below ``b``'s by more than their combined standard deviation."""
    if a["mean"] is None:
        return False
    if b["mean"] is None:
        return True
    return a["mean"] + math.hypot(a["sd"] or 0.0, b["sd"] or 0.0) < b["mean"]


def _grid_medians(res: Any, problem: str, method: str) -> dict[float, float]:
    return {row["lr"]: row["median"] for row in res.selection(problem, method)["grid"]}


def _claim1(res: Any) -> Claim:
    c = Claim(1, "Bias correction keeps early steps sound when beta2 is close to 1",
              "Bias correction is important for Adam's stability in early iterations",
              "digits_vae (a small VAE, Kingma & Ba 6.4 scaled down): Adam with beta2 = 0.999 and 0.9999, with and "
              "without bias_correction, over the whole learning-rate grid; the first 100 updates are recorded.",
              "Holds if, at beta2 = 0.9999, the uncorrected early updates are larger (in units of lr) and the largest "
              "sound learning rate (every seed ends finite and below its starting loss) is smaller without "
              "correction than with it; partly if only one of the two; does not hold otherwise.")
    need = ["adam", "adam-nobc", "adam-b2=.9999", "adam-b2=.9999-nobc"]
    why = _missing(res, "digits_vae", need)
    if why:
        return _untested(c, why)
    p = res.problem("digits_vae")
    init = [v for v in p["initial_loss"].values() if v is not None]
    start = float(np.median(init)) if init else math.inf
    nums: dict[str, Any] = {"initial_loss": start}

    def sound_max(label):
        """The largest learning rate at which every seed ends finite and below its starting loss."""
        good = []
        for lr in p["lrs"]:
            rows = [r for r in res.runs("digits_vae", label) if r["lr"] == lr]
            if rows and all(r["final_loss"] is not None
                            and r["final_loss"] < (p["initial_loss"].get(str(r["seed"])) or start) for r in rows):
                good.append(lr)
        return max(good) if good else None

    def early(label, lr):
        """max over the first updates of rms(update)/lr, median over seeds, at learning rate lr."""
        vals = []
        for r in res.runs("digits_vae", label):
            if r["lr"] == lr and r.get("first_update_rms"):
                u = np.asarray(r["first_update_rms"][:100]) / lr
                vals.append(float(np.max(u)))
        return float(np.median(vals)) if vals else None

    for b2, on, off in ((".999", "adam", "adam-nobc"), (".9999", "adam-b2=.9999", "adam-b2=.9999-nobc")):
        lr = res.row("digits_vae", on)["lr"]
        nums[f"beta2={b2}"] = {
            "corrected": {"best_lr": lr, "best_loss": res.row("digits_vae", on)["final_mean"],
                          "largest_sound_lr": sound_max(on), "max_early_update_over_lr": early(on, lr)},
            "uncorrected": {"best_lr": res.row("digits_vae", off)["lr"],
                            "best_loss": res.row("digits_vae", off)["final_mean"],
                            "largest_sound_lr": sound_max(off), "max_early_update_over_lr_at_same_lr": early(off, lr)},
            "median_loss_by_lr": {"corrected": _grid_medians(res, "digits_vae", on),
                                  "uncorrected": _grid_medians(res, "digits_vae", off)},
        }
    hi = nums["beta2=.9999"]
    e_on, e_off = hi["corrected"]["max_early_update_over_lr"], hi["uncorrected"]["max_early_update_over_lr_at_same_lr"]
    s_on, s_off = hi["corrected"]["largest_sound_lr"], hi["uncorrected"]["largest_sound_lr"]
    bigger = e_on is not None and e_off is not None and e_off > e_on
    narrower = s_on is not None and (s_off is None or s_off < s_on)
    c.verdict = HOLDS if bigger and narrower else PARTLY if bigger or narrower else FAILS
    lo = nums["beta2=.999"]
    c.summary = (
        f"At beta2=0.9999 and lr {_g(hi['corrected']['best_lr'], 2)}, the largest update in the first 100 steps is "
        f"{_g(e_off, 3)} x lr without correction against {_g(e_on, 3)} x lr with it; the largest sound learning rate "
        f"is {_g(s_off, 2)} without correction against {_g(s_on, 2)} with it (beta2=0.999: {_g(lo['uncorrected']['largest_sound_lr'], 2)} "
        f"against {_g(lo['corrected']['largest_sound_lr'], 2)}). Tuned, the best losses are close: "
        f"{_g(hi['uncorrected']['best_loss'])} (uncorrected, lr {_g(hi['uncorrected']['best_lr'], 2)}) against "
        f"{_g(hi['corrected']['best_loss'])} (corrected, lr {_g(hi['corrected']['best_lr'], 2)}); starting loss {_g(start)}.")
    c.numbers = nums
    c.figures = ["bias_correction.png"]
    return c


def _claim2(res: Any) -> Claim:
    c = Claim(2, "Adam adapts the step per coordinate and handles ill-conditioned problems",
              "Adam adapts the step size per coordinate ... helps handle ill-conditioned or sparse problems",
              "quadratic: f = 1/2 sum h_i x_i^2, h log-spaced over [1, 1e4] (condition 1e4), every optimizer at its "
              "tuned learning rate; Adam's per-coordinate effective step lr/(sqrt(v_hat)+eps) is recorded.",
              "Holds if Adam's final loss is below plain SGD's on every seed (max over Adam's seeds < min over SGD's) "
              "and Adam's effective step is larger on flatter coordinates (negative slope of log step against "
              "log curvature); partly if only one; does not hold otherwise.")
    why = _missing(res, "quadratic", ["adam", "sgd"])
    if why:
        return _untested(c, why)
    p = res.problem("quadratic")
    nums = {m: _stats(res, "quadratic", m) for m in p["methods"] if res.row("quadratic", m)["lr"] is not None}
    adam, sgd = nums["adam"], nums["sgd"]
    better = adam["max"] is not None and (sgd["min"] is None or adam["max"] < sgd["min"])
    h = np.asarray(p["info"].get("curvatures", []), dtype=float)
    slope = None
    spread = None
    coords = [r["eff_coords"][-1] for r in res.runs("quadratic", "adam", final=True) if r.get("eff_coords")]
    if coords and len(h) == len(coords[0]):
        e = np.median(np.asarray(coords, dtype=float), axis=0)
        ok = np.isfinite(e) & (e > 0)
        if ok.sum() >= 2:
            slope = float(np.polyfit(np.log10(h[ok]), np.log10(e[ok]), 1)[0])
            spread = float(np.log10(e[ok].max() / e[ok].min()))
    nums["adam_effective_step_slope_vs_curvature"] = slope
    nums["adam_effective_step_spread_decades"] = spread
    adaptive = slope is not None and slope < 0
    c.verdict = HOLDS if better and adaptive else PARTLY if better or adaptive else FAILS
    mom = nums.get("momentum")
    c.summary = (
        f"Final loss: Adam {_pm(adam['mean'], adam['sd'])} (lr {_g(adam['lr'], 2)}) against SGD "
        f"{_pm(sgd['mean'], sgd['sd'])} (lr {_g(sgd['lr'], 2)})"
        + (f" and SGD+momentum {_pm(mom['mean'], mom['sd'])}" if mom else "")
        + f"; evaluations to reach {_g(p['target'])}: Adam {_g(adam['evals_to_target'])} ({adam['reached']}), "
        f"SGD {_g(sgd['evals_to_target'])} ({sgd['reached']}). At the end Adam's effective steps span "
        f"{_g(spread, 2)} decades across coordinates, with slope {_g(slope, 2)} against log curvature "
        f"(-1 would be Newton's 1/h_i).")
    c.numbers = nums
    c.figures = ["effective_step.png", "loss_curves.png"]
    return c


def _claim3(res: Any) -> Claim:
    c = Claim(3, "Adam handles sparse gradients as well as AdaGrad, better than SGD",
              "parameters with ... smaller or sparse gradients get larger steps; handles ... sparse problems",
              "sparse_logreg: logistic regression on synthetic bag-of-words documents (Zipf word frequencies; the "
              "label depends only on rare words), mini-batches of 32, each optimizer at its tuned learning rate.",
              "'As well as' = Adam's mean final loss within 10% of AdaGrad's or below it; 'better than SGD' = Adam's "
              "and AdaGrad's mean final losses below SGD's by more than the combined seed standard deviation. "
              "Holds if both, partly if one, does not hold otherwise.")
    why = _missing(res, "sparse_logreg", ["adam", "adagrad", "sgd"])
    if why:
        return _untested(c, why)
    nums = {m: _stats(res, "sparse_logreg", m) for m in ("adam", "adagrad", "sgd")}
    a, g, s = nums["adam"], nums["adagrad"], nums["sgd"]
    as_well = a["mean"] is not None and g["mean"] is not None and a["mean"] <= 1.1 * g["mean"]
    beat = _clearly_less(a, s) and _clearly_less(g, s)
    nums["adam_over_adagrad"] = None if a["mean"] is None or not g["mean"] else a["mean"] / g["mean"]
    c.verdict = HOLDS if as_well and beat else PARTLY if as_well or beat else FAILS

    def acc(x):
        m = x["metrics"]
        return f"test accuracy {_g(m.get('test_accuracy'), 3)}, on documents with an informative word {_g(m.get('test_accuracy_rare'), 3)}"

    c.summary = (f"Final training loss: Adam {_pm(a['mean'], a['sd'])}, AdaGrad {_pm(g['mean'], g['sd'])}, SGD "
                 f"{_pm(s['mean'], s['sd'])} (Adam/AdaGrad = {_g(nums['adam_over_adagrad'], 3)}). Adam: {acc(a)}; "
                 f"AdaGrad: {acc(g)}; SGD: {acc(s)}.")
    c.numbers = nums
    c.figures = ["loss_curves.png"]
    return c


def _claim4(res: Any) -> Claim:
    c = Claim(4, "Momentum smooths noisy gradients",
              "Momentum: fast convergence by smoothing gradients; smooth out the noise with momentum",
              "noisy_quadratic: a quadratic (condition 100) whose gradient carries Gaussian noise of standard deviation "
              "1; SGD against SGD with momentum 0.9, each at its tuned learning rate. Also, over the grid, momentum at "
              "lr against SGD at lr/(1-0.9) = 10 lr, the same effective step.",
              "Holds if SGD+momentum's mean final loss is below SGD's by more than the combined seed standard "
              "deviation; does not hold otherwise (the equal-effective-step comparison is reported alongside).")
    why = _missing(res, "noisy_quadratic", ["sgd", "momentum"])
    if why:
        return _untested(c, why)
    nums = {m: _stats(res, "noisy_quadratic", m) for m in ("sgd", "momentum")}
    s, m = nums["sgd"], nums["momentum"]
    ms, ss = _grid_medians(res, "noisy_quadratic", "momentum"), _grid_medians(res, "noisy_quadratic", "sgd")
    pairs = {}
    for lr, v in ms.items():
        match = [k for k in ss if abs(math.log10(k / (10 * lr))) < 1e-6]
        if match and math.isfinite(v) and math.isfinite(ss[match[0]]) and ss[match[0]] > 0:
            pairs[lr] = v / ss[match[0]]
    nums["momentum_over_sgd_at_equal_effective_step"] = pairs
    ratio = float(np.median(list(pairs.values()))) if pairs else None
    nums["median_ratio_equal_effective_step"] = ratio
    c.verdict = HOLDS if _clearly_less(m, s) else FAILS
    if ratio is None:
        same = "no grid pair had both runs finite."
    elif ratio < 0.8:
        same = "lower with momentum."
    elif ratio > 1.25:
        same = "higher with momentum."
    else:
        same = "about the same: averaging about 1/(1-beta) gradients does not by itself lower the noise floor, which the effective step sets."
    c.summary = (f"Tuned: SGD+momentum {_pm(m['mean'], m['sd'])} (lr {_g(m['lr'], 2)}) against SGD "
                 f"{_pm(s['mean'], s['sd'])} (lr {_g(s['lr'], 2)}). At equal effective step lr/(1-beta), momentum's "
                 f"median final loss is {_g(ratio, 3)} times SGD's (median over {len(pairs)} grid pairs): " + same)
    c.numbers = nums
    c.figures = ["lr_sensitivity.png", "loss_curves.png"]
    return c


def _claim5(res: Any) -> Claim:
    c = Claim(5, "AdaGrad slows down because it never forgets; RMSProp and Adam keep going",
              "AdaGrad ... tends to slow down too much due to cumulative history (no forgetting)",
              "Every problem where AdaGrad, RMSProp and Adam all ran, at their tuned learning rates: (a) how much the "
              "median effective step lr/(sqrt(accumulator)+eps) shrinks from 10% of the run to its end; (b) the "
              "progress in the second half: log10 of the excess loss at mid-run over the excess loss at the end.",
              "Holds if on a majority of problems AdaGrad's effective step shrinks more than both RMSProp's and "
              "Adam's, and AdaGrad makes less second-half progress than both; partly if only one; does not hold "
              "otherwise.")
    names = [p["name"] for p in res.problems
             if all(m in p["methods"] and res.row(p["name"], m)["lr"] is not None for m in ("adagrad", "rmsprop", "adam"))]
    if not names:
        return _untested(c, "AdaGrad, RMSProp and Adam were not all run on any problem")
    per: dict[str, Any] = {}
    shrink_votes = progress_votes = n_prog = 0
    for name in names:
        p = res.problem(name)
        d = {}
        for m in ("adagrad", "rmsprop", "adam"):
            shrinks, progs = [], []
            for r in res.runs(name, m, final=True):
                if r["status"] != "ok":
                    continue
                st, ef = r.get("eff_steps") or [], r.get("eff_median") or []
                if st:
                    i0 = next(i for i, s_ in enumerate(st) if s_ >= 0.1 * p["steps"])
                    if ef[i0] > 0:
                        shrinks.append(ef[-1] / ef[i0])
                cs, cv = r.get("curve_steps") or [], r.get("curve") or []
                if cs:
                    mid = min(range(len(cs)), key=lambda i: abs(cs[i] - p["steps"] / 2))
                    a, b = _excess(cv[mid], p["floor"]), _excess(cv[-1], p["floor"])
                    if a > 0 and b > 0:
                        progs.append(math.log10(a / b))
            d[m] = {"step_end_over_step_10pct": float(np.median(shrinks)) if shrinks else None,
                    "second_half_decades": float(np.median(progs)) if progs else None}
        per[name] = d
        sh = [d[m]["step_end_over_step_10pct"] for m in ("adagrad", "rmsprop", "adam")]
        if None not in sh and sh[0] < sh[1] and sh[0] < sh[2]:
            shrink_votes += 1
        pr = [d[m]["second_half_decades"] for m in ("adagrad", "rmsprop", "adam")]
        if None not in pr:
            n_prog += 1
            if pr[0] < pr[1] and pr[0] < pr[2]:
                progress_votes += 1
    a_ok = shrink_votes > len(names) / 2
    b_ok = n_prog > 0 and progress_votes > n_prog / 2
    c.verdict = HOLDS if a_ok and b_ok else PARTLY if a_ok or b_ok else FAILS
    c.numbers = {"per_problem": per, "step_shrinks_most": f"{shrink_votes}/{len(names)}",
                 "least_second_half_progress": f"{progress_votes}/{n_prog}"}
    med = {m: float(np.median([per[n][m]["step_end_over_step_10pct"] for n in names
                               if per[n][m]["step_end_over_step_10pct"] is not None] or [math.nan]))
           for m in ("adagrad", "rmsprop", "adam")}
    c.summary = (f"(a) From 10% of the run to its end, AdaGrad's median effective step changes by a smaller factor "
                 f"than both RMSProp's and Adam's on {shrink_votes} of {len(names)} problems (median factors: AdaGrad "
                 f"{_g(med['adagrad'], 3)}, RMSProp {_g(med['rmsprop'], 3)}, Adam {_g(med['adam'], 3)}; above 1 the "
                 f"step grows as the gradients shrink). (b) AdaGrad makes less second-half progress (decades of excess "
                 f"loss) than both on {progress_votes} of {n_prog} problems where it could be measured. AdaGrad's tuned "
                 f"learning rate is larger, which offsets its shrinking steps.")
    c.figures = ["adagrad_steps.png"]
    return c


def _claim6(res: Any) -> Claim:
    factor = res.settings["factor"]
    c = Claim(6, "Adam needs less tuning (a wider good learning-rate range)",
              "Adam is robust, achieves faster convergence with less tuning",
              f"Every problem with a known minimum, on the same grid for every optimizer: the width in decades of the "
              f"contiguous learning-rate range around the optimizer's chosen rate whose median final loss is good, i.e. "
              f"its excess over the minimum is within {factor:g}x of the best excess any optimizer reached on the "
              f"problem, or it reaches the problem's target ('none' when the chosen rate itself is not good).",
              "Holds if, against each other optimizer, Adam's range is wider on more problems than it is narrower "
              "(equal widths, 'none' against 'none' included, count for neither); partly if that is so against some "
              "of them; does not hold otherwise.")
    names = [p["name"] for p in res.problems if p["floor"] is not None and "adam" in p["methods"]
             and res.row(p["name"], "adam")["lr"] is not None]
    skipped = [p["name"] for p in res.problems if p["floor"] is None]
    others = sorted({m for p in res.problems for m in p["methods"] if m in ("sgd", "momentum", "adagrad", "rmsprop")},
                    key=["sgd", "momentum", "adagrad", "rmsprop"].index)
    if not names or not others:
        return _untested(c, "Adam and at least one of SGD, momentum, AdaGrad, RMSProp must run on a problem with "
                            "a known minimum")
    widths = {n: {m: res.row(n, m)["width"] for m in ["adam"] + others if m in res.problem(n)["methods"]} for n in names}

    def w(x):  # no good range at all ranks below a single good rate (width 0)
        return -1.0 if x is None else x

    tally = {}  # against each other optimizer: (problems where Adam's range is wider, narrower, as wide)
    for m in others:
        ran = [n for n in names if m in widths[n]]
        diff = [w(widths[n]["adam"]) - w(widths[n][m]) for n in ran]
        tally[m] = (sum(d > 1e-9 for d in diff), sum(d < -1e-9 for d in diff), sum(abs(d) <= 1e-9 for d in diff))
    mean = {m: float(np.mean([widths[n][m] or 0.0 for n in names if m in widths[n]])) for m in ["adam"] + others}
    beaten = [m for m in others if tally[m][0] > tally[m][1]]
    c.verdict = HOLDS if len(beaten) == len(others) else PARTLY if beaten else FAILS
    c.numbers = {"widths_decades": widths, "mean_width": mean, "excluded_no_known_minimum": skipped,
                 "adam_wider_narrower_equal": {m: list(x) for m, x in tally.items()}}
    c.summary = ("Mean width over " + str(len(names)) + " problems ('none' counted as 0): "
                 + ", ".join(f"{m} {mean[m]:.2f}" for m in ["adam"] + others) + " decades. Adam's range is wider / "
                 "narrower / as wide than " + ", ".join(f"{m}'s on {x[0]}/{x[1]}/{x[2]}" for m, x in tally.items())
                 + " problems." + (f" Not counted (no known minimum): {', '.join(skipped)}." if skipped else ""))
    c.figures = ["tuneability.png", "lr_sensitivity.png"]
    return c


def _claim7(res: Any) -> Claim:
    c = Claim(7, "Adam converges about as fast as SGD with momentum on logistic regression, both faster than AdaGrad",
              "Adam is robust, achieves faster convergence with less tuning, and often outperforms SGD (with momentum) in practice",
              "digits_logreg: multinomial logistic regression with L2 on the digits, mini-batches of 64; gradient "
              "evaluations until the full training objective is within 0.05 of its minimum (found by L-BFGS), median "
              "over seeds, each optimizer at its tuned learning rate (which minimises the final loss, not the time).",
              "'About as fast' = Adam's count within a factor 2 of momentum's; holds if so and both need fewer evaluations "
              "than AdaGrad (not reaching the target counts as slower); partly if one of the two; does not hold otherwise.")
    why = _missing(res, "digits_logreg", ["adam", "momentum", "adagrad"])
    if why:
        return _untested(c, why)
    nums = {m: _stats(res, "digits_logreg", m) for m in ("adam", "momentum", "adagrad", "sgd")
            if m in res.problem("digits_logreg")["methods"] and res.row("digits_logreg", m)["lr"] is not None}
    e = {m: (nums[m]["evals_to_target"] if nums[m]["evals_to_target"] is not None else math.inf) for m in nums}
    same = math.isfinite(e["adam"]) and math.isfinite(e["momentum"]) and 0.5 <= e["adam"] / e["momentum"] <= 2.0
    faster = e["adam"] < e["adagrad"] and e["momentum"] < e["adagrad"]
    c.verdict = HOLDS if same and faster else PARTLY if same or faster else FAILS
    side = ""
    if res.has("sparse_logreg", "adam", "momentum", "adagrad"):
        sp = {m: res.row("sparse_logreg", m)["evals_median"] for m in ("adam", "momentum", "adagrad")}
        nums["sparse_logreg_evals_to_target"] = sp
        side = (" On the sparse bag-of-words problem (Kingma & Ba's IMDB case) the counts are Adam "
                f"{_g(sp['adam'])}, momentum {_g(sp['momentum'])}, AdaGrad {_g(sp['adagrad'])}.")
    c.summary = ("Evaluations to within 0.05 of the minimum: " + ", ".join(
        f"{m} {_g(nums[m]['evals_to_target'])} ({nums[m]['reached']} seeds reached; final {_pm(nums[m]['mean'], nums[m]['sd'])})"
        for m in e) + "." + side)
    c.numbers = nums
    c.figures = ["loss_curves.png"]
    return c


def _claim8(res: Any) -> Claim:
    c = Claim(8, "AMSGrad converges on the online problem where Adam does not",
              "Result: Adam is robust (tested against Reddi, Kale & Kumar 2018's counterexample, which AMSGrad fixes)",
              "online: f_t(x) = 3x if t mod 3 == 1 else -x on [-1, 1] (optimum x = -1), step lr/sqrt(t), over the whole "
              "grid: Adam and AMSGrad with Reddi et al.'s beta1 = 0, beta2 = 1/(1+C^2) = 0.1, and with the default betas.",
              "Converged = final x <= -0.9 on every seed. Holds if, with Reddi's betas, AMSGrad converges at its tuned "
              "learning rate and Adam converges at no learning rate of the grid; does not hold otherwise.")
    why = _missing(res, "online", ["adam-reddi", "amsgrad-reddi"])
    if why:
        return _untested(c, why)
    p = res.problem("online")

    def xs(label, final=True, lr=None):
        runs = res.runs("online", label, final=final)
        if lr is not None:
            runs = [r for r in runs if r["lr"] == lr]
        return [r["metrics"].get("x") if r["status"] == "ok" else None for r in runs]

    def conv(vals):
        return bool(vals) and all(v is not None and v <= -0.9 for v in vals)

    nums: dict[str, Any] = {}
    for label in ("adam", "amsgrad", "adam-reddi", "amsgrad-reddi"):
        if label not in p["methods"] or res.row("online", label)["lr"] is None:
            continue
        per_lr = {lr: xs(label, final=False, lr=lr) for lr in p["lrs"]}
        nums[label] = {"lr": res.row("online", label)["lr"], "final_x": xs(label),
                       "converged_at_tuned_lr": conv(xs(label)),
                       "learning_rates_where_it_converges": [lr for lr, v in per_lr.items() if conv(v)],
                       "median_final_x_by_lr": {lr: (float(np.median([x for x in v if x is not None]))
                                                     if any(x is not None for x in v) else None)
                                                for lr, v in per_lr.items()}}
    ar, mr = nums["adam-reddi"], nums["amsgrad-reddi"]
    holds = mr["converged_at_tuned_lr"] and not ar["learning_rates_where_it_converges"]
    c.verdict = HOLDS if holds else FAILS

    def fx(v):
        return "[" + ", ".join(_g(x, 3) for x in v) + "]"

    default = ""
    if "adam" in nums and "amsgrad" in nums:
        default = (f" With the default betas (0.9, 0.999) both converge: Adam at {len(nums['adam']['learning_rates_where_it_converges'])} "
                   f"and AMSGrad at {len(nums['amsgrad']['learning_rates_where_it_converges'])} of {len(p['lrs'])} learning "
                   f"rates (tuned final x: Adam {fx(nums['adam']['final_x'])}, AMSGrad {fx(nums['amsgrad']['final_x'])}); "
                   "the failure needs beta2 matched to C, as in Reddi et al.'s construction.")
        if nums["adam"]["converged_at_tuned_lr"] is False:
            default = (f" With the default betas, Adam's tuned final x is {fx(nums['adam']['final_x'])} and AMSGrad's "
                       f"{fx(nums['amsgrad']['final_x'])}.")
    c.summary = (f"Reddi's betas: AMSGrad ends at x = {fx(mr['final_x'])} (lr {_g(mr['lr'], 2)}), converging at "
                 f"{len(mr['learning_rates_where_it_converges'])} of {len(p['lrs'])} learning rates; Adam ends at "
                 f"x = {fx(ar['final_x'])} at its tuned lr {_g(ar['lr'], 2)} and converges at "
                 f"{len(ar['learning_rates_where_it_converges'])} learning rates (at large ones it goes to x = "
                 f"{_g(max((v for v in ar['median_final_x_by_lr'].values() if v is not None), default=None), 3)})." + default)
    c.numbers = nums
    c.figures = ["online.png"]
    return c


def evaluate_claims(res: Any) -> list[Claim]:
    """The seed notes' eight claims, measured on ``res`` (see each claim's ``rule``)."""
    return [f(res) for f in (_claim1, _claim2, _claim3, _claim4, _claim5, _claim6, _claim7, _claim8)]


# --------------------------------------------------------------------------------------------------
# Figures


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=90)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    from matplotlib.ticker import LogLocator

    for ax in fig.axes:  # a log axis holding fewer than two powers of ten gets 1-2-5 ticks
        for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            if axis.get_scale() == "log" and min(lim) > 0:
                lo, hi = math.log10(min(lim)), math.log10(max(lim))
                if math.floor(hi) - math.ceil(lo) + 1 < 2:
                    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    write_atomic(path, lambda f: fig.savefig(f, format="png"))
    return path


def _tick(v: float, _pos: Any = None) -> str:
    """Plain tick labels: 0.01, 0.5, 20, 1000, and 1e-5 / 1e6 beyond."""
    if v <= 0:
        return "0"
    if 1e-3 <= v < 1e4:
        return f"{v:.4g}"
    e = math.log10(v)
    if abs(e - round(e)) < 1e-9:
        return f"1e{int(round(e))}"
    return f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e").replace("e+", "e")


def _log(ax, x: bool = True, y: bool = True) -> None:
    """Log axes with few plain-text major ticks and no minor ticks (fast to draw)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    for on, axis, set_scale in ((x, ax.xaxis, ax.set_xscale), (y, ax.yaxis, ax.set_yscale)):
        if on:
            set_scale("log")
            axis.set_major_locator(LogLocator(base=10, numticks=6))
            axis.set_major_formatter(FuncFormatter(_tick))
            axis.set_minor_locator(NullLocator())
    ax.tick_params(labelsize=7)


def _layout(fig, top: float = 0.9, bottom: float = 0.08, hspace: float = 0.45, wspace: float = 0.3,
            left: float = 0.05, right: float = 0.98) -> None:
    """Fixed margins: tight_layout measures every tick label and costs seconds on a grid of log axes."""
    fig.subplots_adjust(left=left, right=right, top=top, bottom=bottom, hspace=hspace, wspace=wspace)


def _grid_axes(fig, n: int, cols: int = 4):
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    return [fig.add_subplot(rows, cols, i + 1) for i in range(n)], rows, cols


def _band(runs: list[dict], floor: float | None, key: str = "curve", steps_key: str = "curve_steps"):
    """Median and min/max over seeds of a recorded curve, on the steps every run reached."""
    ok = [r for r in runs if r.get(steps_key)]
    if not ok:
        return None
    n = min(len(r[steps_key]) for r in ok)
    steps = np.asarray(ok[0][steps_key][:n], dtype=float)
    vals = np.asarray([r[key][:n] for r in ok], dtype=float)
    if floor is not None:
        vals = vals - floor
    return steps, np.median(vals, axis=0), vals.min(axis=0), vals.max(axis=0)


def _positive(y: np.ndarray, tiny: float = 1e-30) -> np.ndarray:
    return np.maximum(y, tiny)


def _tiny(p: dict) -> float:
    """Below this an excess loss is rounding noise: 1e-12 of the problem's loss scale."""
    init = [abs(v) for v in (p.get("initial_loss") or {}).values() if v is not None]
    return 1e-12 * max([1.0, abs(p.get("floor") or 0.0)] + init)


def plot_curves(res: Any, path: Path) -> Path:
    n = len(res.problems)
    cols = min(4, n)
    fig = _figure(4.2 * cols, 3.2 * math.ceil(n / cols))
    axes, _, _ = _grid_axes(fig, n, cols)
    labels = []
    for ax, p in zip(axes, res.problems):
        floor = p["floor"]
        for m in p["methods"]:
            b = _band(res.runs(p["name"], m, final=True), floor)
            if b is None:
                continue
            s, med, lo, hi = b
            x = np.maximum(s, 1)
            tiny = _tiny(p) if floor is not None else 1e-30
            ax.plot(x, _positive(med, tiny), color=_color(m), lw=1.4, label=m)
            ax.fill_between(x, _positive(lo, tiny), _positive(hi, tiny), color=_color(m), alpha=0.18, lw=0)
            if m not in labels:
                labels.append(m)
        _log(ax)
        ax.set_title(p["name"], fontsize=10)
        ax.set_xlabel("gradient evaluations", fontsize=8)
        ax.set_ylabel("loss - minimum" if floor is not None else "loss", fontsize=8)
        if p["target"] is not None:
            t = p["target"] - (floor or 0.0)
            if t > 0:
                ax.axhline(t, color="k", ls=":", lw=0.8)
        ax.tick_params(labelsize=7)
    handles = [_line(fig, m) for m in labels]
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 9), fontsize=8, frameon=False)
    fig.suptitle("Loss at the chosen learning rate: median over seeds, band from min to max; dotted: target",
                 fontsize=10, y=0.005, va="bottom")
    _layout(fig, top=0.9, bottom=0.09)
    return _save(fig, path)


def _line(fig, label: str):
    from matplotlib.lines import Line2D

    return Line2D([], [], color=_color(label), lw=2)


def plot_lr_sensitivity(res: Any, path: Path) -> Path:
    n = len(res.problems)
    cols = min(4, n)
    fig = _figure(4.2 * cols, 3.2 * math.ceil(n / cols))
    axes, _, _ = _grid_axes(fig, n, cols)
    labels = []
    for ax, p in zip(axes, res.problems):
        floor = p["floor"] or 0.0
        tiny = _tiny(p) if p["floor"] is not None else 1e-30
        top = 0.0
        finite_all = []
        for m in p["methods"]:
            sel = res.selection(p["name"], m)
            g = sel["grid"]
            lr = np.array([row["lr"] for row in g])
            med = np.array([row["median"] - floor for row in g])
            lo = np.array([row["min"] - floor for row in g])
            hi = np.array([row["max"] - floor for row in g])
            fin = np.isfinite(med)
            finite_all += list(med[fin])
            if fin.any():
                y = _positive(med[fin], tiny)
                ax.errorbar(lr[fin], y, yerr=[y - _positive(np.minimum(lo[fin], med[fin]), tiny),
                                              np.where(np.isfinite(hi[fin]), _positive(hi[fin], tiny) - y, 0)],
                            color=_color(m), lw=1.2, marker="o", ms=3, capsize=2, label=m)
                top = max(top, float(np.max(y)))
            if sel["chosen"] is not None:
                ax.plot([sel["chosen"]], [_positive(np.array([dict(zip(lr, med))[sel["chosen"]]]), tiny)[0]], marker="*",
                        ms=11, color=_color(m), mec="k", mew=0.5, ls="none")
            if m not in labels:
                labels.append(m)
        _log(ax)
        if finite_all:
            ymax = max(_positive(np.array(finite_all), tiny).max(), tiny)
            for m in p["methods"]:
                g = res.selection(p["name"], m)["grid"]
                bad = [row["lr"] for row in g if not math.isfinite(row["median"])]
                if bad:
                    ax.plot(bad, [ymax * 3] * len(bad), "x", color=_color(m), ms=6)
        ax.set_title(p["name"], fontsize=10)
        ax.set_xlabel("learning rate", fontsize=8)
        ax.set_ylabel("final loss - minimum" if p["floor"] is not None else "final loss", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.legend([_line(fig, m) for m in labels], labels, loc="upper center", ncol=min(len(labels), 9), fontsize=8,
               frameon=False)
    fig.suptitle("Final loss against learning rate: median over the tuning seeds, bars min to max; star: chosen; "
                 "x at the top: diverged on most seeds", fontsize=10, y=0.005, va="bottom")
    _layout(fig, top=0.9, bottom=0.09)
    return _save(fig, path)


def plot_tuneability(res: Any, path: Path) -> Path:
    probs = [p for p in res.problems]
    methods = []
    for p in probs:
        for m in p["methods"]:
            if m not in methods:
                methods.append(m)
    fig = _figure(max(8.0, 0.9 * len(probs) + 2), 3.6)
    ax = fig.add_subplot(1, 1, 1)
    w = 0.8 / max(1, len(methods))
    for j, m in enumerate(methods):
        xs, ys, edge = [], [], []
        for i, p in enumerate(probs):
            if m in p["methods"]:
                r = res.row(p["name"], m)
                if r["width"] is not None:
                    xs.append(i + (j - (len(methods) - 1) / 2) * w)
                    ys.append(r["width"] + 0.03)
                    edge.append(r["width_at_edge"])
        ax.bar(xs, ys, width=w, color=_color(m), label=m,
               hatch=None, edgecolor=["k" if e else "none" for e in edge], linewidth=0.8)
    ax.set_xticks(range(len(probs)))
    ax.set_xticklabels([p["name"] for p in probs], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("good-lr width (decades)", fontsize=9)
    ax.set_title(f"Tuneability: width of the learning-rate range within {res.settings['factor']:g}x of the best "
                 f"(black edge: range reaches the grid's end)", fontsize=9)
    ax.legend(fontsize=7, ncol=min(len(methods), 6), frameon=False)
    _layout(fig, top=0.9, bottom=0.3, left=0.06)
    return _save(fig, path)


def plot_effective_step(res: Any, path: Path) -> Path | None:
    if not res.has("quadratic"):
        return None
    p = res.problem("quadratic")
    h = np.asarray(p["info"].get("curvatures", []), dtype=float)
    methods = [m for m in ("adam", "rmsprop", "adagrad") if m in p["methods"]]
    have = {m: [r for r in res.runs("quadratic", m, final=True) if r.get("eff_coords")] for m in methods}
    methods = [m for m in methods if have[m]]
    if not methods or not len(h):
        return None
    from matplotlib import cm
    from matplotlib.colors import LogNorm

    k_n = len(methods)
    fig = _figure(4.0 * k_n + 5.5, 3.8)
    gs = fig.add_gridspec(1, k_n + 2, width_ratios=[1.0] * k_n + [0.05, 1.15])
    norm = LogNorm(h.min(), h.max())
    cmap = cm.viridis
    for k, m in enumerate(methods):
        ax = fig.add_subplot(gs[0, k])
        r = have[m][0]
        st = np.asarray(r["eff_steps"], dtype=float)
        e = np.asarray(r["eff_coords"], dtype=float)
        for i in range(e.shape[1]):
            ax.plot(st, e[:, i], color=cmap(norm(h[i])), lw=1)
        ax.axhline(r["lr"], color="k", ls="--", lw=0.8)
        _log(ax)
        ax.set_title(f"{m}, lr {_g(r['lr'], 2)} (seed {r['seed']})", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        if k == 0:
            ax.set_ylabel("effective step per coordinate", fontsize=8)
    sm = cm.ScalarMappable(norm=norm, cmap=cmap)
    cb = fig.colorbar(sm, cax=fig.add_subplot(gs[0, k_n]))
    cb.set_label("curvature h_i", fontsize=8)
    from matplotlib.ticker import FuncFormatter, NullLocator

    cb.ax.yaxis.set_major_formatter(FuncFormatter(_tick))
    cb.ax.yaxis.set_minor_locator(NullLocator())
    cb.ax.yaxis.set_ticks_position("left")
    cb.ax.yaxis.set_label_position("left")
    cb.ax.tick_params(labelsize=7)
    ax = fig.add_subplot(gs[0, k_n + 1])
    for m in methods:
        e = np.median(np.asarray([r["eff_coords"][-1] for r in have[m]], dtype=float), axis=0)
        ax.plot(h, e, "o-", color=_color(m), ms=3, lw=1, label=f"{m} (end)")
    ax.plot(h, 1.0 / h, "k:", lw=1, label="1/h (Newton)")
    if "sgd" in p["methods"] and res.row("quadratic", "sgd")["lr"] is not None:
        ax.axhline(res.row("quadratic", "sgd")["lr"], color=_color("sgd"), ls="--", lw=1, label="sgd lr")
    _log(ax)
    ax.set_xlabel("curvature h_i", fontsize=8)
    ax.set_ylabel("effective step (median over seeds)", fontsize=8)
    ax.set_title("effective step at the end against curvature", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    ax.tick_params(labelsize=7)
    fig.suptitle("Ill-conditioned quadratic: per-coordinate effective step lr/(sqrt(v_hat)+eps), colour = curvature "
                 "(dashed: lr)", fontsize=10)
    _layout(fig, top=0.84, bottom=0.14, wspace=0.35, left=0.04)
    return _save(fig, path)


def plot_bias_correction(res: Any, path: Path) -> Path | None:
    if not res.has("digits_vae"):
        return None
    fig = _figure(17, 3.8)
    ax = fig.add_subplot(1, 4, 1)
    t = np.arange(1, 20001)
    for b2, ls in ((0.999, "-"), (0.9999, "--")):
        ax.plot(t, 1 / np.sqrt(1 - b2 ** t), color="#17becf", ls=ls, label=f"1/sqrt(1-{b2}^t)")
        ax.plot(t, (1 - 0.9 ** t) / np.sqrt(1 - b2 ** t), color="#d62728", ls=ls,
                label=f"uncorrected/corrected step, b2={b2}")
    ax.plot(t, 1 / (1 - 0.9 ** t), color="k", lw=1, label="1/(1-0.9^t)")
    _log(ax)
    ax.set_xlabel("step t", fontsize=8)
    ax.set_title("bias-correction factors", fontsize=9)
    ax.legend(fontsize=6, frameon=False)
    ax.tick_params(labelsize=7)
    if not res.has("digits_vae", "adam-b2=.9999", "adam-b2=.9999-nobc"):
        _layout(fig, top=0.82, bottom=0.14, wspace=0.25, left=0.04)
        return _save(fig, path)
    p = res.problem("digits_vae")
    pairs = [("adam", "adam-nobc", "b2=.999"), ("adam-b2=.9999", "adam-b2=.9999-nobc", "b2=.9999")]
    pairs = [x for x in pairs if x[0] in p["methods"] and x[1] in p["methods"]]
    lr = res.row("digits_vae", "adam-b2=.9999")["lr"]
    ax2 = fig.add_subplot(1, 4, 2)
    ax3 = fig.add_subplot(1, 4, 3)
    for on, off, tag in pairs:
        for lab, ls in ((on, "-"), (off, "--")):
            runs = [r for r in res.runs("digits_vae", lab) if r["lr"] == lr and r.get("first_update_rms")]
            if not runs:
                continue
            n = min(len(r["first_update_rms"]) for r in runs)
            u = np.median([np.asarray(r["first_update_rms"][:n]) / lr for r in runs], axis=0)
            ax2.plot(np.arange(1, n + 1), u, color=_color(lab), ls=ls, label=lab)
            n = min(len(r["first_loss"]) for r in runs)
            ax3.plot(np.arange(1, n + 1), np.median([r["first_loss"][:n] for r in runs], axis=0), color=_color(lab),
                     ls=ls, label=lab)
    _log(ax2, x=False)
    ax2.set_title(f"first updates: rms(update)/lr at lr {_g(lr, 2)}", fontsize=9)
    ax2.set_xlabel("step", fontsize=8)
    ax2.legend(fontsize=7, frameon=False)
    _log(ax3, x=False)
    ax3.set_title(f"mini-batch loss, first steps, lr {_g(lr, 2)}", fontsize=9)
    ax3.set_xlabel("step", fontsize=8)
    ax4 = fig.add_subplot(1, 4, 4)
    for on, off, tag in pairs:
        for lab, ls in ((on, "-"), (off, "--")):
            g = res.selection("digits_vae", lab)["grid"]
            x = np.array([row["lr"] for row in g])
            y = np.array([row["median"] for row in g])
            fin = np.isfinite(y)
            ax4.plot(x[fin], y[fin], marker="o", ms=3, color=_color(lab), ls=ls, label=lab)
            if (~fin).any():
                ax4.plot(x[~fin], [np.nanmax(np.where(fin, y, np.nan)) * 1.5] * int((~fin).sum()), "x",
                         color=_color(lab))
    init = [v for v in p["initial_loss"].values() if v is not None]
    if init:
        ax4.axhline(float(np.median(init)), color="k", ls=":", lw=0.8, label="starting loss")
    _log(ax4)
    ax4.set_xlabel("learning rate", fontsize=8)
    ax4.set_title(f"VAE loss after {p['steps']} steps (x: diverged)", fontsize=9)
    ax4.legend(fontsize=6, frameon=False)
    for a in (ax2, ax3, ax4):
        a.tick_params(labelsize=7)
    fig.suptitle("Bias correction (Kingma & Ba 6.4, scaled down): dashed = without correction", fontsize=10)
    _layout(fig, top=0.82, bottom=0.14, wspace=0.25, left=0.04)
    return _save(fig, path)


def plot_online(res: Any, path: Path) -> Path | None:
    if not res.has("online"):
        return None
    p = res.problem("online")
    slope = (p["info"].get("C", 3.0) - 2.0) / 3.0
    labels = [m for m in ("adam", "amsgrad", "adam-reddi", "amsgrad-reddi", "sgd") if m in p["methods"]]
    fig = _figure(12, 3.8)
    ax = fig.add_subplot(1, 2, 1)
    for m in labels:
        b = _band(res.runs("online", m, final=True), None)
        if b is None:
            continue
        s, med, lo, hi = b
        ax.plot(np.maximum(s, 1), med / slope - 1, color=_color(m), label=f"{m} (lr {_g(res.row('online', m)['lr'], 2)})")
        ax.fill_between(np.maximum(s, 1), lo / slope - 1, hi / slope - 1, color=_color(m), alpha=0.15, lw=0)
    ax.axhline(-1, color="k", ls=":", lw=0.8)
    _log(ax, y=False)
    ax.set_xlabel("step t", fontsize=8)
    ax.set_ylabel("x_t", fontsize=8)
    ax.set_title("iterate at the tuned learning rate (optimum x = -1)", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    ax = fig.add_subplot(1, 2, 2)
    for m in labels:
        xs, ys = [], []
        for lr in p["lrs"]:
            v = [r["metrics"].get("x") for r in res.runs("online", m) if r["lr"] == lr and r["status"] == "ok"]
            if v:
                xs.append(lr)
                ys.append(float(np.median(v)))
        ax.plot(xs, ys, marker="o", ms=3, color=_color(m), label=m)
    ax.axhline(-1, color="k", ls=":", lw=0.8)
    _log(ax, y=False)
    ax.set_xlabel("learning rate (lr/sqrt(t))", fontsize=8)
    ax.set_ylabel(f"final x after {p['steps']} steps", fontsize=8)
    ax.set_title("final iterate against learning rate", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    fig.suptitle(f"Reddi et al.'s online problem, C = {p['info'].get('C', 3.0):g}; '-reddi': beta1 = 0, "
                 f"beta2 = {p['info'].get('reddi_betas', [0, 0.1])[1]:.3g}", fontsize=10)
    _layout(fig, top=0.82, bottom=0.14, wspace=0.2, left=0.06)
    return _save(fig, path)


def plot_adagrad_steps(res: Any, path: Path) -> Path | None:
    names = [p["name"] for p in res.problems if all(m in p["methods"] for m in ("adagrad", "rmsprop", "adam"))]
    if not names:
        return None
    n = len(names)
    cols = min(4, n)
    fig = _figure(4.2 * cols, 3.0 * math.ceil(n / cols))
    axes, _, _ = _grid_axes(fig, n, cols)
    for ax, name in zip(axes, names):
        for m in ("adagrad", "rmsprop", "adam"):
            b = _band(res.runs(name, m, final=True), None, key="eff_median", steps_key="eff_steps")
            if b is None:
                continue
            s, med, lo, hi = b
            ax.plot(s, med, color=_color(m), label=m)
            ax.fill_between(s, lo, hi, color=_color(m), alpha=0.15, lw=0)
        _log(ax)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.legend([_line(fig, m) for m in ("adagrad", "rmsprop", "adam")], ["adagrad", "rmsprop", "adam"],
               loc="upper center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Median effective step lr/(sqrt(accumulator)+eps) over coordinates, at the tuned learning rate",
                 fontsize=10, y=0.005, va="bottom")
    _layout(fig, top=0.9, bottom=0.09)
    return _save(fig, path)


FIGURES = (("loss_curves.png", plot_curves), ("lr_sensitivity.png", plot_lr_sensitivity),
           ("tuneability.png", plot_tuneability), ("effective_step.png", plot_effective_step),
           ("bias_correction.png", plot_bias_correction), ("online.png", plot_online),
           ("adagrad_steps.png", plot_adagrad_steps))
_PLOTTING: dict[str, Any] = {}


def _plot_one(i: int) -> Path | None:
    name, fn = FIGURES[i]
    return fn(_PLOTTING["res"], _PLOTTING["dir"] / name)


def plot_all(res: Any, directory: Path, jobs: int | None = None) -> list[Path]:
    """Every figure that the results allow, as PNG files in ``directory``; drawn by ``jobs`` processes
    (default: the usable cores). A figure of ours left over from an earlier run that these results do not
    allow is removed, so the directory never mixes runs."""
    from ._compare import default_jobs, fork_pool

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _PLOTTING.update(res=res, dir=directory)
    jobs = default_jobs() if jobs is None else jobs
    order = list(range(len(FIGURES)))
    paths: list[Path | None]
    pool = fork_pool(min(jobs, len(order))) if jobs > 1 else None
    try:
        if pool is not None:
            paths = pool.map(_plot_one, order, chunksize=1)
            pool.close()
        else:
            paths = [_plot_one(i) for i in order]
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        _PLOTTING.clear()
    for (name, _), p in zip(FIGURES, paths):
        if p is None and (directory / name).exists():
            (directory / name).unlink()
    return [p for p in paths if p is not None]


# --------------------------------------------------------------------------------------------------
# report.md and report.html


PROTOCOL = (
    "Protocol (DeepOBS): every optimizer gets the same log-spaced learning-rate grid on a problem; each grid point "
    "is run from the first {nt} seed(s); the learning rate with the smallest median final loss is chosen; the chosen "
    "setting is rerun on all {ns} seeds with full recording and reported as mean and standard deviation. A run "
    "whose loss turns NaN or infinite, or grows past {df:g} times its start, is a recorded failure. Speed is counted "
    "in gradient evaluations, not wall time. The same seed gives every optimizer the same starting point and the "
    "same mini-batches.")


def _blocks(res: Any, claims: list[Claim], figures: list[Path]) -> list[tuple[str, Any]]:
    s = res.settings
    counts = {v: sum(c.verdict == v for c in claims) for v in (HOLDS, PARTLY, FAILS, UNTESTED)}
    b: list[tuple[str, Any]] = [
        ("h1", "adamkit compare: the seed notes' claims, measured"),
        ("p", f"{len(res.problems)} problems, {len(res.methods)} optimizer configurations, {len(res.tuning)} tuning runs "
              f"and {len(res.final)} final runs in {s['elapsed_seconds']:.1f} s with {s['jobs']} process(es); "
              f"adamkit {s.get('adamkit')}, numpy {s.get('numpy')}, Python {s.get('python')}, {s.get('created')}"
              + (" (quick budgets)" if s.get("quick") else "") + "."),
        ("p", PROTOCOL.format(nt=len(s["tune_seeds"]), ns=len(s["seeds"]), df=s.get("divergence_factor", 1e6))),
    ]
    for note in s.get("notes", []):
        b.append(("p", f"Note: {note}."))
    b.append(("p", "Verdicts: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + "."))
    b.append(("h2", "Claims"))
    b.append(("table", (["#", "claim", "verdict"], [[str(c.number), c.claim, c.verdict] for c in claims])))
    names = {p.name for p in figures}
    for c in claims:
        b.append(("h3", f"{c.number}. {c.claim}: {c.verdict}"))
        b.append(("p", f"The notes: \u201c{c.notes_say}\u201d"))
        b.append(("p", f"Experiment: {c.experiment}"))
        b.append(("p", f"Rule: {c.rule}"))
        b.append(("p", f"Measured: {c.summary}"))
        refs = [f for f in c.figures if f in names]
        if refs:
            b.append(("ref", refs))
    b.append(("h2", "Results"))
    b.append(("pre", res.table("text")))
    fails = res.failures()
    if fails:
        b.append(("h2", "Failed runs"))
        counts: dict[tuple, int] = {}
        for r in fails:
            counts[(r["problem"], r["method"], r["status"])] = counts.get((r["problem"], r["method"], r["status"]), 0) + 1
        b.append(("table", (["problem", "optimizer", "status", "runs", "example"],
                            [[p, m, st, str(n), next(f"lr {_g(r['lr'], 3)} seed {r['seed']}: {r['message']}" for r in fails
                                                     if (r['problem'], r['method'], r['status']) == (p, m, st))]
                             for (p, m, st), n in counts.items()])))
    b.append(("h2", "Figures"))
    captions = {
        "loss_curves.png": "Loss curves at the chosen learning rates (median, band min-max over seeds).",
        "lr_sensitivity.png": "Final loss against learning rate (tuneability).",
        "tuneability.png": "Width of the good learning-rate range per problem and optimizer.",
        "effective_step.png": "Per-coordinate effective step sizes on the ill-conditioned quadratic.",
        "bias_correction.png": "Bias-correction factors and the first steps with and without correction.",
        "online.png": "Adam against AMSGrad on Reddi et al.'s online problem.",
        "adagrad_steps.png": "Effective step sizes of AdaGrad, RMSProp and Adam over time.",
    }
    for f in figures:
        b.append(("img", (f.name, captions.get(f.name, f.name))))
    b.append(("h2", "Problems"))
    b.append(("table", (["name", "description", "steps", "grid", "optimizers"],
                        [[p["name"], p["description"], str(p["steps"]),
                          f"{_g(p['lrs'][0], 2)}..{_g(p['lrs'][-1], 2)} ({len(p['lrs'])})", ", ".join(p["methods"])]
                         for p in res.problems])))
    b.append(("p", "Files: results.json (every run; load with adamkit.load_results), claims.json, table.txt, table.md, "
                   "and the PNG figures."))
    return b


def _md(blocks: list[tuple[str, Any]]) -> str:
    out = []
    for kind, x in blocks:
        if kind == "h1":
            out.append(f"# {x}\n")
        elif kind == "h2":
            out.append(f"## {x}\n")
        elif kind == "h3":
            out.append(f"### {x}\n")
        elif kind == "p":
            out.append(f"{x}\n")
        elif kind == "pre":
            out.append("```\n" + x + "\n```\n")
        elif kind == "ref":
            out.append("Figures: " + ", ".join(f"[{f}]({f})" for f in x) + ".\n")
        elif kind == "img":
            out.append(f"![{x[1]}]({x[0]})\n\n*{x[1]}*\n")
        elif kind == "table":
            head, rows = x
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + "---|" * len(head))
            out += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
            out.append("")
    return "\n".join(out)


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}table{border-collapse:collapse;margin:1em 0;font-size:90%}td,th{border:1px solid #ccc;
padding:3px 8px;text-align:left;vertical-align:top}th{background:#f3f3f3}pre{background:#f7f7f7;padding:1em;
overflow-x:auto;font-size:80%}img{max-width:100%;border:1px solid #ddd}figure{margin:1.5em 0}
figcaption{font-style:italic;color:#555}.holds{color:#1a7f37;font-weight:bold}.does-not-hold{color:#c62828;
font-weight:bold}.partly-holds{color:#b26a00;font-weight:bold}.not-tested{color:#666;font-weight:bold}"""


def _html(blocks: list[tuple[str, Any]], directory: Path) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
           "<title>adamkit compare report</title>", f"<style>{_CSS}</style></head><body>"]
    verdicts = (HOLDS, PARTLY, FAILS, UNTESTED)

    def cell(c: str) -> str:
        return f"<span class='{c.replace(' ', '-')}'>{e(c)}</span>" if c in verdicts else e(c)

    for kind, x in blocks:
        if kind in ("h1", "h2"):
            out.append(f"<{kind}>{e(x)}</{kind}>")
        elif kind == "h3":
            title, _, verdict = x.rpartition(": ")
            out.append(f"<h3>{e(title)}: {cell(verdict)}</h3>")
        elif kind == "p":
            out.append(f"<p>{e(x)}</p>")
        elif kind == "pre":
            out.append(f"<pre>{e(x)}</pre>")
        elif kind == "ref":
            out.append("<p>Figures: " + ", ".join(f"<a href='#{e(f)}'>{e(f)}</a>" for f in x) + ".</p>")
        elif kind == "img":
            data = base64.b64encode((directory / x[0]).read_bytes()).decode("ascii")
            out.append(f"<figure id='{e(x[0])}'><img alt='{e(x[1])}' src='data:image/png;base64,{data}'>"
                       f"<figcaption>{e(x[1])}</figcaption></figure>")
        elif kind == "table":
            head, rows = x
            out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows]
            out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(res: Any, directory: Path, jobs: int | None = None) -> Path:
    """Write the report directory; returns the path of ``report.html``.

    Everything is drawn and written into a hidden staging directory inside ``directory`` first, then
    moved into place file by file (``report.html`` last: its presence means done), and figures of an
    earlier report that these results do not allow are removed. So a call that fails or is interrupted
    while it draws or writes leaves an earlier report as it was; the staging directory is removed."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".adamkit-report-", dir=directory))
    try:
        figures = plot_all(res, stage, jobs)
        claims = evaluate_claims(res)
        res.to_json(stage / "results.json")
        write_atomic(stage / "claims.json",
                     json.dumps([_clean(c.to_dict()) for c in claims], indent=1, allow_nan=False))
        write_atomic(stage / "table.txt", res.table("text") + "\n")
        write_atomic(stage / "table.md", res.table("markdown") + "\n")
        blocks = _blocks(res, claims, figures)
        write_atomic(stage / "report.md", _md(blocks))
        write_atomic(stage / "report.html", _html(blocks, stage))
        for name, _ in FIGURES:
            if not (stage / name).exists() and (directory / name).exists():
                (directory / name).unlink()
        names = sorted(p.name for p in stage.iterdir() if p.name != "report.html") + ["report.html"]
        for name in names:
            os.replace(stage / name, directory / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return directory / "report.html"


def _clean(x: Any) -> Any:
    from ._compare import _jsonable

    return _jsonable(x)
