"""`rtsr export` / `python -m nas.export --run DIR --pareto | --trial N [--format onnx]`: trials as
full-training configs (and, with `--format onnx`, their proxy-trained fused weights as ONNX).

The work is `nas.export.export_trials`; this module parses flags and prints what was written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def build_parser(*, prog: str = "python -m nas.export") -> argparse.ArgumentParser:
    from nas.export import DEFAULT_RECIPE

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Write one full-training config (trainers.full --config) per chosen trial of a nas.run "
        "directory, with its provenance and proxy-trained fused weights. Safe while the run is in progress.",
    )
    parser.add_argument("--run", required=True, help="run directory written by nas.run (e.g. runs/rtsr)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--pareto", action="store_true", help="export every trial of the Pareto front")
    which.add_argument("--trial", type=int, action="append", metavar="N", help="export trial N (repeatable)")
    parser.add_argument("--recipe", default=DEFAULT_RECIPE, help=f"full-training recipe: a shipped name or a .toml path (default: {DEFAULT_RECIPE})")
    parser.add_argument("--steps", type=int, help="full-training steps written to [run].steps (default: the run config's default)")
    parser.add_argument("--out", help="output folder (default: <run>/export)")
    parser.add_argument("--format", choices=("config", "onnx"), default="config",
                        help="onnx: also write trial-NNNNN.onnx, the proxy-trained fused weights as ONNX checked in ONNX Runtime "
                        '(needs pip install -e ".[deploy]"); a trainers.full folder already holds deploy.onnx')
    parser.add_argument("--storage", help="Optuna storage URL, only for runs started with nas.run --storage")
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m nas.export") -> int:
    args = build_parser(prog=prog).parse_args(argv)
    from nas.export import export_trials
    from search_space.errors import UserError

    try:
        if args.steps is not None and args.steps < 1:
            raise UserError(f"--steps must be a positive integer, got {args.steps}")
        results = export_trials(args.run, numbers=args.trial, pareto=args.pareto, recipe=args.recipe, steps=args.steps,
                                out_dir=args.out, storage=args.storage, onnx=args.format == "onnx")
    except UserError as exc:
        print(f"{prog.removeprefix('python -m ')}: error: {exc}", file=sys.stderr)
        return 2
    for r in results:
        extra = f" + {r.weights.name}" if r.weights is not None else " (no proxy weights kept for this trial)"
        extra += f" + {r.onnx.name}" if r.onnx is not None else ""
        print(f"trial {r.trial:>4} -> {r.config}{extra}")
    if results:
        print(f"train one with: python -m trainers.full --config {results[0].config} [--data ~/DIV2K_train_HR --device cuda]")
    return 0
