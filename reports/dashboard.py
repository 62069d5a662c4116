"""The run dashboard: one self-contained HTML file (plotly.js inlined) that opens offline.

Why one file: a run directory is copied between machines (cluster -> laptop) and opened where there
may be no network, so nothing is fetched from a CDN. The page is rebuilt from a read-only snapshot
(`nas.runstate.load_run`), so it can be built at any time, also while `nas.run` is still writing the
run; only `dashboard.html` and `trials.csv` are written, each atomically.

Besides the figures the page embeds a machine-readable summary (`<script id="dashboard-meta"
type="application/json">`: point counts per Pareto trace, the Pareto trial numbers) so tools and
tests can check the rendered plot against the data.

A successive-halving run adds a rung-to-rung section, a rung column in the trials table (one row per
record: a trial promoted twice has three rows) and the rungs in the summary.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nas.runstate import RunState, load_run, write_output
from reports import figures as F
from reports import halving_figures as H
from reports.extensions import ablation_parts
from reports.tables import trial_rows, write_trials_csv

__all__ = ["DASHBOARD_HTML", "build_dashboard", "render_dashboard"]

DASHBOARD_HTML = "dashboard.html"

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1360px; padding: 16px 24px; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.summary td { padding: 2px 12px 2px 0; vertical-align: top; } .summary td:first-child { color: #666; white-space: nowrap; }
.banner { background: #fff6d6; border: 1px solid #e6c200; padding: 6px 10px; border-radius: 4px; }
.note { color: #555; font-size: 0.92em; } .warn { background: #fdecea; border: 1px solid #d62728; padding: 6px 10px; border-radius: 4px; }
.other-machine { border: 2px dashed #6a3d9a; padding: 8px; border-radius: 6px; background: #faf7fd; }
nav a { margin-right: 14px; }
.scroll { overflow-x: auto; } table.trials { border-collapse: collapse; font-size: 0.78em; width: 100%; }
table.trials th { background: #f0f0f0; cursor: pointer; user-select: none; }
table.trials th[data-dir=asc]::after { content: " \\25B2"; } table.trials th[data-dir=desc]::after { content: " \\25BC"; }
table.trials td, table.trials th { border: 1px solid #ddd; padding: 2px 6px; }
table.trials td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.trials td.arch { min-width: 200px; font-family: ui-monospace, monospace; font-size: 0.92em; } table.trials td.reason { min-width: 150px; }
tr.pareto td { font-weight: 600; background: #eef4fc; } tr.failed td, tr.crashed td { background: #fdecea; }
tr.skipped td { color: #888; } tr.running td, tr.waiting td { background: #fffbe6; }
"""

# Sorts a table by the clicked column: numbers numerically, text alphabetically, blanks always last.
_SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("data-dir") !== "asc";
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("data-dir"); });
      th.setAttribute("data-dir", asc ? "asc" : "desc");
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute("data-v"), y = b.cells[col].getAttribute("data-v");
        if (x === "" || y === "") { return (x === "") - (y === ""); }
        var nx = Number(x), ny = Number(y), c;
        c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""

_TABLE_COLUMNS = (
    "trial", "status", "pareto", "feasible", "preset", "arch", "gain_db", "latency_ms", "macs_g", "params_k",
    "reason", "train_s", "retries", "duplicate_of",
)


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _figure_html(fig: Any, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config={"displaylogo": False, "responsive": True})


def _summary(state: RunState) -> str:
    info = state.info
    study = state.study
    counts = state.counts()
    proxy = study.get("proxy", {})
    rows = [
        ("study", f"{state.study_name} — {study.get('description', '')}"),
        ("run", f"{state.run_id} in {state.run_dir}"),
        ("latency device", state.device_name),
        ("latency protocol", info.get("latency_protocol_description", "")),
        ("objectives", (f"maximize {state.gain_metric} (PSNR-Y gain over Lanczos at QP {', '.join(map(str, state.qps))}), "
                        f"minimize latency {state.latency_stat}")),
        ("constraints", ", ".join(filter(None, [
            f"latency <= {state.latency_budget_ms:g} ms" if state.latency_budget_ms is not None else "",
            f"MACs <= {state.macs_budget_g:g} G" if state.macs_budget_g is not None else "",
        ])) or "none"),
        ("proxy training", f"recipe {proxy.get('recipe', '?')}, {proxy.get('steps', '?')} steps, data {study.get('data', {}).get('train', '?')}"),
        ("trials", f"{state.finished} of {state.budget_trials if state.budget_trials is not None else '?'} done; "
                   + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))),
        *_halving_summary(state),
        ("generated", datetime.now(timezone.utc).isoformat(timespec="seconds")),
    ]
    body = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in rows)
    banner = ""
    if state.in_progress:
        running = sum(1 for t in state.trials if t.state == "RUNNING")
        banner = (f'<p class="banner">Run in progress (or stopped early): {state.finished} of {state.budget_trials} trials done, '
                  f"{running} running. Rebuild with <code>python -m reports --run {_esc(state.run_dir)}</code>.</p>")
    return f'<table class="summary">{body}</table>{banner}'


