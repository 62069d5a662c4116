"""The calibration page (`calibration.html`): gain at each rung vs gain after long training.

Why a page of its own: a calibration is not a search run (no Optuna study, no latency), so it does not
go through `nas.runstate`; the page is built from the summary dict that `nas.calibrate.summarize`
returns (also `calibration.json`) and is self-contained (plotly.js inlined) like the run dashboard.
One scatter per rung, sampled archs and presets marked apart, Spearman with its interval in the
legend, and the text report's tables rendered below.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

from nas.calibrate.stats import format_interval
from search_space.configio import atomic_write

__all__ = ["CALIBRATION_HTML", "calibration_figure", "render_calibration_html", "write_calibration_html"]

CALIBRATION_HTML = "calibration.html"
_COLORS = ("#8fb8de", "#4f8fcc", "#2b5d9b", "#173a66", "#0b1d33")
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1200px; padding: 16px 24px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; } td, th { border: 1px solid #ddd; padding: 2px 8px; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; } p.lead { font-weight: 600; }
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def calibration_figure(summary: dict[str, Any]) -> Any:
    """Scatter of val gain at each rung (y) vs at the long budget (x), one trace per rung and source."""
    import plotly.graph_objects as go

    b = summary["budgets"]
    long_key = str(b["long_steps"])
    fig = go.Figure()
    for index, steps in enumerate(b["rungs"]):
        stats = summary["groups"]["space"][index]
        for source, symbol in (("sampled", "circle"), ("preset", "diamond")):
            archs = [a for a in summary["archs"] if a["source"] == source
                     and a["val_gain_db"].get(str(steps)) is not None and a["val_gain_db"].get(long_key) is not None]
            if not archs:
                continue
            name = (f"{b['labels'][index]}: Spearman {format_interval(stats['spearman'])} (sampled, n = {stats['n']})" if source == "sampled"
                    else f"{b['labels'][index]}: presets")
            fig.add_trace(go.Scatter(
                x=[a["val_gain_db"][long_key] for a in archs], y=[a["val_gain_db"][str(steps)] for a in archs],
                mode="markers", name=name, legendgroup=str(index),
                marker=dict(symbol=symbol, size=9, color=_COLORS[index % len(_COLORS)], line=dict(width=1, color="#333")),
                text=[f"{a['name']} {a['summary']}<br>{a['macs_g']:.2f} GMACs" for a in archs],
                hovertemplate="%{text}<br>long %{x:+.3f} dB, rung %{y:+.3f} dB<extra></extra>",
            ))
    fig.update_layout(template="plotly_white", height=560, legend=dict(orientation="h", y=-0.2),
                      title=f"val {summary['metric']} over Lanczos: each rung vs {b['labels'][-1]} ({summary['device']})",
                      xaxis_title=f"{b['labels'][-1]}: gain [dB]", yaxis_title="gain at the rung [dB]")
    return fig


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{_esc(c)}</td>' if i else f"<td>{_esc(c)}</td>" for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _stats_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    def num(v: float | None, spec: str) -> str:
        return "n/a" if v is None else format(v, spec)

    return [[r["label"], str(r["n"]), format_interval(r["spearman"]), format_interval(r["kendall"]),
             f"{num(r['pairwise']['accuracy'], '.2f')} ({r['pairwise']['pairs']})",
             f"{r['front']['recovered']}/{len(r['front']['long_front'])}", num(r["front"]["hv_ratio"], ".2f")] for r in rows]


def render_calibration_html(summary: dict[str, Any]) -> str:
    """The whole page as one HTML string (plotly.js included)."""
    from plotly.offline import get_plotlyjs

    b, p, noise = summary["budgets"], summary["primary"], summary["noise_ceiling"]
    long_label = b["labels"][-1]
    header = [f"budget vs {long_label}", "n", "Spearman [95 % CI]", "Kendall [95 % CI]", "pairwise acc. (pairs)",
              "long front recovered", "HV ratio"]
    lead = (f"Rung that decides the last promotion ({b['labels'][p['rung']]}), {p['group']} archs: Spearman {format_interval(p['spearman'])} "
            f"vs {long_label} (target >= {p['target']:.1f}).")
    sections = [
        f"<p>Command: <code>{_esc(summary['command'])}</code><br>Device: {_esc(summary['device'])}<br>Budgets: "
        f"{_esc(', '.join(b['labels']))} (stable steps; val {_esc(summary['metric'])} over Lanczos in dB)<br>"
        f"Done: {summary['tasks_done']} of {summary['tasks']} trainings</p><p class=\"lead\">{_esc(lead)}</p>",
        calibration_figure(summary).to_html(full_html=False, include_plotlyjs=False, div_id="calibration-scatter",
                                            config={"displaylogo": False, "responsive": True}),
        "<h2>Sampled archs (the study's space)</h2>" + _table(header, _stats_rows(summary["groups"]["space"])),
        "<h2>Whole panel (sampled + presets)</h2>" + _table(header, _stats_rows(summary["groups"]["panel"])),
        f"<h2>Noise ceiling</h2><p>{_esc(long_label)}, two seeds on {noise['n']} archs: Spearman {_esc(format_interval(noise['spearman']))}; "
        f"mean |seed difference| {_esc('n/a' if noise['mean_abs_diff_db'] is None else format(noise['mean_abs_diff_db'], '.3f'))} dB</p>",
        "<h2>Presets vs Table 1 Delta (direction only)</h2>" + _table(
            ["budget", "n presets", "Spearman"],
            [[r["label"], str(r["n"]), "n/a" if r["spearman"] is None else f"{r['spearman']:+.2f}"] for r in summary["presets_vs_table1"]]),
        "<h2>Archs</h2>" + _table(
            ["arch", "MACs [G]", *[f"{label} [dB]" for label in b["labels"]], "second seed [dB]"],
            [[f"{a['name']} ({a['source']}) {a['summary']}", f"{a['macs_g']:.2f}",
              *["n/a" if a["val_gain_db"][str(s)] is None else f"{a['val_gain_db'][str(s)]:+.3f}" for s in [*b["rungs"], b["long_steps"]]],
              "n/a" if a["long_seed2_gain_db"] is None else f"{a['long_seed2_gain_db']:+.3f}"] for a in summary["archs"]]),
    ]
    meta = json.dumps({"primary": p, "groups": {g: [{"steps": r["steps"], "n": r["n"], "spearman": r["spearman"]["estimate"]}
                                                    for r in rows] for g, rows in summary["groups"].items()}}).replace("</", "<\\/")
    title = f"rtsr-nas calibration: {summary['study']}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(title)}</title><style>{_CSS}</style><script type=\"text/javascript\">{get_plotlyjs()}</script></head>"
            f"<body><h1>{_esc(title)}</h1>{''.join(sections)}"
            f'<script type="application/json" id="calibration-meta">{meta}</script></body></html>\n')


def write_calibration_html(summary: dict[str, Any], out_dir: str | os.PathLike[str]) -> Path:
    """Write `<out_dir>/calibration.html` atomically; returns its path."""
    return atomic_write(Path(out_dir) / CALIBRATION_HTML, render_calibration_html(summary))
