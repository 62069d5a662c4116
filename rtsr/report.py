"""`rtsr report` / `python -m reports --run runs/rtsr`: rebuild a run's dashboard, or print its tables.

Formats: `html` (default) writes `<run>/dashboard.html` and `<run>/trials.csv`; `md` prints the
Pareto front as Markdown (an ablation run prints its ablation table instead) and writes
`trials.csv`; `csv` writes only `trials.csv`. Safe while `nas.run` is still running the study.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_parser", "main"]


def build_parser(*, prog: str = "python -m reports") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Build the Plotly dashboard of a nas.run directory (works while the run is in progress), "
        "or print its Pareto table as Markdown.",
    )
    parser.add_argument("--run", required=True, help="run directory written by nas.run (e.g. runs/rtsr)")
    parser.add_argument("--format", choices=("html", "md", "csv"), default="html",
                        help="html: dashboard.html + trials.csv (default); md: print the Pareto table as Markdown; csv: trials.csv only")
    parser.add_argument("--out", help="where to write the dashboard (default: <run>/dashboard.html)")
    parser.add_argument("--storage", help="Optuna storage URL, only for a nas.run --storage run whose URL held a password "
                        "(run.json stores it redacted; a URL without one is reopened from run.json)")
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m reports") -> int:
    args = build_parser(prog=prog).parse_args(argv)
    from search_space.errors import UserError

    try:
        from nas.runstate import load_run
        from reports.tables import TRIALS_CSV, write_trials_csv

        if args.format == "html":
            from reports.dashboard import build_dashboard

            path = build_dashboard(args.run, out=args.out, storage=args.storage)
            print(f"dashboard: {path}")
            print(f"trials:    {Path(args.run) / TRIALS_CSV}")
            return 0
        state = load_run(args.run, storage=args.storage)
        csv_path = write_trials_csv(state)
        if args.format == "md":
            from reports.extensions import ablation_parts
            from reports.tables import pareto_markdown

            ablation = ablation_parts(state.run_dir)
            if ablation is not None and ablation.markdown is not None:
                kw = {} if args.storage is None else {"storage": args.storage}
                sys.stdout.write(ablation.markdown(state.run_dir, **kw).rstrip("\n") + "\n")
            else:
                sys.stdout.write(pareto_markdown(state))
        else:
            print(f"trials: {csv_path}")
        return 0
    except UserError as exc:
        print(f"{prog.removeprefix('python -m ')}: error: {exc}", file=sys.stderr)
        return 2
