"""The figures that only a successive-halving run needs, or that halving made necessary.

Why a module of its own: a halving run (`nas.halving`) trains each trial at rungs of growing length
and promotes the best to the next rung, and that adds to the dashboard what a single-fidelity run
does not have: the rungs themselves (`halving_note`), the rung-to-rung view (does a short training
rank trials like the longer one after it? Spearman's rho per pair of rungs, which is what the halving
bets on) and the hypervolume over compute time (a trial is no longer one unit of cost, so progress is
plotted against seconds of training instead of a trial count; a single-fidelity run gets that view
too, as the common yardstick). The general figures (`reports.figures`) mark points by rung with the
small helpers kept there (`rung_label`, `trial_label`); this module builds on them and
`reports.figures` never imports it, so the layering stays one-way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nas.ranks import MIN_RANK_PAIRS, spearman
from nas.runstate import RunState
from nas.trial_record import Key, TrialRecord, TrialStatus, finite_or_none
from reports.figures import (
    _FRONT,
    _LAYOUT,
    _adds_area,
    _esc,
    _hover,
    _rung_marker,
    hypervolume_reference,
    rung_label,
    trial_label,
)
from reports.hypervolume import hypervolume_curve

__all__ = [
    "MIN_SPEARMAN_TRIALS",
    "RungPair",
    "compute_seconds",
    "compute_unit",
    "halving_note",
    "hypervolume_time_curves",
    "hypervolume_time_figure",
    "rung_pairs",
    "rung_to_rung_figure",
]


def compute_unit(state: RunState) -> str:
    """'GPU seconds' or 'CPU seconds': what the run's trainings were timed on (its device kind)."""
    return "GPU seconds" if state.device_kind.lower().startswith(("cuda", "gpu", "rocm", "xpu", "mps")) else "CPU seconds"


def compute_seconds(t: TrialRecord) -> float:
    """Training + evaluation seconds a record spent itself (0 when not recorded).

    A duplicate carries its original's training time and an eval-only record (`weights_of`) the
    training time of the weights it evaluated: that compute was spent once, by the original."""
    evaluation = finite_or_none(t.attrs.get(Key.EVAL_SECONDS)) or 0.0
    borrowed = t.status == TrialStatus.DUPLICATE or t.attrs.get(Key.WEIGHTS_OF) is not None
    training = 0.0 if borrowed else (finite_or_none(t.attrs.get(Key.TRAIN_SECONDS)) or 0.0)
    return max(training, 0.0) + max(evaluation, 0.0)


def _compute_order(state: RunState) -> list[TrialRecord]:
    """Every finished record of every rung (COMPLETE or FAIL, re-queued attempts included: they
    spent compute too), in the order it finished. Completion times are stored to the second; ties go
    to the lower rung (a promotion finishes after its source), then the record number."""
    done = [t for records in state.rungs.values() for t in records if t.state in ("COMPLETE", "FAIL")]
    return sorted(done, key=lambda t: (t.completed or "", t.rung, t.number))


def hypervolume_time_curves(state: RunState) -> tuple[list[TrialRecord], list[float], dict[str, list[float]]]:
    """(finished records in order, cumulative compute seconds after each, {curve name: hypervolume after each}).

    A single-fidelity run has one curve (all trials); a halving run one for the front of its top
    rung (the run's result; 0 until a top-rung record exists) and one for the rung-0 front (what the
    short trainings alone would have claimed)."""
    ref_gain, ref_lat, _ = hypervolume_reference(state)
    order = _compute_order(state)
    seconds: list[float] = []
    total = 0.0
    for t in order:
        total += compute_seconds(t)
        seconds.append(total)

    def curve(rung: int) -> list[float]:
        points = [(t.gain_db, t.latency_ms) if _adds_area(t) and t.rung == rung else (-math.inf, math.inf) for t in order]
        return hypervolume_curve(points, ref_gain=ref_gain, ref_latency=ref_lat)  # type: ignore[arg-type]

    if state.halving is None:
        return order, seconds, {"hypervolume (all trials)": curve(0)}
    top = state.planned_top_rung
    return order, seconds, {
        f"front of {rung_label(state, top)} (the run's front)": curve(top),
        f"front of {rung_label(state, 0)}": curve(0),
    }


