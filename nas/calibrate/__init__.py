"""Calibration: does the proxy rank architectures like a long training does? (`python -m nas.calibrate`)

Why: successive halving bets that the gain after a short training orders architectures as a long
one would. This measures that bet on a panel (published presets and archs sampled from the study's
space, stratified by deploy MACs: `panel`), each trained ONE warmup-stable-decay trajectory evaluated
at every rung and at a long budget (default 10 x the rung that decides the last promotion), plus a
second long seed on a subset for the noise ceiling (`spec`). Trainings run on an executor and are
saved one by one, so a rerun resumes (`runner`, `store`). The numbers (`stats`, `report`): Spearman
and Kendall with bootstrap intervals per rung, pairwise accuracy, front recovery (MACs as the cost
axis: nothing is timed), noise ceiling, presets vs Table 1. The command is `rtsr.calibrate`; the
HTML page is `reports.calibration`.
"""

from nas.calibrate.panel import PanelArch, resolve_presets, sample_stratified, select_panel
from nas.calibrate.report import TARGET_SPEARMAN, render_markdown, summarize
from nas.calibrate.runner import CalibrationRunner
from nas.calibrate.spec import CalibrationSpec, Task
from nas.calibrate.stats import bootstrap_correlations, front_recovery, kendall, pairwise_accuracy, spearman
from nas.calibrate.store import CalibrationStore

__all__ = [
    "TARGET_SPEARMAN",
    "CalibrationRunner",
    "CalibrationSpec",
    "CalibrationStore",
    "PanelArch",
    "Task",
    "bootstrap_correlations",
    "front_recovery",
    "kendall",
    "pairwise_accuracy",
    "render_markdown",
    "resolve_presets",
    "sample_stratified",
    "select_panel",
    "spearman",
    "summarize",
]
