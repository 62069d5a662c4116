"""Plotly figures of one run (each a function of a `RunState`; the dashboard lays them out).

Why these figures: the search's result is a trade-off, so the main view is the Pareto front of
PSNR-Y gain vs latency on the run's own device, with the published designs that the run measured
as labelled anchors. The survey's Table 1 numbers come from another machine (an RTX 4090) and
therefore get their own panel: mixing them into our front would compare latencies across devices.
The remaining views explain the front: gain vs MACs (is latency just MACs?), per-QP gains (is a
design good only on light compression?), hypervolume over trials (has the search converged?) and
parameter importance per objective (which choices matter).

A successive-halving run (`nas.halving`) marks each point here with its rung (`rung_label`,
`trial_label`) and draws the top rung's front; the views that halving adds (rung to rung, and
hypervolume over compute time) live in `reports.halving_figures`, which builds on this module.
"""

from __future__ import annotations

import html
import math
import textwrap
import warnings
from collections.abc import Sequence
from typing import Any

from nas.runstate import RunState
from nas.trial_record import Key, TrialRecord, TrialStatus, finite_or_none, linear_metric
from reports.hypervolume import hypervolume_curve

__all__ = [
    "MIN_IMPORTANCE_TRIALS",
    "PARETO_TRACES",
    "gain_vs_macs_figure",
    "hypervolume_figure",
    "hypervolume_reference",
    "importance_figure",
    "param_importances",
    "pareto_figure",
    "pareto_partition",
    "per_qp_figure",
    "rung_label",
    "survey_figure",
    "trial_label",
]

#: Fewer trained trials than this and parameter importance says nothing; the page says so instead.
MIN_IMPORTANCE_TRIALS = 5
#: Trace names of the Pareto plot, in drawing order (tests and readers look them up by name).
PARETO_TRACES: tuple[str, ...] = ("dominated (feasible)", "infeasible (trained)", "Pareto front", "published presets (this run)")

_FRONT = "#1f63b4"
_GREY = "#b4b4b4"
_INFEASIBLE = "#d62728"
_PRESET = "#ff7f0e"
#: Rung k of a halving run: lighter and rounder for short trainings, darker for long ones.
_RUNG_COLORS = ("#b4b4b4", "#8fb8de", "#4f8fcc", "#2b5d9b", "#173a66")
_RUNG_SYMBOLS = ("circle", "square", "diamond", "star", "hexagon")
_LAYOUT = dict(template="plotly_white", margin=dict(l=70, r=30, t=80, b=60), hoverlabel=dict(align="left"))


def _esc(text: object) -> str:
    return html.escape(str(text), quote=False)


def _vs_linear(t: TrialRecord, state: RunState, split: str) -> str:
    value = t.metric(linear_metric(state.gain_metric), split=split)
    return "" if value is None else f"; {value:+.3f} dB over the linear baseline"


#: The Pareto plot's gain toggle: (button label, split, baseline). The front is chosen on val.
GAIN_VIEWS: tuple[tuple[str, str, str], ...] = (
    ("gain over Lanczos, val (selection)", "val", "lanczos"),
    ("gain over Lanczos, test", "test", "lanczos"),
    ("gain over the linear baseline, val", "val", "linear"),
    ("gain over the linear baseline, test", "test", "linear"),
)


def gain_of(t: TrialRecord, state: RunState, *, split: str, baseline: str) -> float | None:
    """A trial's objective gain in dB on `split` over `baseline` ('lanczos' or 'linear')."""
    name = state.gain_metric if baseline == "lanczos" else linear_metric(state.gain_metric)
    return t.metric(name, split=split)


def _gain_toggle(fig: Any, traces: Sequence[Sequence[TrialRecord]], state: RunState) -> None:
    """Buttons that switch every trace's y between val/test and Lanczos/linear-baseline gains."""
    buttons = []
    for label, split, baseline in GAIN_VIEWS:
        ys = [[gain_of(t, state, split=split, baseline=baseline) for t in trials] for trials in traces]
        base = "Lanczos" if baseline == "lanczos" else "the linear baseline (least-squares 7x7, fitted on train)"
        title = f"PSNR-Y gain over {base} ({state.gain_metric}, {split} split) [dB]"
        buttons.append(dict(label=label, method="update", args=[{"y": ys}, {"yaxis.title.text": title}]))
    fig.update_layout(updatemenus=[dict(type="dropdown", buttons=buttons, x=1.0, xanchor="right", y=1.13, yanchor="top",
                                        showactive=True, active=0)])