def halving_note(state: RunState) -> str:
    """'successive halving: rungs 100, 300, 900 steps, eta 3, 2 seeds at the top rung' (or '')."""
    table = state.halving
    if table is None:
        return ""
    steps = ", ".join(str(state.rung_steps(k) or "?") for k in range(state.planned_top_rung + 1))
    return f"successive halving: rungs of {steps} steps, eta {table.get('eta', '?')}, {table.get('top_seeds', '?')} seed(s) at the top rung"


def _budget_note(state: RunState) -> str:
    parts = [f"budget {state.budget_trials} trials" if state.budget_trials is not None else "", halving_note(state)]
    return "; ".join(p for p in parts if p)


def hypervolume_time_figure(state: RunState) -> Any:
    """Hypervolume against the compute spent: the x axis a budget in seconds, not in trials.

    Why: with successive halving a trial is no longer one unit of cost (a top-rung training is
    eta**k times a rung-0 one), so "hypervolume after N trials" flatters the schedule; seconds of
    training and evaluation compare a halving run with a single-fidelity one on equal terms."""
    import plotly.graph_objects as go

    ref_gain, ref_lat, why = hypervolume_reference(state)
    order, seconds, curves = hypervolume_time_curves(state)
    unit = compute_unit(state)
    fig = go.Figure()
    for (name, ys), (color, dash) in zip(curves.items(), ((_FRONT, "solid"), ("#7f7f7f", "dot"))):
        fig.add_trace(
            go.Scatter(
                x=seconds,
                y=ys,
                mode="lines+markers",
                name=name,
                customdata=[[trial_label(t), str(t.status)] for t in order],
                hovertemplate=(f"after %{{x:.4g}} {unit} (last: %{{customdata[0]}}, %{{customdata[1]}})"
                               f"<br>%{{y:.4g}} dB·ms<extra>{_esc(name)}</extra>"),
                line=dict(shape="hv", color=color, dash=dash),
                marker=dict(size=5),
            )
        )
    if not order:
        fig.add_annotation(text="no training finished yet", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.75, font=dict(size=14))
    elif not any(ys and ys[-1] > 0.0 for ys in curves.values()):
        fig.add_annotation(text="no feasible trained result beats Lanczos yet (gain > 0 dB), so the hypervolume is 0",
                           showarrow=False, xref="paper", yref="paper", x=0.5, y=0.75, font=dict(size=14))
    budget = _budget_note(state)
    fig.update_layout(
        title=dict(text=f"Hypervolume over compute time ({unit})<br><sup>reference: gain {ref_gain:g} dB (Lanczos), latency {ref_lat:g} ms "
                        f"({why}), latency on {_esc(state.device_name)}" + (f"; {_esc(budget)}" if budget else "") + "</sup>"),
        xaxis_title=f"cumulative training + evaluation time of every finished training [{unit}] (not wall-clock)",
        yaxis_title="hypervolume [dB x ms]",
        legend=dict(orientation="h", y=-0.25),
        height=440,
        **_LAYOUT,
    )
    return fig


#: Fewer promoted trials than this and a rank correlation says nothing; the figure says so instead.
MIN_SPEARMAN_TRIALS = MIN_RANK_PAIRS


@dataclass(frozen=True)
class RungPair:
    """The trials promoted from rung `lower` to `lower + 1`: their gains at both rungs (val, dB) and
    how well the two rankings agree (Spearman's rho; None below `MIN_SPEARMAN_TRIALS` or when a rung's
    gains are all equal)."""

    lower: int
    trials: tuple[int, ...]  # rung-0 trial numbers
    lower_gain: tuple[float, ...]
    upper_gain: tuple[float, ...]
    spearman: float | None

    @property
    def upper(self) -> int:
        return self.lower + 1

    @property
    def n(self) -> int:
        return len(self.trials)

    def describe(self) -> str:
        if self.spearman is not None:
            return f"Spearman ρ = {self.spearman:+.2f} (n = {self.n})"
        if self.n < MIN_SPEARMAN_TRIALS:
            return f"Spearman ρ: too few trials (n = {self.n})"
        return f"Spearman ρ: undefined, a rung's gains are all equal (n = {self.n})"


