"""The ``adamkit`` command.

    adamkit compare [--problems NAME ...] [--optimizers SPEC ...] [--lrs LR ...] [--seeds N]
                    [--out DIR] [--quick] [--jobs N] ...   run the comparison, print the table, write the report
    adamkit problems                                        list the built-in problems
    adamkit optimizers                                      list the optimizer names --optimizers accepts
    adamkit report RESULTS.json [--out DIR]                 rebuild a report from saved results
    adamkit bench ...                                       time one optimizer step (see adamkit bench --help)

Exit status: 0 on success, 2 for bad arguments, 1 when the work itself fails.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import sys
import time
import warnings
from pathlib import Path
from typing import Sequence

DEFAULT_OUT = "adamkit-report"


class _Parser(argparse.ArgumentParser):
    """argparse, with a pointer to --help after an error."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n(see '{self.prog} --help')\n")


def _positive_int(what: str):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} {text!r}: expected a whole number >= 1") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{what} {text!r}: expected a whole number >= 1")
        return v
    return parse


def _positive_float(what: str):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} {text!r}: expected a positive number such as 1e-3") from None
        if not (0 < v < math.inf):
            raise argparse.ArgumentTypeError(f"{what} {text!r}: expected a positive finite number such as 1e-3")
        return v
    return parse


def _factor(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"factor {text!r}: expected a number > 1") from None
    if not (1 < v < math.inf):
        raise argparse.ArgumentTypeError(f"factor {text!r}: expected a number > 1")
    return v


def _build_parser() -> argparse.ArgumentParser:
    from ._compare import DEFAULT_METHODS, METHODS, default_jobs
    from ._problems import PROBLEMS

    parser = _Parser(prog="adamkit", description="adamkit: first-order optimizers for NumPy, and a tool to compare them.",
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="Run 'adamkit COMMAND --help' for the options of a command.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"adamkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    c = sub.add_parser(
        "compare", help="compare optimizers on problems and write a report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run optimizers side by side on problems under the DeepOBS protocol: one log-spaced learning-rate grid\n"
            "per problem, the same for every optimizer; the learning rate with the smallest median final loss\n"
            "over the tuning seeds is chosen; the chosen setting is rerun on every seed and reported as mean and\n"
            "spread. Diverged or NaN runs are recorded as failures. Prints the results table and the verdicts on\n"
            "the seed notes' eight claims, and writes a report directory: report.html (self-contained), report.md,\n"
            "table.txt, table.md, results.json, claims.json and PNG figures.\n\n"
            "With no options: SGD, SGD+momentum, AdaGrad, RMSProp and Adam on every built-in problem, 3 seeds,\n"
            "30-50 s on 2 cores (more the first time, which compiles the kernels); --quick about 10 s (smaller\n"
            "budgets, a grid of 1 point a decade)."),
        epilog="examples:\n  adamkit compare\n  adamkit compare --quick --out /tmp/report\n"
               "  adamkit compare --problems quadratic rosenbrock --optimizers adam 'adam(betas=(0.9,0.99))' sgd\n"
               "  adamkit compare --problems digits_mlp --lrs 1e-3 3e-3 1e-2 --seeds 5")
    c.add_argument("--problems", nargs="+", metavar="NAME", default=None,
                   help=f"built-in problems to run (default: all). One of: {', '.join(PROBLEMS)}. "
                        "See 'adamkit problems'.")
    c.add_argument("--optimizers", nargs="+", metavar="SPEC", default=None,
                   help=f"optimizers to compare (default: {' '.join(DEFAULT_METHODS)}). A name from "
                        f"{', '.join(METHODS)}, or name(option=value, ...) such as 'adam(betas=(0.9,0.9999))' or "
                        "'sgd(momentum=0.5)'. See 'adamkit optimizers'.")
    c.add_argument("--lrs", nargs="+", metavar="LR", type=_positive_float("learning rate"), default=None,
                   help="one learning-rate grid for every problem and optimizer (default: each problem's own "
                        "log-spaced grid, 2 points a decade)")
    c.add_argument("--seeds", type=_positive_int("seeds"), default=3, metavar="N",
                   help="seeds 0..N-1 the chosen setting is reported over (default: 3)")
    c.add_argument("--tune-seeds", type=_positive_int("tune-seeds"), default=None, metavar="N",
                   help="how many of the seeds choose the learning rate by median final loss (default: 3, or "
                        "--seeds if smaller; the protocol asks for at least 3)")
    c.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"report directory, created if needed (default: ./{DEFAULT_OUT})")
    c.add_argument("--quick", action="store_true",
                   help="smaller budgets and every other grid point: a smoke run in seconds")
    c.add_argument("--jobs", type=_positive_int("jobs"), default=None, metavar="N",
                   help=f"worker processes (default: the usable cores, here {default_jobs()}); results do not depend on it")
    c.add_argument("--factor", type=_factor, default=2.0, metavar="F",
                   help="tuneability: a learning rate is good when its loss is within F times the best (default: 2)")
    c.add_argument("--no-variants", action="store_true",
                   help="skip the problems' own extra configurations (Adam without bias correction on digits_vae, "
                        "AMSGrad on online); claims 1 and 8 are then not tested")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(subparser=c)

    sub.add_parser("problems", help="list the built-in problems", description="List the built-in problems.")
    sub.add_parser("optimizers", help="list the optimizer names for --optimizers",
                   description="List the optimizer names 'adamkit compare --optimizers' accepts.")
    r = sub.add_parser("report", help="rebuild a report from saved results.json",
                       description="Rebuild the report (figures, tables, claims, report.md, report.html) from a "
                                   "results.json written by 'adamkit compare'.")
    r.add_argument("results", metavar="RESULTS.json", help="a results.json written by adamkit compare")
    r.add_argument("--out", default=None, metavar="DIR", help="report directory (default: the results file's directory)")
    r.set_defaults(subparser=r)
    sub.add_parser("bench", help="time one optimizer step against the memory-traffic limit and torch.optim",
                   add_help=False, description="See 'adamkit bench --help'.")
    return parser


