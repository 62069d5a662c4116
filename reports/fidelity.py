"""Which fidelity an ablation verdict stands on: the measured rank correlation of its budget.

An ablation trains each arm for a fixed proxy budget and gives a verdict per published claim. Whether
that verdict says anything about *long* training depends on how well that budget ranks designs like
long training, which `nas.calibrate` measures (`calibration.json`). This module finds the
calibrations a user has run and says, for a budget in steps, what was measured there: the Spearman
correlation with the long budget and its 95 % bootstrap interval, or that the budget was never
calibrated (the verdict then speaks for the proxy only).

Where calibrations are looked for, in order: paths given explicitly (by a caller), the
`RTSR_CALIBRATION` environment variable (paths separated by the OS path separator), and
`runs/calibrate-*/calibration.json` under the current directory. A budget matches a calibration only
at exactly the same step count; the nearest calibrated budget is named for orientation, never used.
The calibration's recipe, data and study are printed next to its number, since a calibration of
another recipe is evidence about that recipe.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.calibrate.stats import format_interval

__all__ = ["CALIBRATION_ENV", "Fidelity", "budget_fidelity", "find_calibrations"]

CALIBRATION_ENV = "RTSR_CALIBRATION"


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not str(data.get("format", "")).startswith("rtsr-nas calibration"):
        return None
    return {**data, "_path": str(path)}


def find_calibrations(explicit: Sequence[str | os.PathLike[str]] = (), *, cwd: Path | None = None) -> list[dict[str, Any]]:
    """Every readable `calibration.json` from the places in the module docstring (duplicates once)."""
    paths = [Path(p) for p in explicit]
    paths += [Path(p) for p in os.environ.get(CALIBRATION_ENV, "").split(os.pathsep) if p]
    paths += sorted(Path(p) for p in glob.glob(str((cwd or Path.cwd()) / "runs" / "calibrate-*" / "calibration.json")))
    found, seen = [], set()
    for path in paths:
        if path.is_dir():
            path = path / "calibration.json"
        key = path.resolve()
        if key in seen:
            continue
        seen.add(key)
        data = _read(path)
        if data is not None:
            found.append(data)
    return found


@dataclass(frozen=True)
class Fidelity:
    """What a budget's verdicts stand on: a calibrated Spearman, or a note that there is none."""

    calibrated: bool
    text: str  # one line for a report
    label: str  # a short cell: "Spearman +0.55 [+0.20, +0.81]" or "not calibrated"


def _budget_rows(cal: Mapping[str, Any]) -> list[tuple[int, Mapping[str, Any]]]:
    """(steps, statistics against the long budget) for each rung of the calibration's headline group."""
    group = (cal.get("primary") or {}).get("group", "space")
    rows = (cal.get("groups") or {}).get(group) or []
    return [(int(r["steps"]), r) for r in rows if r.get("steps") is not None]


def budget_fidelity(steps: int | None, calibrations: Sequence[Mapping[str, Any]]) -> Fidelity:
    """The calibrated rank correlation of a `steps`-step budget, or why there is none."""
    if steps is None:
        return Fidelity(False, "fidelity: the budget is unknown, so it cannot be matched with a calibration", "not calibrated")
    nearest: tuple[int, int, Mapping[str, Any]] | None = None
    for cal in calibrations:
        long_steps = (cal.get("budgets") or {}).get("long_steps")
        for rung_steps, row in _budget_rows(cal):
            if rung_steps == steps:
                rho = format_interval(row.get("spearman") or {})
                where = (f"calibration of study {cal.get('study')!r}, recipe {cal.get('recipe') or '?'}, data {cal.get('data') or '?'}, "
                         f"{row.get('n')} archs, on {cal.get('device') or '?'}: {cal['_path']}")
                text = (f"fidelity: {steps} proxy steps rank like {long_steps} steps with Spearman {rho} (95 % bootstrap interval); "
                        f"{where}")
                return Fidelity(True, text, f"Spearman {rho}")
            gap = abs(rung_steps - steps)
            if nearest is None or gap < nearest[0]:
                nearest = (gap, rung_steps, row)
    hint = ""
    if nearest is not None:
        hint = f" (nearest calibrated budget: {nearest[1]} steps, Spearman {format_interval(nearest[2].get('spearman') or {})})"
    text = (f"fidelity: {steps} proxy steps were never calibrated{hint}; these verdicts say what this proxy shows, not "
            f"how long training would rank the arms (run `python -m nas.calibrate` with a rung at {steps} steps)")
    return Fidelity(False, text, "not calibrated")
