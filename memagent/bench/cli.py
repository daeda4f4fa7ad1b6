"""``python -m memagent.bench SUITE.yml`` / ``python train.py bench SUITE.yml``: run a sweep, then report."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from memagent.bench.report import write_report
from memagent.bench.sweep import load_results, load_suite, run_sweep
from memagent.training.cli import OneLineParser, positive_int
from memagent.training.config import UsageError


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = OneLineParser(prog=prog, description="Run a benchmark sweep (algos x envs x seeds) and report it.")
    p.add_argument("suite", help="suite YAML, e.g. benchmarks/suites/quick.yml")
    p.add_argument("-o", "--out", default=None, help="sweep folder (default: logs/bench/<suite name>)")
    p.add_argument("--n-jobs", type=positive_int, default=2, help="parallel worker processes (default 2)")
    p.add_argument(
        "--ray", action="store_true", help="run each run as a Ray task (local Ray unless --ray-address)"
    )
    p.add_argument("--ray-address", default=None, help="Ray cluster address (implies --ray)")
    p.add_argument("--report", default=None, help="also copy the Markdown report to this path")
    p.add_argument("--report-only", action="store_true", help="do not run anything; report the finished runs")
    p.add_argument("--reps", type=positive_int, default=None, help="bootstrap replicates (default: suite's)")
    p.add_argument(
        "--algos",
        type=name_list,
        default=None,
        help="run only these algo entries (comma-separated suite names); the report covers all finished runs",
    )
    p.add_argument(
        "--envs", type=name_list, default=None, help="run only these env entries (comma-separated)"
    )
    return p


def name_list(text: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]``; empty names are an error."""
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of names")
    return names


def _report_command_args(argv: list[str]) -> list[str]:
    """The command line that reproduces the report: a rerun skips finished runs, so ``--report-only``
    and the ``--algos``/``--envs`` restrictions (parts of one sweep) are left out."""
    shown, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--algos", "--envs"):
            skip = True
        elif a != "--report-only" and not a.startswith(("--algos=", "--envs=")):
            shown.append(a)
    return shown


def main(argv: Sequence[str] | None = None, prog: str = "python -m memagent.bench") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        suite = load_suite(args.suite)
        out = Path(args.out or Path("logs") / "bench" / suite.name)
        if not args.report_only:
            counts = run_sweep(
                suite.select(args.algos, args.envs),
                out,
                n_jobs=args.n_jobs,
                use_ray=args.ray,
                ray_address=args.ray_address,
                progress=print,
            )
            print(
                f"sweep {suite.name}: {counts['total']} runs, {counts['skipped']} already finished, "
                f"{counts['done']} done now, {counts['failed']} failed"
            )
        records = load_results(out)
        if not records:
            print(f"no finished runs in {out}")
            return 1
        shown = _report_command_args(argv)
        command = (
            shlex.join(["python", *prog.split()[-2:], *shown])
            if prog.startswith("train.py")
            else shlex.join(["python", "-m", "memagent.bench", *shown])
        )
        report = write_report(
            records,
            out,
            metric=suite.metric,
            baseline=suite.baseline,
            reps=args.reps or suite.reps,
            title=f"Benchmark: {suite.name}: {suite.description or ''} "
            f"({suite.n_timesteps} steps per run, seeds {suite.seeds})",
            order=[a["name"] for a in suite.algos],
            env_order=[e["name"] for e in suite.envs],
            command=command,
        )
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    print(report["markdown"])
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(report["markdown"])
    print(f"report: {out / 'report.md'}, CSV: {out / 'summary.csv'}, figures: {out / 'figures'}")
    return 0
