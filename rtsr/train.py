"""`rtsr train` / `python -m trainers.full --config FILE`: train a run config to completion.

The work is `trainers.full.run_full` (resumable, bit-for-bit after a kill); this module parses
flags, applies them to the config and reports errors in one line.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from rtsr._session import check_out_dir, run_command

__all__ = ["build_parser", "main"]


def build_parser(*, prog: str = "python -m trainers.full") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train a run config (e.g. one exported by nas.export) to completion; rerun to resume after a kill.",
    )
    parser.add_argument("--config", required=True, help="run config TOML ([run], [arch], [recipe], [provenance])")
    parser.add_argument("--data", help="HR training images: 'builtin', 'photos' or a folder (overrides [run].data)")
    parser.add_argument("--val-data", help="HR validation images: 'builtin', 'photos' or a folder (default: the val split of --data, "
                        "its val/ subfolder, or about 10%% carved from the training images)")
    parser.add_argument("--test-data", help="HR test images for the final metrics: 'builtin', 'photos' or a folder (default: the test split "
                        "of --data, its test/ subfolder, or about 10%% carved from the training images)")
    parser.add_argument("--out", help="output folder (default: runs/full/<config file stem>)")
    parser.add_argument("--steps", type=int, help="total optimizer steps (overrides [run].steps)")
    parser.add_argument("--seed", type=int, help="seed (overrides [run].seed)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--validate-every", type=int, default=0, help="validate every N steps (0: only at the end)")
    parser.add_argument("--checkpoint-every", type=int, default=500, help="checkpoint every N steps (default: 500)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (there are none anyway when stderr is not a "
                        "terminal: a log gets plain lines)")
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m trainers.full") -> int:
    """Train; a user's mistake is one line and exit 2, Ctrl-C one line and exit 130.

    After Ctrl-C nothing is lost: checkpoints and caches are written atomically, so the same command
    resumes from the last checkpoint."""
    args = build_parser(prog=prog).parse_args(argv)
    return run_command(prog.removeprefix("python -m "), lambda: _run(args))


def _run(args: argparse.Namespace) -> None:
    """Apply the flags to the config, check the output folder, train."""
    import torch

    from search_space.errors import UserError
    from trainers.full import run_full
    from trainers.runconfig import load_run_config

    config = load_run_config(args.config).with_overrides(
        data=args.data, val_data=args.val_data, steps=args.steps, seed=args.seed
    )
    out = Path(args.out) if args.out else Path("runs") / "full" / Path(args.config).stem
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was given but no CUDA device is available; use --device cpu")
    check_out_dir(out)  # before the data is prepared: an unusable --out is one line now, not a traceback later
    run_full(
        config,
        out,
        threads=args.threads,
        device=args.device,
        validate_every=args.validate_every,
        checkpoint_every=args.checkpoint_every,
        progress=not args.no_progress,
        test_data=args.test_data,
    )
