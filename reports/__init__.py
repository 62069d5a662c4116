"""Reports of a run directory: the Plotly dashboard, `trials.csv` and Markdown tables.

`nas.run` calls `build_dashboard(run_dir)` when a search ends; `python -m reports --run DIR` rebuilds
it at any time, also while the run is in progress (runs are read through `nas.runstate`, never
locked or modified). Heavy imports (plotly, pandas, optuna) happen inside the functions, so
importing this package is cheap.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["build_dashboard"]


def build_dashboard(run_dir: str | os.PathLike[str], *, out: str | os.PathLike[str] | None = None, storage: str | None = None) -> Path:
    """Write `<run_dir>/dashboard.html` (or `out`) and `<run_dir>/trials.csv`; returns the HTML path."""
    from reports.dashboard import build_dashboard as _build

    return _build(run_dir, out=out, storage=storage)