def _cmd_problems() -> int:
    from ._problems import PROBLEMS, describe

    width = max(map(len, PROBLEMS))
    for name in PROBLEMS:
        print(f"{name.ljust(width)}  {describe(name)}")
    return 0


def _cmd_optimizers() -> int:
    from ._compare import DEFAULT_METHODS, METHOD_HELP

    width = max(map(len, METHOD_HELP))
    for name, text in METHOD_HELP.items():
        print(f"{name.ljust(width)}  {text}{'  (default)' if name in DEFAULT_METHODS else ''}")
    print("\nAny of them with options: name(option=value, ...), e.g. 'adam(betas=(0.9, 0.9999), bias_correction=False)'.")
    return 0


def _print_claims(res) -> None:
    print("\nThe seed notes' claims:")
    for c in res.claims():
        print(f"  {c.number}. {c.claim}: {c.verdict.upper()}")
        print(f"     {c.summary}")


def _unwritable(out: Path) -> str | None:
    """Why the report directory ``out`` cannot be written, or None; checked before any work starts, by
    creating a scratch file in its nearest existing directory."""
    if out.exists() and not out.is_dir():
        return f"{str(out)!r} exists and is not a directory"
    probe = out.resolve()  # creates nothing: the nearest existing directory must take a new file
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{str(out)!r} cannot be created: {str(probe)!r} is not a directory"
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        return f"{str(out)!r} cannot be written ({exc.strerror or exc} in {str(probe)!r})"
    return None


def _cmd_compare(args: argparse.Namespace) -> int:
    from ._compare import compare, parse_method
    from ._problems import PROBLEMS

    sub = args.subparser
    names = None
    if args.problems is not None:
        names = []
        for n in args.problems:
            for part in n.split(","):
                if not part:
                    continue
                if part == "all":
                    names += [x for x in PROBLEMS if x not in names]
                elif part not in PROBLEMS:
                    sub.error(f"argument --problems: unknown problem {part!r}; choose from {', '.join(PROBLEMS)}")
                elif part not in names:
                    names.append(part)
    methods = None
    if args.optimizers is not None:
        methods = []
        for spec in args.optimizers:
            try:
                methods.append(parse_method(spec))
            except (TypeError, ValueError) as exc:
                sub.error(f"argument --optimizers: {exc}")
        labels = [m.label for m in methods]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            sub.error(f"argument --optimizers: {', '.join(dup)} given twice")
    if args.tune_seeds is not None and args.tune_seeds > args.seeds:
        sub.error(f"argument --tune-seeds: {args.tune_seeds} is more than --seeds {args.seeds}")
    if names == []:
        sub.error("argument --problems: expected at least one problem name")
    out = Path(args.out)
    why = _unwritable(out)
    if why:
        sub.error(f"argument --out: {why}")

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        res = compare(names, methods, args.lrs, args.seeds, tune_seeds=args.tune_seeds, jobs=args.jobs,
                      variants=not args.no_variants, factor=args.factor, quick=args.quick,
                      progress=not args.no_progress)
    print(res.table("text"))
    html = res.report(out, jobs=args.jobs)
    _print_claims(res)
    fails = res.failures()
    print(f"\n{len(res.tuning) + len(res.final)} runs ({len(fails)} diverged or failed, recorded) in "
          f"{time.perf_counter() - t0:.1f} s with {res.settings['jobs']} process(es).")
    print(f"Report: {html}  (also report.md, results.json and the figures in {out}/)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ._compare import load_results

    res = load_results(args.results)
    out = Path(args.out) if args.out else Path(args.results).resolve().parent
    why = _unwritable(out)
    if why:
        args.subparser.error(f"argument --out: {why}")
    html = res.report(out)
    _print_claims(res)
    print(f"Report: {html}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``adamkit`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        from . import _bench  # only this subcommand needs it

        return int(_bench.main(argv[1:]) or 0)
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "problems":
            return _cmd_problems()
        if args.command == "optimizers":
            return _cmd_optimizers()
        if args.command == "report":
            return _cmd_report(args)
        return _cmd_compare(args)
    except KeyboardInterrupt:
        print("adamkit: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, TypeError) as exc:
        print(f"adamkit {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
