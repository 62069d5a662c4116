"""`rtsr`: one console script with a subcommand per job (installed by `pip install .`).

    rtsr search  --study rtsr            # = python -m nas.run
    rtsr report  --run runs/rtsr         # = python -m reports
    rtsr export  --run runs/rtsr --pareto   # = python -m nas.export
    rtsr latency --preset all            # = python -m nas.latency
    rtsr train   --config FILE           # = python -m trainers.full
    rtsr calibrate --study rtsr          # = python -m nas.calibrate

Each subcommand is a module of this package with `main(argv, *, prog)`; it is imported only when
chosen, so `rtsr latency` runs on a machine with torch alone and `rtsr --help` is instant.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "main"]

#: subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "search": ("rtsr.search", "run or resume a search or an ablation study (python -m nas.run)"),
    "report": ("rtsr.report", "build a run's dashboard or print its tables (python -m reports)"),
    "export": ("rtsr.export", "write chosen trials as full-training configs (python -m nas.export)"),
    "latency": ("rtsr.latency", "time designs with the challenge's runtime protocol (python -m nas.latency)"),
    "train": ("rtsr.train", "train a run config to completion (python -m trainers.full)"),
    "calibrate": ("rtsr.calibrate", "measure how well each rung ranks archs like long training (python -m nas.calibrate)"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: rtsr COMMAND [options]   (rtsr COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"rtsr: unknown command {name!r}; choose one of: {', '.join(COMMANDS)}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest, prog=f"rtsr {name}"))