def _halving_summary(state: RunState) -> list[tuple[str, str]]:
    """Summary rows of a successive-halving run (none for a single-fidelity run)."""
    if state.halving is None:
        return []
    top, _ = state.top_rung_trials
    trained = "; ".join(
        f"{F.rung_label(state, k)}: {sum(1 for t in records if t.trained)} trained"
        + (f", {sum(1 for t in records if t.state == 'FAIL')} failed" if any(t.state == "FAIL" for t in records) else "")
        for k, records in state.rungs.items()
    )
    front = f"the front shown is from {F.rung_label(state, top)}" + (
        f" (the top rung, {state.planned_top_rung}, has no trained record yet)" if top < state.planned_top_rung else "")
    return [("successive halving", H.halving_note(state).removeprefix("successive halving: ")), ("rungs", f"{trained}; {front}")]


_FORMATS = {"gain_db": "+.3f", "latency_ms": ".2f", "macs_g": ".3f", "params_k": ".1f", "train_s": ".1f"}


def _cell(column: str, value: Any) -> tuple[str, str, bool]:
    """(shown text, sort key, numeric?) of one table cell."""
    if value is None or value == "":
        return "", "", False
    if isinstance(value, bool):
        return ("yes" if value else "no"), ("1" if value else "0"), False
    if isinstance(value, (int, float)):
        spec = "+.3f" if column.startswith("gain_") else _FORMATS.get(column, "")
        return format(value, spec), repr(value), True
    return str(value), str(value), False


_LABELS = {"gain_db": "gain [dB]", "latency_ms": "latency [ms]", "macs_g": "MACs [G]", "params_k": "params [k]",
           "train_s": "train [s]", "duplicate_of": "dup. of", "pareto": "Pareto"}


def _label(column: str) -> str:
    """Header text of a CSV column (e.g. gain_qp31_db -> 'QP31 [dB]')."""
    if column.startswith("gain_qp") and column.endswith("_db"):
        return f"QP{column[7:-3]} [dB]"
    return _LABELS.get(column, column)


def _record_rows(state: RunState) -> list[dict[str, Any]]:
    """The table's rows: `trial_rows` for a single-fidelity run; for a halving run one row per record
    of every rung, named by its rung-0 trial and its rung, a trial's rungs next to each other."""
    if state.halving is None:
        return trial_rows(state)
    rows = []
    for k, records in state.rungs.items():
        for t, row in zip(records, trial_rows(replace(state, trials=records, upper_rungs={}))):
            rows.append({**row, "trial": t.source_trial, "rung": k, "_order": (t.source_trial, k, t.number)})
    rows.sort(key=lambda r: r.pop("_order"))
    return rows


