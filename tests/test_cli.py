"""The adamkit command: argument errors, the listings, and `adamkit compare --quick` end to end into a
temporary directory (files exist, PNGs are valid images, the report states all eight claims with numbers)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

import numpy as np

import adamkit as ak
from adamkit import _kernels
from adamkit.cli import main

CLAIM_VERDICTS = ("holds", "partly holds", "does not hold")


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "adamkit.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "r"
    proc = run_cli("compare", "--quick", "--out", str(out), "--no-progress", "--jobs", "2")
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_quick_compare_writes_every_file(quick_report):
    out, proc = quick_report
    for name in ("report.html", "report.md", "results.json", "claims.json", "table.txt", "table.md",
                 "loss_curves.png", "lr_sensitivity.png", "tuneability.png", "effective_step.png",
                 "bias_correction.png", "online.png", "adagrad_steps.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert f"Report: {out / 'report.html'}" in proc.stdout
    # the table is printed: every built-in problem and every default optimizer
    for name in ak.PROBLEMS:
        assert f"\n{name}: " in proc.stdout
    for m in ("sgd", "momentum", "adagrad", "rmsprop", "adam"):
        assert re.search(rf"^  {m}\s", proc.stdout, re.M)


def test_pngs_are_valid_images(quick_report):
    from PIL import Image

    out, _ = quick_report
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 7
    for p in pngs:
        with Image.open(p) as im:
            im.verify()
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
            im.load()


def test_html_is_self_contained(quick_report):
    out, _ = quick_report
    html = (out / "report.html").read_text()
    images = re.findall(r"<img [^>]*src='([^']*)'", html)
    assert len(images) == 7 and all(src.startswith("data:image/png;base64,") for src in images)
    assert "http://" not in html and "https://" not in html
    assert html.count("<h3>") == 8


def test_report_states_all_eight_claims_with_numbers(quick_report):
    out, proc = quick_report
    md = (out / "report.md").read_text()
    heads = re.findall(r"^### (\d)\. (.+): (holds|partly holds|does not hold|not tested)$", md, re.M)
    assert [int(h[0]) for h in heads] == list(range(1, 9))
    assert all(h[2] in CLAIM_VERDICTS for h in heads), heads  # every claim was measured on --quick
    sections = re.split(r"^### \d\. ", md, flags=re.M)[1:9]
    for sec in sections:
        measured = re.search(r"^Measured: (.+)$", sec, re.M).group(1)
        assert len(re.findall(r"\d+\.\d+|\d+e-?\d+", measured)) >= 3, measured
        assert re.search(r"^Experiment: ", sec, re.M) and re.search(r"^Rule: ", sec, re.M)
    claims = json.loads((out / "claims.json").read_text())
    assert [c["number"] for c in claims] == list(range(1, 9))
    assert all(c["numbers"] for c in claims)
    for c in claims:
        assert f"{c['number']}. {c['claim']}: {c['verdict'].upper()}" in proc.stdout


def test_results_json_reloads_and_report_rebuilds(quick_report, tmp_path):
    out, _ = quick_report
    res = ak.load_results(out / "results.json")
    assert {p["name"] for p in res.problems} == set(ak.PROBLEMS)
    assert res.settings["quick"] is True and len(res.settings["seeds"]) == 3
    assert main(["report", str(out / "results.json"), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "table.txt").read_text() == (out / "table.txt").read_text()
    assert (tmp_path / "again" / "claims.json").read_text() == (out / "claims.json").read_text()


def test_problems_lists_every_builtin(capsys):
    assert main(["problems"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == list(ak.PROBLEMS)
    assert all(len(ln.split(None, 1)[1]) > 20 for ln in lines)


def test_optimizers_lists_the_names(capsys):
    assert main(["optimizers"]) == 0
    out = capsys.readouterr().out
    for m in ("sgd", "momentum", "adagrad", "rmsprop", "adam", "amsgrad"):
        assert re.search(rf"^{m}\s", out, re.M)


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--problems", "--optimizers", "--lrs", "--seeds", "--tune-seeds", "--out", "--quick", "--jobs",
                "--factor", "--no-variants", "--no-progress"):
        assert opt in text
    assert main([]) == 0 and "compare" in capsys.readouterr().out


@pytest.mark.parametrize("args, expect", [
    (["compare", "--problems", "nope"], ["unknown problem 'nope'", "choose from quadratic, rosenbrock"]),
    (["compare", "--optimizers", "adamm"], ["optimizer 'adamm'", "sgd, momentum, nesterov"]),
    (["compare", "--optimizers", "adam(betas=(0.9,2))"], ["betas[1]=2", "[0.0, 1.0)"]),
    (["compare", "--lrs", "0"], ["learning rate '0'", "positive finite number"]),
    (["compare", "--lrs", "fast"], ["learning rate 'fast'", "positive number"]),
    (["compare", "--seeds", "0"], ["seeds '0'", ">= 1"]),
    (["compare", "--jobs", "two"], ["jobs 'two'", "whole number"]),
    (["compare", "--factor", "0.5"], ["factor '0.5'", "> 1"]),
    (["compare", "--seeds", "2", "--tune-seeds", "3"], ["--tune-seeds: 3 is more than --seeds 2"]),
    (["compare", "--bogus"], ["unrecognized arguments: --bogus"]),
    (["frobnicate"], ["invalid choice: 'frobnicate'", "compare"]),
])
def test_bad_arguments_exit_2_naming_the_value(capsys, args, expect):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    for e in expect:
        assert e in err, err


def test_out_must_be_a_directory(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--out", str(f)])
    assert exc.value.code == 2 and "is not a directory" in capsys.readouterr().err


def test_report_of_a_missing_file_fails_cleanly(tmp_path, capsys):
    assert main(["report", str(tmp_path / "none.json")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_small_compare_in_process(tmp_path, capsys):
    out = tmp_path / "small"
    assert main(["compare", "--problems", "ols,ridge", "--optimizers", "sgd", "adam(betas=(0.8,0.99))",
                 "--lrs", "0.01", "0.1", "--quick", "--jobs", "1", "--no-progress", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "adam(betas=(0.8,0.99))" in text and "NOT TESTED" in text
    res = ak.load_results(out / "results.json")
    assert [p["lrs"] for p in res.problems] == [[0.01, 0.1], [0.01, 0.1]]


def test_bench_is_delegated():
    proc = run_cli("bench", "--help", timeout=60)
    assert proc.returncode == 0 and "adamkit bench" in proc.stdout


def test_ctrl_c_stops_the_workers_and_exits_130(tmp_path):
    import os
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "adamkit.cli", "compare", "--quick", "--out", str(tmp_path / "r"),
                             "--jobs", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    seen = b""
    while b"adamkit compare:" not in seen:  # the progress bar: the workers are running
        chunk = proc.stderr.read1(256)
        assert chunk, seen.decode(errors="replace")
        seen += chunk
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert b"adamkit: interrupted" in err and b"Traceback" not in err
    assert not (tmp_path / "r" / "report.html").exists()


@pytest.mark.skipif(not _kernels.available(), reason="adamkit bench needs Numba")
def test_bench_measures_every_contender_and_leaves_the_limit_arrays_unchanged(tmp_path):
    """A small run: every row has the limit, both adamkit policies, gradient_buffers for several arrays
    and the NumPy rules; the limit kernel runs on the optimizer's own arrays and leaves them as they were."""
    from adamkit import _bench

    res = _bench.run(["adam", "sgd"], ["1e3", "400x2500"], ["float32"], repeat=5, torch=False,
                     progress=lambda line: None)
    assert {(r["optimizer"], r["size"]) for r in res["rows"]} == {(o, s) for o in ("adam", "sgd")
                                                                   for s in ("1e3", "400x2500")}
    for r in res["rows"]:
        assert {"limit", "adamkit", "adamkit unchecked", "check", "numpy reference rule"} <= set(r["ms"])
        threaded = r["elements"] >= _kernels.PARALLEL_MIN  # then also one read of the gradient, and it before the limit
        assert ({"read", "read, limit", "limit reads"} <= set(r["ms"])) == threaded
        assert ("adamkit gradient_buffers" in r["ms"]) == (r["arrays"] > 1)
        assert all(v > 0 for v in r["ms"].values())
        assert r["bytes_per_step"] == (7 if r["optimizer"] == "adam" else 5) * r["elements"] * 4
    _bench.plot(res, tmp_path / "lines.png")  # ratio against size; one size alone gets bars
    _bench.plot({**res, "rows": [r for r in res["rows"] if r["size"] == "1e3"]}, tmp_path / "bars.png")
    for name in ("lines.png", "bars.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for n in (1000, _kernels.PARALLEL_MIN + 1000):  # the serial limit; the plain and prefetching threaded ones
        opt = ak.Adam([np.full(n, 0.5, np.float32)])
        grads = [np.linspace(-1, 1, n, dtype=np.float32)]
        opt.step(grads)
        before = [opt.params[0].copy()] + [x.copy() for x in opt._groups[0].buckets[0].flat.values()]
        limits = _bench._limit_fns(opt, grads)
        assert set(limits) == ({"limit"} if n < _kernels.PARALLEL_MIN else
                               {"limit plain", "limit prefetched", "read", "read, limit", "limit reads"})
        for limit in limits.values():
            limit()
            after = [opt.params[0]] + list(opt._groups[0].buckets[0].flat.values())
            for a, b in zip(before, after):
                np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not _kernels.available(), reason="adamkit bench needs Numba")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_bench_read_kernel_reads_every_element(dtype):
    """The benchmark's 'read' (one read of the gradient) returns a sum of ORs of the bits of its blocks:
    zeros give 0, and one nonzero element anywhere (chunk, half and block edges) gives its bits."""
    from adamkit import _bench

    n = _kernels.CHUNK + 1000
    g = np.zeros(n, dtype)
    assert _bench._read_threads(g, _kernels.CHUNK) == 0
    bits = int(np.bitwise_or.reduce(np.array([1.5], dtype).view(np.int32)))
    for i in (0, 1, 127, 128, _kernels.CHUNK // 2 - 1, _kernels.CHUNK // 2, _kernels.CHUNK - 1, _kernels.CHUNK,
              _kernels.CHUNK + 511, _kernels.CHUNK + 512, n - 1):
        g[i] = 1.5
        assert _bench._read_threads(g, _kernels.CHUNK) == bits, i
        g[i] = 0