def rung_label(state: RunState, rung: int) -> str:
    """'rung 1 (300 steps)': a rung named by the training it stands for."""
    steps = state.rung_steps(rung)
    return f"rung {rung}" + (f" ({steps} steps)" if steps is not None else "")


def trial_label(t: TrialRecord) -> str:
    """'trial 5', or 'trial 5 (rung 2)' for a promoted record: trials are known by their rung-0 number."""
    return f"trial {t.source_trial}" + (f" (rung {t.rung})" if t.rung else "")


def _rung_hover(t: TrialRecord, state: RunState) -> list[str]:
    """What a halving run adds to a point's hover: its rung, and the seeds of a top-rung record."""
    if state.halving is None:
        return []
    lines = [f"{_esc(rung_label(state, t.rung))}" + (f", record {t.number} of the rung-{t.rung} study" if t.rung else "")]
    seeds = t.attrs.get(Key.SEED_GAINS)
    if isinstance(seeds, dict) and seeds:
        per_seed = ", ".join(f"seed {k} {float(v):+.3f}" for k, v in sorted(seeds.items()))
        spread = finite_or_none(t.attrs.get(Key.SEED_SPREAD))
        lines.append(f"mean of {len(seeds)} seeds: {per_seed} dB" + (f" (spread {spread:.3f} dB)" if spread is not None else ""))
    return lines


def _hover(t: TrialRecord, state: RunState) -> str:
    lines = [f"<b>trial {t.source_trial}</b>" + (f" - preset <b>{_esc(t.preset)}</b>" if t.preset else ""), _esc(t.arch_summary)]
    lines += _rung_hover(t, state)
    if t.gain_db is not None:
        lines.append(f"gain {t.gain_db:+.3f} dB ({_esc(state.gain_metric)}, val)" + _vs_linear(t, state, "val"))
        test = t.metric(state.gain_metric, split="test")
        if test is not None:
            lines.append(f"test: gain {test:+.3f} dB" + _vs_linear(t, state, "test"))
    per_qp = t.per_qp_gain()
    if per_qp:
        lines.append("per QP: " + ", ".join(f"QP{q} {g:+.3f}" for q, g in per_qp.items()) + " dB")
    if t.latency_ms is not None:
        lines.append(f"latency {t.latency_ms:.3f} ms ({_esc(state.latency_stat)}, {_esc(state.device_name)})")
    if t.macs is not None and t.n_params is not None:
        lines.append(f"MACs {t.macs / 1e9:.3f} G, params {t.n_params / 1e3:.1f} k")
    flags = [t.status] + (["Pareto"] if t.pareto else []) + (["infeasible"] if t.feasible is False else [])
    lines.append(", ".join(flags))
    return "<br>".join(lines)


def _scatter(trials: Sequence[TrialRecord], state: RunState, *, name: str, x: str, **style: Any) -> Any:
    import plotly.graph_objects as go

    xs = [t.latency_ms if x == "latency" else (t.macs or 0) / 1e9 for t in trials]
    return go.Scatter(
        x=xs,
        y=[t.gain_db for t in trials],
        name=name,
        customdata=[[_hover(t, state), t.source_trial] for t in trials],
        hovertemplate="%{customdata[0]}<extra></extra>",
        **style,
    )


