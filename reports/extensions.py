"""Optional report parts from sibling modules, found at run time (today: ablation tables/figures).

Why lazy: `reports.ablation` is developed separately and may be absent or lack a function in a
given build; the dashboard and the Markdown tables must still work, so a missing module or function
means "no ablation part", while an ablation module that is present but broken still raises.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["AblationParts", "ablation_parts"]


@dataclass(frozen=True)
class AblationParts:
    """The ablation functions of `reports.ablation` that exist (None where missing)."""

    markdown: Callable[..., str] | None  # (run_dir) or (run_dir, *, storage=URL)
    figures: Callable[..., list[Any]] | None  # (run_dir) or (run_dir, *, storage=URL)


def ablation_parts(run_dir: str | os.PathLike[str]) -> AblationParts | None:
    """The ablation report functions if `run_dir` is an ablation run, else None."""
    try:
        module = importlib.import_module("reports.ablation")
    except ModuleNotFoundError as exc:
        if exc.name in ("reports.ablation", "reports"):
            return None
        raise
    check = getattr(module, "is_ablation_run", None)
    if check is None or not check(run_dir):
        return None
    return AblationParts(markdown=getattr(module, "ablation_markdown", None), figures=getattr(module, "ablation_figures", None))