def _trials_table(state: RunState) -> str:
    rows = _record_rows(state)
    qcols = [k for k in (rows[0] if rows else {}) if k.startswith("gain_qp")]
    first = list(_TABLE_COLUMNS[:1]) + (["rung"] if state.halving is not None else []) + list(_TABLE_COLUMNS[1:7])
    columns = first + qcols + list(_TABLE_COLUMNS[7:])
    head = "".join(f'<th data-col="{_esc(c)}">{_esc(_label(c))}</th>' for c in columns)
    body = []
    for row in rows:
        classes = [row["status"]] + (["pareto"] if row["pareto"] else [])
        cells = []
        for c in columns:
            text, key, numeric = _cell(c, row.get(c))
            cls = "num" if numeric else (c if c in ("arch", "reason") else "")
            cells.append(f'<td data-v="{_esc(key)}"{f" class={cls}" if cls else ""}>{_esc(text)}</td>')
        body.append(f'<tr class="{" ".join(classes)}">{"".join(cells)}</tr>')
    if not body:
        return '<p class="note">No trials yet.</p>'
    return (f'<div class="scroll"><table id="trials-table" class="trials sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _meta(state: RunState, sections: list[str]) -> str:
    parts = F.pareto_partition(state)
    meta: dict[str, Any] = {
        "study": state.study_name,
        "run_id": state.run_id,
        "device": state.device_name,
        "pareto_trials": [t.source_trial for t in state.pareto()],
        "pareto_points": {name: len(trials) for name, trials in parts.items()},
        "pareto_points_total": sum(len(trials) for trials in parts.values()),
        "trials": len(state.trials),
        "in_progress": state.in_progress,
        "sections": sections,
    }
    if state.halving is not None:
        meta["front_rung"] = state.top_rung_trials[0]
        meta["rungs"] = {str(k): len(records) for k, records in state.rungs.items()}
        meta["table_rows"] = sum(len(records) for records in state.rungs.values())
        meta["rung_pairs"] = [{"rungs": [p.lower, p.upper], "trials": list(p.trials), "spearman": p.spearman}
                              for p in H.rung_pairs(state)]
    text = json.dumps(meta, sort_keys=True).replace("</", "<\\/")
    return f'<script type="application/json" id="dashboard-meta">{text}</script>'


def render_dashboard(state: RunState, *, storage: str | None = None) -> str:
    """The dashboard page of `state` as one HTML string (plotly.js included).

    `storage`: the URL `state` was read with, for the ablation part, which reads the run again."""
    from plotly.offline import get_plotlyjs

    sections: list[tuple[str, str, str]] = []  # (id, title, html)
    front = "Pareto front (this run)"
    if state.halving is not None:
        front = f"Pareto front (this run, {F.rung_label(state, state.top_rung_trials[0])})"
    sections.append(("pareto", front, _figure_html(F.pareto_figure(state), "pareto")))

    survey, missing = F.survey_figure()
    missing_note = f" Not shown (no Delta or runtime in Table 1): {', '.join(missing)}." if missing else ""
    sections.append((
        "survey",
        "Published results: AIS 2024 Table 1 (a different machine)",
        '<div class="other-machine"><p class="note">Delta and runtime as printed in the survey (RTX 4090, FP16, challenge '
        "protocol). They were not measured here and are kept out of the front above: runtimes on different machines "
        f"cannot be compared. The presets measured by this run appear in the front, labelled.{_esc(missing_note)}</p>"
        + _figure_html(survey, "survey") + "</div>",
    ))
    sections.append(("macs", "Gain vs MACs", _figure_html(F.gain_vs_macs_figure(state), "macs")))
    sections.append(("per-qp", "Per-QP gain of the Pareto trials", _figure_html(F.per_qp_figure(state), "per-qp")))
    if state.halving is not None:
        sections.append(("rungs", "Rung to rung: do short trainings rank trials like long ones?",
                         _figure_html(H.rung_to_rung_figure(state), "rungs")))
    sections.append(("hypervolume", "Hypervolume over trials and over compute time",
                     _figure_html(F.hypervolume_figure(state), "hypervolume")
                     + _figure_html(H.hypervolume_time_figure(state), "hypervolume-time")))
    importance, why = F.importance_figure(state)
    sections.append((
        "importance",
        "Parameter importance",
        _figure_html(importance, "importance") if importance is not None
        else f'<p id="importance-message" class="note">{_esc(why)}.</p>',
    ))

    ablation = ablation_parts(state.run_dir)
    if ablation is not None and ablation.figures is not None:
        try:
            # `storage` only when there is one: an extension may take the run dir alone
            figs = list(ablation.figures(state.run_dir) if storage is None else ablation.figures(state.run_dir, storage=storage))
        except Exception as exc:  # noqa: BLE001 - the rest of the page is still worth having
            sections.append(("ablation", "Ablation", f'<p class="warn">ablation figures failed: {_esc(type(exc).__name__)}: {_esc(exc)}</p>'))
        else:
            for i, fig in enumerate(figs, start=1):
                title = getattr(getattr(fig.layout, "title", None), "text", None) or f"Ablation figure {i}"
                sections.append((f"ablation-{i}", f"Ablation: {html.unescape(str(title)).split('<br>')[0]}", _figure_html(fig, f"ablation-{i}")))

    sections.append(("trials", "All trials", '<p class="note">Click a column header to sort. Failed and skipped trials '
                     "are listed with their reasons.</p>" + _trials_table(state)))

    nav = "".join(f'<a href="#sec-{sid}">{_esc(title)}</a>' for sid, title, _ in sections)
    body = "".join(f'<section id="sec-{sid}"><h2>{_esc(title)}</h2>{content}</section>' for sid, title, content in sections)
    title = f"rtsr-nas: {state.study_name} ({state.run_id})"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_esc(title)}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"<h1>{_esc(title)}</h1>{_summary(state)}<nav>{nav}</nav>{body}"
        f"{_meta(state, [sid for sid, _, _ in sections])}<script>{_SORT_JS}</script></body></html>\n"
    )


def build_dashboard(run_dir: str | os.PathLike[str], *, out: str | os.PathLike[str] | None = None, storage: str | None = None) -> Path:
    """Write `<run_dir>/dashboard.html` (or `out`) and `<run_dir>/trials.csv`; returns the HTML path.

    Read-only on the run (see `nas.runstate.load_run`): safe while `nas.run` is running.
    """
    state = load_run(run_dir, storage=storage)
    target = Path(out) if out is not None else state.run_dir / DASHBOARD_HTML
    write_output(target, render_dashboard(state, storage=storage))
    write_trials_csv(state)
    return target