def _pareto_parts(state: RunState) -> list[tuple[str, str, list[TrialRecord]]]:
    """(trace name, kind, trials) of each Pareto-plot trace, in drawing order.

    Kinds: 'dominated', 'rung:<k>' (a halving run's dominated points of rung k), 'infeasible',
    'front', 'presets'."""
    if state.halving is None:
        ok = [t for t in state.trials if t.trained and t.status == TrialStatus.OK]
        return [
            ("dominated (feasible)", "dominated", [t for t in ok if not t.pareto and t.feasible is not False]),
            ("infeasible (trained)", "infeasible", [t for t in ok if t.feasible is False]),
            ("Pareto front", "front", state.pareto()),
            ("published presets (this run)", "presets", sorted((t for t in ok if t.preset), key=lambda t: t.number)),
        ]
    parts: list[tuple[str, str, list[TrialRecord]]] = []
    infeasible: list[TrialRecord] = []
    highest: dict[int, TrialRecord] = {}  # a preset is labelled at the longest training it reached
    for k, records in state.rungs.items():
        ok = sorted((t for t in records if t.trained and t.status == TrialStatus.OK), key=lambda t: (t.source_trial, t.number))
        parts.append((rung_label(state, k), f"rung:{k}", [t for t in ok if not t.pareto and t.feasible is not False]))
        infeasible += [t for t in ok if t.feasible is False]
        highest.update({t.source_trial: t for t in ok if t.preset})
    top, _ = state.top_rung_trials
    parts += [
        ("infeasible (trained)", "infeasible", infeasible),
        (f"Pareto front: {rung_label(state, top)}", "front", state.pareto()),
        ("published presets (this run)", "presets", [highest[n] for n in sorted(highest)]),
    ]
    return parts


def pareto_partition(state: RunState) -> dict[str, list[TrialRecord]]:
    """The trials of each Pareto-plot trace, by trace name in drawing order (`PARETO_TRACES` for a
    single-fidelity run; a halving run has one 'rung k (N steps)' trace per rung instead of
    'dominated (feasible)', and its front trace names the top rung).

    Only trials trained in this run are points (status "ok"); a duplicate repeats its original's
    point and a skipped trial has no measured gain. Presets are drawn a second time, labelled.
    """
    return {name: trials for name, _, trials in _pareto_parts(state)}


def _rung_marker(rung: int, *, size: int = 9) -> dict[str, Any]:
    return dict(color=_RUNG_COLORS[min(rung, len(_RUNG_COLORS) - 1)], size=size, symbol=_RUNG_SYMBOLS[rung % len(_RUNG_SYMBOLS)],
                line=dict(color="#666", width=0.5))


def _axis_budget(fig: Any, *, value: float | None, observed: Sequence[float], label: str, vertical: bool = True) -> str:
    """Draw a budget line if it lies near the data; otherwise say it is off scale (returned note)."""
    if value is None:
        return ""
    if observed and value > 1.5 * max(observed):
        return f"{label} {value:g} (off scale)"
    fig.add_vline(x=value, line=dict(color=_INFEASIBLE, dash="dash", width=1), annotation_text=f"{label} {value:g}",
                  annotation_position="top left")
    return ""


