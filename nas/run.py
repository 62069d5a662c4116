"""`python -m nas.run --study NAME`: the main job (a search or an ablation study).

This module only parses the command line and hands over to the driver; heavy imports (optuna, ray,
the trainers) happen after parsing so that `--help` is instant and works without them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The `nas.run` command line; flags override the study file's values."""
    parser = argparse.ArgumentParser(
        prog="python -m nas.run",
        description=(
            "Search for real-time 4x super-resolution networks (540p -> 4K, AVIF-compressed input): "
            "Optuna multi-objective trials (PSNR-Y gain over Lanczos vs latency) on Ray. "
            "Rerunning the same command resumes the run in its directory."
        ),
    )
    parser.add_argument(
        "--study",
        required=True,
        help="study name (studies/NAME.toml, e.g. rtsr, smoke, ablations/bias_removal) or a path to a TOML file",
    )
    parser.add_argument("--trials", type=int, help="trial budget (overrides the study file)")
    parser.add_argument("--workers", type=int, help="parallel proxy-training workers (overrides the study file)")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="device for training and latency (auto: cuda when available, else cpu; CPU numbers are labelled cpu)",
    )
    parser.add_argument("--out", help="run directory (default: runs/<study name>)")
    parser.add_argument("--seed", type=int, help="sampler and training seed (overrides the study file)")
    parser.add_argument("--data", help="HR training images: 'builtin' (default, no download) or a folder of PNG/JPEG")
    parser.add_argument("--val-data", help="HR validation images: 'builtin' or a folder (default: same source, val split)")
    parser.add_argument("--address", help="join a running Ray cluster (e.g. 10.0.0.5:6379); default: local Ray")
    parser.add_argument("--storage", help="Optuna storage URL (e.g. postgresql://...); default: a journal file in the run directory")
    parser.add_argument("--steps", type=int, help="proxy-training steps per trial (overrides the study file's [proxy] steps)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr (log lines still go to stdout)")
    parser.add_argument("--fresh", action="store_true", help="start a new run; the old run directory is kept, renamed with a timestamp")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from search_space.errors import UserError

    try:
        from nas.driver import run_from_args
    except ModuleNotFoundError as exc:  # pragma: no cover - until the driver lands
        if exc.name != "nas.driver":
            raise
        print("nas.run: the search driver is not part of this build yet (see README 'Status').", file=sys.stderr)
        return 2
    try:
        return run_from_args(args)
    except UserError as exc:
        print(f"nas.run: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