@pytest.mark.skipif(not _kernels.available(), reason="adamkit bench needs Numba")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_bench_reads_kernel_reads_every_element_of_every_array(dtype):
    """The benchmark's 'limit reads' (the limit's reads without its writes) returns a sum of ORs of the
    bits of its blocks, array by array: zeros give 0; one nonzero element in one of the arrays, at chunk
    and block edges, gives its bits; the same element in all of them gives its bits once per array."""
    from adamkit import _bench

    n = 2 * _kernels.CHUNK + 1000
    g, rw = np.zeros(n, dtype), tuple(np.zeros(n, dtype) for _ in range(3))
    assert _bench._reads_threads(g, rw, _kernels.CHUNK) == 0
    bits = int(np.bitwise_or.reduce(np.array([1.5], dtype).view(np.int32)))
    for i in (0, 127, 128, _kernels.CHUNK - 1, _kernels.CHUNK, 2 * _kernels.CHUNK + 511, n - 1):
        for x in (g, *rw):
            x[i] = 1.5
            assert _bench._reads_threads(g, rw, _kernels.CHUNK) == bits, i
            x[i] = 0
        for x in (g, *rw):
            x[i] = 1.5
        assert _bench._reads_threads(g, rw, _kernels.CHUNK) == 4 * bits, i
        for x in (g, *rw):
            x[i] = 0


def test_the_out_check_creates_and_removes_nothing(tmp_path):
    """--out is checked before the work by a scratch file in its nearest existing directory; a path
    through '..' must not touch the directory it names."""
    from adamkit.cli import _unwritable

    (tmp_path / "results").mkdir()
    assert _unwritable(tmp_path / "x" / ".." / "results") is None
    assert _unwritable(tmp_path / "new" / "deeper") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]
    (tmp_path / "file").write_text("")
    assert "is not a directory" in _unwritable(tmp_path / "file" / "sub")