def pareto_figure(state: RunState) -> Any:
    """PSNR-Y gain vs latency on the run's device: front, dominated (grey), infeasible, presets."""
    import plotly.graph_objects as go

    parts = _pareto_parts(state)
    fig = go.Figure()
    for name, kind, trials in parts:
        if kind == "dominated":
            fig.add_trace(_scatter(trials, state, name=name, x="latency", mode="markers",
                                   marker=dict(color=_GREY, size=9, line=dict(color="#888", width=0.5))))
        elif kind.startswith("rung:"):
            fig.add_trace(_scatter(trials, state, name=name, x="latency", mode="markers", marker=_rung_marker(int(kind[5:]))))
        elif kind == "infeasible":
            fig.add_trace(_scatter(trials, state, name=name, x="latency", mode="markers",
                                   marker=dict(color=_INFEASIBLE, size=9, symbol="x", opacity=0.45)))
        elif kind == "front":
            fig.add_trace(_scatter(trials, state, name=name, x="latency", mode="lines+markers",
                                   line=dict(color=_FRONT, shape="hv", width=1.5), marker=dict(color=_FRONT, size=11)))
        else:
            fig.add_trace(_scatter(trials, state, name=name, x="latency", mode="markers+text",
                                   text=[t.preset for t in trials], textposition="top center", textfont=dict(color="#a64d00"),
                                   marker=dict(color=_PRESET, size=19, symbol="diamond-open", line=dict(color=_PRESET, width=2))))
    by_kind = {kind: trials for _, kind, trials in parts}
    lat = [t.latency_ms for t in state.trials if t.trained and t.latency_ms is not None]
    off = _axis_budget(fig, value=state.latency_budget_ms, observed=lat, label="latency budget [ms]")
    skipped = sum(1 for t in state.trials if t.status == TrialStatus.SKIPPED)
    dups = sum(1 for t in state.trials if t.status == TrialStatus.DUPLICATE)
    if state.halving is None:
        note = [(f"{len(by_kind['front'])} Pareto, {len(by_kind['dominated'])} dominated, "
                 f"{len(by_kind['infeasible'])} infeasible trained trials")]
    else:
        top, _ = state.top_rung_trials
        counts = ", ".join(f"{len(trials)} at rung {kind[5:]}" for _, kind, trials in parts if kind.startswith("rung:"))
        note = [f"front of {rung_label(state, top)}: {len(by_kind['front'])} Pareto; dominated points: {counts}; "
                f"{len(by_kind['infeasible'])} infeasible trained"]
    if skipped:
        note.append(f"{skipped} infeasible trials not trained (not shown)")
    if dups:
        note.append(f"{dups} duplicates (same point as their original)")
    if off:
        note.append(off)
    _gain_toggle(fig, [trials for _, _, trials in parts], state)
    fig.update_layout(
        title=dict(text=f"Pareto front: PSNR-Y gain vs latency on {_esc(state.device_name)}<br><sup>{_esc('; '.join(note))}</sup>"),
        xaxis_title=f"latency ({state.latency_stat}) [ms] on {state.device_name}",
        yaxis_title=f"PSNR-Y gain over Lanczos ({state.gain_metric}, val split) [dB]",
        legend=dict(orientation="h", y=-0.18),
        height=560,
        **_LAYOUT,
    )
    if not lat:
        fig.add_annotation(text="no trained trial yet", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5, font=dict(size=18))
    return fig


def survey_figure() -> tuple[Any, list[str]]:
    """Table 1 of the AIS 2024 survey (Delta vs runtime on its RTX 4090), and presets left out."""
    import plotly.graph_objects as go

    from search_space.presets import get_preset, list_presets

    rows = [get_preset(name) for name in list_presets()]
    shown = [p for p in rows if p.delta_db is not None and p.runtime_ms is not None]
    missing = [p.name for p in rows if p not in shown]
    fig = go.Figure()
    # How faithful our preset of each row is (search_space.presets): the marker says it.
    symbols = {"exact": "circle", "fitted": "square", "approximate": "triangle-up"}
    legends = {
        "exact": "preset exact (the team's code, layer for layer)",
        "fitted": "preset fitted (described; widths fitted to Table 1)",
        "approximate": "preset approximate (see hover for why)",
    }
    for status, symbol in symbols.items():
        group = [p for p in shown if p.status == status]
        if not group:
            continue
        fig.add_trace(
            go.Scatter(
                x=[p.runtime_ms for p in group],
                y=[p.delta_db for p in group],
                mode="markers+text",
                name=legends[status],
                text=[p.name for p in group],
                textposition="top center",
                marker=dict(size=11, symbol=symbol, color="#6a3d9a"),
                customdata=[[(f"<b>{_esc(p.name)}</b> ({_esc(p.team)})<br>Delta {p.delta_db:+.3f} dB, runtime {p.runtime_ms:.3f} ms"
                              f"<br>MACs {p.macs_g:g} G, params {p.params_m:g} M<br>score {p.score if p.score is not None else '-'}"
                              f"<br>our preset: <b>{p.status}</b>"
                              + ("<br>" + "<br>".join(_esc(line) for line in textwrap.wrap(p.note, 90)) if p.status == "approximate" else ""))]
                            for p in group],
                hovertemplate="%{customdata[0]}<extra>Table 1</extra>",
            )
        )
    fig.update_layout(
        title=dict(text="AIS 2024 survey, Table 1 (another machine: RTX 4090, FP16)"
                        "<br><sup>published numbers, not measured by this run; never compare these runtimes with the run's latencies</sup>"),
        xaxis_title="runtime on RTX 4090 [ms] (survey)",
        yaxis_title="Delta: PSNR-Y gain over Lanczos, mean of QP31 and QP63 [dB] (survey)",
        height=480,
        legend=dict(orientation="h", y=-0.2),
        **_LAYOUT,
    )
    return fig, missing