def _spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """`nas.ranks.spearman`, with None where it is undefined (too few trials, or a rung's gains all equal)."""
    rho = spearman(a, b)
    return rho if math.isfinite(rho) else None


def rung_pairs(state: RunState) -> list[RungPair]:
    """One `RungPair` per rung k whose next rung has a study, over the trials trained at both."""
    pairs = []
    for k in sorted(state.rungs):
        if k + 1 not in state.rungs:
            continue
        lower, upper = state.rung_results(k), state.rung_results(k + 1)
        both = tuple(n for n in sorted(upper) if n in lower)
        a = tuple(float(lower[n].gain_db) for n in both)  # type: ignore[arg-type]
        b = tuple(float(upper[n].gain_db) for n in both)  # type: ignore[arg-type]
        pairs.append(RungPair(lower=k, trials=both, lower_gain=a, upper_gain=b, spearman=_spearman(a, b)))
    return pairs


def rung_to_rung_figure(state: RunState) -> Any:
    """Gain of each promoted trial at rung k (x) and at rung k + 1 (y), one trace per k, with y = x.

    Why: successive halving bets that a short training ranks trials like a long one. Points on a
    rising line (high Spearman rho) mean the bet holds; a cloud means promotions were luck."""
    import plotly.graph_objects as go

    pairs = rung_pairs(state)
    fig = go.Figure()
    for pair in pairs:
        records = state.rung_results(pair.upper)
        fig.add_trace(
            go.Scatter(
                x=list(pair.lower_gain),
                y=list(pair.upper_gain),
                mode="markers",
                name=f"{rung_label(state, pair.lower)} → {rung_label(state, pair.upper)}: {pair.describe()}",
                marker=_rung_marker(pair.upper, size=11),
                customdata=[[n, _hover(records[n], state)] for n in pair.trials],
                hovertemplate=(f"rung {pair.lower}: %{{x:+.3f}} dB → rung {pair.upper}: %{{y:+.3f}} dB"
                               "<br>%{customdata[1]}<extra></extra>"),
            )
        )
    gains = [g for p in pairs for g in (*p.lower_gain, *p.upper_gain)]
    if gains:
        low, high = min(gains), max(gains)
        pad = 0.05 * (high - low) or 0.05
        fig.add_trace(go.Scatter(x=[low - pad, high + pad], y=[low - pad, high + pad], mode="lines", name="y = x (same gain)",
                                 line=dict(color="#888", dash="dash", width=1), hoverinfo="skip"))
    else:
        fig.add_annotation(text="no trial promoted yet", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5, font=dict(size=18))
    rhos = "; ".join(f"rung {p.lower} → {p.upper}: {p.describe()}" for p in pairs) or "no promotion yet"
    seeds = (state.halving or {}).get("top_seeds")
    budget = _budget_note(state)
    fig.update_layout(
        title=dict(text=f"Rung to rung: gain of each promoted trial before and after its longer training<br><sup>{_esc(rhos)}"
                        f"<br>trained on {_esc(state.device_kind or 'unknown device')} ({compute_unit(state)}); "
                        f"top rung: mean of {_esc(seeds if seeds is not None else '?')} seeds"
                        + (f"; {_esc(budget)}" if budget else "") + "</sup>"),
        xaxis_title=f"PSNR-Y gain over Lanczos at rung k ({state.gain_metric}, val split) [dB]",
        yaxis_title=f"gain at rung k + 1 ({state.gain_metric}, val split) [dB]",
        legend=dict(orientation="h", y=-0.22),
        height=520,
        margin=dict(l=70, r=30, t=110, b=60),
        **{k: v for k, v in _LAYOUT.items() if k != "margin"},
    )
    return fig
