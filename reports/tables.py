"""Tables of a run for people who do not open a browser: `trials.csv` and a Markdown Pareto table.

Both come from the same `nas.runstate.RunState` as the dashboard, so the numbers agree everywhere.
The CSV has one row per trial (failures included, with their reasons) and flat columns, so it opens
in a spreadsheet or `pandas.read_csv` without any project code.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from nas.runstate import RunState, write_output
from nas.trial_record import Key, linear_metric

__all__ = ["TRIALS_CSV", "pareto_markdown", "trial_rows", "trials_frame", "write_trials_csv"]

TRIALS_CSV = "trials.csv"


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def trial_rows(state: RunState) -> list[dict[str, Any]]:
    """One flat dict per trial (under successive halving, per trial and rung): what the CSV shows."""
    qps = state.qps or tuple(sorted({q for t in state.trials for q in t.per_qp_gain()}))
    rows = []
    records = [t for rung in state.rungs.values() for t in rung]
    for t in sorted(records, key=lambda t: (t.source_trial, t.rung)):
        per_qp = t.per_qp_gain()
        row: dict[str, Any] = {"trial": t.source_trial}
        if state.halving is not None:
            row.update({"rung": t.rung, "rung_steps": t.attrs.get(Key.RUNG_STEPS), "seed_spread_db": _round(t.attrs.get(Key.SEED_SPREAD), 4)})
        row |= {
            "state": t.state,
            "status": str(t.status),
            "pareto": t.pareto,
            "feasible": t.feasible,
            "preset": t.preset or "",
            "arch": t.arch_summary,
            "gain_db": _round(t.gain_db, 4),
            "gain_linear_db": _round(t.metric(linear_metric(state.gain_metric)), 4),
            "test_gain_db": _round(t.metric(state.gain_metric, split="test"), 4),
            "test_gain_linear_db": _round(t.metric(linear_metric(state.gain_metric), split="test"), 4),
        }
        for qp in qps:
            row[f"gain_qp{qp}_db"] = _round(per_qp.get(qp), 4)
        row.update(
            {
                "latency_ms": _round(t.latency_ms, 4),
                "macs_g": _round(None if t.macs is None else t.macs / 1e9, 4),
                "params_k": _round(None if t.n_params is None else t.n_params / 1e3, 2),
                "train_s": _round(t.attrs.get(Key.TRAIN_SECONDS), 1),
                "trial_s": _round(t.attrs.get(Key.TRIAL_SECONDS), 1),
                "retries": int(t.attrs.get(Key.RETRIES, 0) or 0),
                "duplicate_of": t.attrs.get(Key.DUPLICATE_OF, ""),
                "reason": t.reason,
                "arch_hash": t.arch_hash,
                "weights": t.weights or "",
                "latency_device": str(t.attrs.get(Key.LATENCY_DEVICE, "")),
            }
        )
        rows.append(row)
    return rows


def trials_frame(state: RunState) -> Any:
    """`trial_rows` as a pandas DataFrame indexed by trial number."""
    import pandas as pd

    rows = trial_rows(state)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.set_index("trial", drop=False)


def write_trials_csv(state: RunState, path: str | os.PathLike[str] | None = None) -> Path:
    """Write `trials.csv` (default: in the run dir) atomically; returns its path."""
    buffer = io.StringIO()
    frame = trials_frame(state)
    if frame.empty:
        buffer.write("trial,state,status,pareto,feasible,preset,arch,gain_db,latency_ms,reason\n")
    else:
        frame.to_csv(buffer, index=False)
    return write_output(Path(path) if path is not None else state.run_dir / TRIALS_CSV, buffer.getvalue())


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def pareto_markdown(state: RunState) -> str:
    """The Pareto front as a Markdown table, with a header line naming the study and device."""
    front = state.pareto()
    qps = state.qps
    head = (
        f"### Pareto front of `{state.study_name}` (run {state.run_id})\n\n"
        f"Maximize {state.gain_metric} (PSNR-Y gain over Lanczos, dB), minimize latency "
        f"({state.latency_stat}, ms) on **{state.device_name}**. "
        f"{state.finished} of {state.budget_trials if state.budget_trials is not None else '?'} trials done"
        f"{' (in progress)' if state.in_progress else ''}. The front is selected on the val split; "
        "test columns report the same networks on the held-out test split, over Lanczos and over the "
        "least-squares linear x4 filter fitted on the training split (what the architecture adds).\n"
    )
    if not front:
        return head + "\nNo feasible trained trial yet, so the front is empty.\n"
    header = ["trial", "arch", "val gain [dB]", "test gain [dB]", "test vs linear [dB]", *[f"test QP{q} [dB]" for q in qps],
              "latency [ms]", "MACs [G]", "params [k]", "preset"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if h not in ("arch", "preset") else "---" for h in header) + "|"]
    for t in front:
        per_qp = t.per_qp_gain("test")
        cells = [
            str(t.source_trial),
            f"`{_md_escape(t.arch_summary)}`",
            _fmt(t.gain_db, "+.3f"),
            _fmt(t.metric(state.gain_metric, split="test"), "+.3f"),
            _fmt(t.metric(linear_metric(state.gain_metric), split="test"), "+.3f"),
            *[_fmt(per_qp.get(q), "+.3f") for q in qps],
            _fmt(t.latency_ms, ".3f"),
            _fmt(None if t.macs is None else t.macs / 1e9, ".3f"),
            _fmt(None if t.n_params is None else t.n_params / 1e3, ".1f"),
            t.preset or "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n" + "\n".join(lines) + "\n"