def gain_vs_macs_figure(state: RunState) -> Any:
    """Gain vs deploy MACs of every trained trial (Pareto trials in colour)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, kind, trials in _pareto_parts(state):
        if kind == "dominated":
            fig.add_trace(_scatter(trials, state, name=name, x="macs", mode="markers", marker=dict(color=_GREY, size=9)))
        elif kind.startswith("rung:"):
            fig.add_trace(_scatter(trials, state, name=name, x="macs", mode="markers", marker=_rung_marker(int(kind[5:]))))
        elif kind == "infeasible":
            fig.add_trace(_scatter(trials, state, name=name, x="macs", mode="markers",
                                   marker=dict(color=_INFEASIBLE, size=9, symbol="x", opacity=0.45)))
        elif kind == "front":
            fig.add_trace(_scatter(trials, state, name=f"{name} (gain vs latency)", x="macs", mode="markers",
                                   marker=dict(color=_FRONT, size=11)))
    macs = [(t.macs or 0) / 1e9 for t in state.trials if t.trained]
    off = _axis_budget(fig, value=state.macs_budget_g, observed=macs, label="MACs cap [G]")
    fig.update_layout(
        title=dict(text="Gain vs MACs (deploy form, 540x960 input)" + (f"<br><sup>{_esc(off)}</sup>" if off else "")),
        xaxis_title="MACs [G]",
        yaxis_title=f"PSNR-Y gain over Lanczos ({state.gain_metric}) [dB]",
        height=460,
        legend=dict(orientation="h", y=-0.2),
        **_LAYOUT,
    )
    return fig


def per_qp_figure(state: RunState) -> Any:
    """PSNR-Y gain at each QP for every Pareto trial."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for t in state.pareto():
        per_qp = t.per_qp_gain()
        label = trial_label(t) + (f" ({t.preset})" if t.preset else "")
        fig.add_trace(
            go.Scatter(
                x=[f"QP{q}" for q in per_qp],
                y=list(per_qp.values()),
                mode="lines+markers",
                name=label,
                customdata=[[_hover(t, state)]] * len(per_qp),
                hovertemplate="%{x}: %{y:+.3f} dB<br>%{customdata[0]}<extra></extra>",
            )
        )
    fig.update_layout(
        title=dict(text="Per-QP PSNR-Y gain of the Pareto trials"),
        xaxis_title="AVIF QP of the input (higher = stronger compression)",
        yaxis_title="PSNR-Y gain over Lanczos [dB]",
        height=440,
        **_LAYOUT,
    )
    if not state.pareto():
        fig.add_annotation(text="no Pareto trial yet", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5, font=dict(size=18))
    return fig


def hypervolume_reference(state: RunState) -> tuple[float, float, str]:
    """(ref gain dB, ref latency ms, how the latency was chosen)."""
    if state.latency_budget_ms is not None:
        return 0.0, state.latency_budget_ms, "the study's latency budget"
    lat = [t.latency_ms for t in state.trials if t.trained and t.latency_ms is not None]
    return 0.0, (max(lat) if lat else 1.0), "the slowest trained trial"


def _finish_order(state: RunState) -> list[TrialRecord]:
    """Trials that finished for good, in the order they finished."""
    done = [t for t in state.trials if t.counts_against_budget]
    return sorted(done, key=lambda t: (t.completed or "", t.number))


def _adds_area(t: TrialRecord) -> bool:
    """Whether a record is a hypervolume point: trained in this run, feasible, with a latency."""
    return t.trained and t.status == TrialStatus.OK and t.feasible is True and t.latency_ms is not None


def hypervolume_figure(state: RunState) -> Any:
    """Hypervolume of the feasible trained results after each finished trial (rung 0 of a halving run)."""
    import plotly.graph_objects as go

    ref_gain, ref_lat, why = hypervolume_reference(state)
    order = _finish_order(state)
    points: list[tuple[float, float]] = []
    for t in order:
        points.append((t.gain_db, t.latency_ms) if _adds_area(t) else (-math.inf, math.inf))  # type: ignore[arg-type]
    curve = hypervolume_curve(points, ref_gain=ref_gain, ref_latency=ref_lat)
    fig = go.Figure(
        go.Scatter(
            x=list(range(1, len(curve) + 1)),
            y=curve,
            mode="lines+markers",
            name="hypervolume",
            customdata=[[t.number, str(t.status)] for t in order],
            hovertemplate="after %{x} finished trials (last: trial %{customdata[0]}, %{customdata[1]})<br>%{y:.4g} dB·ms<extra></extra>",
            line=dict(shape="hv", color=_FRONT),
        )
    )
    if not curve or curve[-1] == 0.0:
        fig.add_annotation(text="no feasible trained trial beats Lanczos yet (gain > 0 dB), so the hypervolume is 0",
                           showarrow=False, xref="paper", yref="paper", x=0.5, y=0.75, font=dict(size=14))
    rung0 = f"; the sampler's trials at {rung_label(state, 0)}" if state.halving is not None else ""
    fig.update_layout(
        title=dict(text=f"Hypervolume over trials<br><sup>reference: gain {ref_gain:g} dB (Lanczos), latency {ref_lat:g} ms ({why}); "
                        f"only trials that beat Lanczos add area{_esc(rung0)}</sup>"),
        xaxis_title="finished trials (in finishing order)",
        yaxis_title="hypervolume [dB x ms]",
        height=420,
        **_LAYOUT,
    )
    return fig


def param_importances(state: RunState) -> tuple[list[dict[str, float]], str | None]:
    """Importance of each searched parameter for [gain, latency], or ([], why not).

    PED-ANOVA (Optuna's default since 5.0, and sklearn-free) is used explicitly so Optuna 4 and 5
    agree; it scores parameters for reaching *low* target values, so the maximized gain is negated.
    """
    ok = [t.number for t in state.trials if t.trained and t.status == TrialStatus.OK]
    if len(ok) < MIN_IMPORTANCE_TRIALS:
        return [], (f"parameter importance needs at least {MIN_IMPORTANCE_TRIALS} trained trials; this run has {len(ok)} so far")
    import optuna

    try:
        evaluator_cls = optuna.importance.PedAnovaImportanceEvaluator
    except AttributeError:  # pragma: no cover - Optuna < 3.6
        return [], "parameter importance needs Optuna >= 3.6 (PED-ANOVA)"
    study = state.optuna_study(numbers=ok)
    targets = [lambda t: -t.values[0], lambda t: t.values[1]]
    out = []
    for target in targets:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                scores = optuna.importance.get_param_importances(study, evaluator=evaluator_cls(), target=target)
            except (RuntimeError, ValueError) as exc:
                return [], f"parameter importance could not be computed ({exc})"
        if any("will be equal" in str(w.message) for w in caught):
            return [], f"parameter importance is undefined with {len(ok)} trained trials (too few distinct results); rebuild later"
        out.append(dict(scores))
    if not any(out[0]) and not any(out[1]):
        return [], "no parameter varies across the trained trials"
    return out, None


def importance_figure(state: RunState) -> tuple[Any | None, str | None]:
    """Bar charts of parameter importance for each objective, or (None, why not)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    scores, why = param_importances(state)
    if why is not None:
        return None, why
    titles = [f"for {state.gain_metric} (max)", f"for latency {state.latency_stat} (min)"]
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=0.18)
    for col, table in enumerate(scores, start=1):
        items = sorted(table.items(), key=lambda kv: kv[1])
        fig.add_trace(
            go.Bar(x=[v for _, v in items], y=[k for k, _ in items], orientation="h", name=titles[col - 1],
                   marker_color=_FRONT if col == 1 else _PRESET, hovertemplate="%{y}: %{x:.3f}<extra></extra>"),
            row=1,
            col=col,
        )
    fig.update_layout(title=dict(text="Parameter importance (PED-ANOVA over the trained trials)"), showlegend=False,
                      height=max(360, 28 * max(len(s) for s in scores) + 160), **_LAYOUT)
    fig.update_xaxes(title_text="importance (normalized)")
    return fig, None
