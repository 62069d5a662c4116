"""Ablation reports: per-arm tables with confidence intervals, differences to the reference arm, and
a verdict for every published claim the study file names (`nas.study.Claim`).

Why a module of its own: an ablation run is read differently from a search. Trials are grouped by
their `arm` user attr and keyed by `seed`; the numbers that matter are means over seeds and the
*paired* difference to the reference arm (`reports.stats`), not a Pareto front. The run is read
through `nas.runstate.load_run` (a private copy of the journal; no lock is taken), so the tables
can be rebuilt while `nas.run` is still training the arms.

What each number is:

- gain per QP, Delta (mean gain at QP31 and QP63) and the mean gain over all evaluated QPs, in dB
  over Lanczos: mean over the arm's seeds with a 95 % Student t interval; differences to the
  reference are paired by seed (the seeds both arms finished), else Welch's unpaired interval;
- latency: one measurement per deployed network (the driver caches it by architecture), so its
  interval is over the timed runs of that measurement (t, n = runs), and the difference of two
  networks is Welch's interval over the two sets of runs; arms that deploy the same network (e.g.
  an eval-dtype arm) share the measurement and differ by exactly 0;
- MACs and parameters: exact (deploy form, 540x960), so their intervals have zero width.

Public API (called lazily by `reports.dashboard` and `python -m reports --format md`):
`is_ablation_run(run_dir)`, `ablation_markdown(run_dir)`, `ablation_figures(run_dir)`; and
`load_ablation(run_dir)` for the numbers themselves.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.trial_record import Key
from reports.fidelity import Fidelity, budget_fidelity, find_calibrations
from reports.stats import (
    CONSISTENT,
    CONTRADICTS,
    INCONCLUSIVE,
    Interval,
    diff_interval,
    mean_interval,
    summary_diff_interval,
    summary_interval,
    verdict,
    welch_diff_interval,
)

__all__ = [
    "AblationResult",
    "ArmResult",
    "ClaimResult",
    "ablation_figures",
    "ablation_markdown",
    "is_ablation_run",
    "load_ablation",
]

_NAN = float("nan")
_VERDICT_COLOURS = {CONSISTENT: "#d8f0d8", INCONCLUSIVE: "#f4f4f4", CONTRADICTS: "#f8d7d7"}
_UNITS_NOTE = (
    "- gains are PSNR-Y over Lanczos in dB; intervals are 95 % Student t intervals over seeds (latency: over the "
    "timed runs of one measurement per network); MACs/params are exact, deploy form at 540x960"
)
_PAIRING_NOTE = (
    "Differences of gains are paired by seed (paired t over the seeds both arms finished) when at least two seeds "
    "match, else Welch's unpaired t. Latency differences are Welch's t over the timed runs of the two networks; arms "
    "that deploy the identical network share one measurement and differ by exactly 0. The latency interval covers "
    "run-to-run noise only, not load that changes between two measurements (on a shared CPU that drift can dominate)."
)
VERDICT_RULES = (
    "Verdicts compare the 95 % interval of (arm - reference) with the claimed range: **contradicts** when "
    "they do not overlap (every value the data allow lies outside the claim: wrong direction or wrong size); "
    "**consistent** when they overlap and, for an increase/decrease, the interval excludes 0 on the claimed "
    "side, or, for 'equal', the whole interval lies inside the tolerance band; **inconclusive** otherwise "
    "(including fewer than two seeds)."
)


def _metric_label(metric: str) -> str:
    if metric.startswith("gain_qp"):
        return f"gain QP{metric[7:]}"
    return {"gain_y": "mean gain", "delta_y": "Delta", "latency_ms": "latency", "macs_g": "MACs", "params_k": "params"}[metric]


def _metric_unit(metric: str) -> str:
    return {"latency_ms": "ms", "macs_g": "G", "params_k": "k"}.get(metric, "dB")


# --------------------------------------------------------------------------------------------------
# The numbers
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Latency:
    """One latency measurement of one deployed network (shared by every trial of that network)."""

    key: str
    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class ArmResult:
    """Everything measured for one arm: per-seed values of each metric, latency, cost, failures."""

    name: str
    description: str
    arch_summary: str
    recipe: str
    eval_dtype: str
    values: Mapping[str, Mapping[int, float]]  # metric -> seed -> value (gains, MACs, params)
    latencies: tuple[_Latency, ...]
    failures: tuple[str, ...] = ()
    pending: int = 0

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(sorted(self.values.get("macs_g", {})))

    def summary(self, metric: str) -> Interval:
        """Mean and 95 % interval of `metric` over this arm's seeds (latency: over timed runs)."""
        if metric == "latency_ms":
            if not self.latencies:
                return Interval(_NAN, _NAN, _NAN, 0)
            if len(self.latencies) == 1:
                m = self.latencies[0]
                return summary_interval(m.mean, m.std, m.n)
            return mean_interval([m.mean for m in self.latencies])
        return mean_interval(list(self.values.get(metric, {}).values()))


@dataclass(frozen=True)
class ClaimResult:
    """One claim next to its measured difference and the verdict."""

    claim: Any  # nas.study.Claim
    difference: Interval
    verdict: str


@dataclass(frozen=True)
class AblationResult:
    """An ablation run, analysed: arms (reference first), metrics, claims."""

    run_dir: Path
    name: str
    spec: Any  # nas.study.AblationSpec
    study: Mapping[str, Any]
    device_name: str
    protocol: str
    arms: tuple[ArmResult, ...]
    metrics: tuple[str, ...]
    finished: int
    budget: int
    claims: tuple[ClaimResult, ...] = field(default=())

    @property
    def reference(self) -> ArmResult:
        return self.arm(self.spec.reference)

    def arm(self, name: str) -> ArmResult:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(name)

    def difference(self, arm: str, metric: str, *, relative: bool = False) -> Interval:
        """(arm - reference) with its 95 % interval; `relative`: in % of the reference's mean."""
        a, ref = self.arm(arm), self.reference
        if metric == "latency_ms":
            iv = _latency_difference(a, ref)
        else:
            iv = diff_interval(a.values.get(metric, {}), ref.values.get(metric, {}))
        if not relative:
            return iv
        base = ref.summary(metric).estimate
        if not (math.isfinite(base) and base > 0):
            return Interval(_NAN, _NAN, _NAN, iv.n, iv.method + ", relative (undefined: reference mean <= 0)")
        scaled = iv.scaled(100.0 / base) if iv.defined else Interval(iv.estimate * 100.0 / base, _NAN, _NAN, iv.n, iv.method)
        return Interval(scaled.estimate, scaled.low, scaled.high, scaled.n, iv.method + ", % of reference")


def _latency_difference(a: ArmResult, ref: ArmResult) -> Interval:
    if not a.latencies or not ref.latencies:
        return Interval(_NAN, _NAN, _NAN, 0, "no latency")
    if {m.key for m in a.latencies} == {m.key for m in ref.latencies} and len(a.latencies) == 1:
        return Interval(0.0, 0.0, 0.0, a.latencies[0].n, "same network, one measurement")
    if len(a.latencies) == 1 and len(ref.latencies) == 1:
        x, y = a.latencies[0], ref.latencies[0]
        return summary_diff_interval(x.mean, x.std, x.n, y.mean, y.std, y.n)
    return welch_diff_interval([m.mean for m in a.latencies], [m.mean for m in ref.latencies])


def _is_run_json_ablation(info: Mapping[str, Any]) -> bool:
    study = info.get("study")
    return isinstance(study, Mapping) and isinstance(study.get("ablation"), Mapping)


def is_ablation_run(run_dir: str | os.PathLike[str]) -> bool:
    """True if `run_dir` holds a `nas.run` run of a study with an `[ablation]` table (reads run.json only)."""
    try:
        info = json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and _is_run_json_ablation(info)


def _gain_values(attrs: Mapping[str, Any], qps: Sequence[int]) -> dict[str, float]:
    out: dict[str, float] = {}
    per_qp = attrs.get(Key.PER_QP) or {}
    for qp in qps:
        m = per_qp.get(str(qp))
        if m is None:
            continue
        gain = m.get("gain_y")
        if gain is None:
            gain = m["psnr_y"] - m["lanczos_psnr_y"]
        out[f"gain_qp{qp}"] = float(gain)
    for key in (Key.GAIN_Y, Key.DELTA_Y):
        value = attrs.get(key)
        if value is not None and math.isfinite(float(value)):
            out[key] = float(value)
    return out


def _arm_result(arm_spec: Any, trials: Sequence[Any], *, spec: Any, qps: Sequence[int], default_recipe: str) -> ArmResult:
    """One arm's values per seed (gains, MACs, params), its latency measurements, failures and pending trials."""
    values: dict[str, dict[int, float]] = {}
    latencies: dict[str, _Latency] = {}
    failures, pending = [], 0
    summary = ""
    for t in trials:
        if t.state in ("RUNNING", "WAITING"):
            pending += 1
            continue
        if not t.trained:
            if not t.counts_against_budget:
                continue  # an attempt that was retried
            failures.append(f"seed {'?' if t.seed is None else t.seed}: {t.status}: {t.reason or 'no reason recorded'}")
            continue
        seed = int(t.seed)
        summary = t.arch_summary
        for key, value in _gain_values(t.attrs, qps).items():
            values.setdefault(key, {})[seed] = value
        values.setdefault("macs_g", {})[seed] = float(t.attrs[Key.MACS]) / 1e9
        values.setdefault("params_k", {})[seed] = float(t.attrs[Key.PARAMS]) / 1e3
        lat = t.attrs.get(Key.LATENCY) or {}
        if lat.get("mean_ms") is not None:
            key = f"{t.deploy_arch_hash}/{lat.get('protocol_hash')}/{lat.get('device_name')}"
            latencies[key] = _Latency(key, float(lat["mean_ms"]), float(lat.get("std_ms") or 0.0), int(lat.get("n_runs") or 1))
    return ArmResult(
        name=arm_spec.name,
        description=arm_spec.description,
        arch_summary=summary or spec.arch_of(arm_spec.name).summary(),
        recipe=spec.recipe_of(arm_spec.name, default_recipe),
        eval_dtype=arm_spec.eval_dtype,
        values=values,
        latencies=tuple(latencies.values()),
        failures=tuple(failures),
        pending=pending,
    )


def load_ablation(run_dir: str | os.PathLike[str], *, storage: str | None = None) -> AblationResult:
    """Read an ablation run (read-only, also while it runs) and compute every table entry.

    `storage`: the `--storage` URL, needed only when run.json holds it redacted (`nas.runstate.load_run`)."""
    from nas.ablation_spec import AblationSpec
    from nas.runstate import load_run
    from search_space.errors import UserError

    state = load_run(run_dir, storage=storage)
    if not _is_run_json_ablation(state.info):
        raise UserError(f"{state.run_dir} is not an ablation run (its study has no [ablation] table)")
    study = state.study
    spec = AblationSpec.from_dict(study["ablation"])
    qps = tuple(int(q) for q in study.get("data", {}).get("qps", ()))
    metrics = [f"gain_qp{q}" for q in qps]
    if {31, 63} <= set(qps):
        metrics.append("delta_y")
    if set(qps) != {31, 63}:
        metrics.append("gain_y")  # with QPs {31, 63} the mean gain is Delta itself
    metrics += ["latency_ms", "macs_g", "params_k"]

    by_arm: dict[str, list[Any]] = {a.name: [] for a in spec.arms}
    for t in state.trials:
        arm = t.arm
        if arm in by_arm:
            by_arm[arm].append(t)
    default_recipe = str(study.get("proxy", {}).get("recipe", ""))
    ordered = sorted(spec.arms, key=lambda a: a.name != spec.reference)
    arms = [_arm_result(arm_spec, by_arm[arm_spec.name], spec=spec, qps=qps, default_recipe=default_recipe)
            for arm_spec in ordered]
    proto = ""
    for t in state.trials:
        if t.attrs.get(Key.LATENCY):
            proto = str(t.attrs[Key.LATENCY].get("protocol", ""))
            break
    result = AblationResult(
        run_dir=state.run_dir,
        name=state.study_name,
        spec=spec,
        study=study,
        device_name=state.device_name,
        protocol=proto or str(state.info.get("latency_protocol_description", "")),
        arms=tuple(arms),
        metrics=tuple(metrics),
        finished=state.finished,
        budget=spec.n_trials,
    )
    claims = []
    for claim in spec.claims:
        iv = result.difference(claim.arm, claim.metric, relative=claim.relative)
        claims.append(ClaimResult(claim, iv, verdict(iv.low, iv.high, expect=claim.expect, claim_low=claim.low, claim_high=claim.high)))
    return dataclasses.replace(result, claims=tuple(claims))


# --------------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------------


def _digits(metric: str) -> int:
    return {"latency_ms": 2, "macs_g": 3, "params_k": 1}.get(metric, 3)


def _num(value: float, digits: int, *, sign: bool) -> str:
    if not math.isfinite(value):
        return ("+inf" if sign else "inf") if value == math.inf else "-inf" if value == -math.inf else "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _fmt_interval(iv: Interval, digits: int, *, sign: bool) -> str:
    if iv.n == 0 or math.isnan(iv.estimate):
        return "-"
    point = _num(iv.estimate, digits, sign=sign)
    if not iv.defined:
        return f"{point} (n={iv.n}, no interval)"
    if iv.low == iv.high == iv.estimate:
        return point  # no spread (MACs, params, one shared latency measurement)
    return f"{point} [{_num(iv.low, digits, sign=sign)}, {_num(iv.high, digits, sign=sign)}]"


def _claimed(claim: Any) -> str:
    unit = claim.unit
    lo, hi = claim.low, claim.high
    digits = 3 if unit == "dB" else 2

    def n(v: float) -> str:
        return _num(v, digits, sign=True)

    if claim.expect == "equal":
        if lo == hi == 0:
            return "equal (difference exactly 0)"
        return f"equal within [{n(lo)}, {n(hi)}] {unit}"
    if claim.expect == "increase":
        return "increase (> 0)" if hi == math.inf and lo == 0 else f"increase, [{n(lo)}, {n(hi)}] {unit}"
    return "decrease (< 0)" if lo == -math.inf and hi == 0 else f"decrease, [{n(lo)}, {n(hi)}] {unit}"


def _md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return lines


def _arm_rows(res: AblationResult) -> tuple[list[str], list[list[str]]]:
    header = ["arm", "recipe", "eval", "seeds"] + [f"{_metric_label(m)} [{_metric_unit(m)}]" for m in res.metrics]
    rows = []
    for arm in res.arms:
        label = f"{arm.name} (reference)" if arm.name == res.spec.reference else arm.name
        row = [label, arm.recipe, arm.eval_dtype, str(len(arm.seeds))]
        for m in res.metrics:
            row.append(_fmt_interval(arm.summary(m), _digits(m), sign=m.startswith("gain") or m == "delta_y"))
        rows.append(row)
    return header, rows


def _diff_rows(res: AblationResult) -> tuple[list[str], list[list[str]]]:
    header = ["arm", "pairing"] + [f"delta {_metric_label(m)} [{_metric_unit(m)}]" for m in res.metrics]
    rows = []
    for arm in res.arms:
        if arm.name == res.spec.reference:
            continue
        gains = [m for m in res.metrics if m.startswith("gain") or m == "delta_y"]
        first = res.difference(arm.name, gains[0]) if gains else None
        pairing = f"{first.method}, n={first.n}" if first is not None else "-"
        row = [arm.name, pairing]
        for m in res.metrics:
            digits = _digits(m) + (1 if m.startswith("gain") or m == "delta_y" else 0)  # differences are small
            row.append(_fmt_interval(res.difference(arm.name, m), digits, sign=True))
        rows.append(row)
    return header, rows


def _claim_rows(res: AblationResult, fidelity: Fidelity | None = None) -> tuple[list[str], list[list[str]]]:
    """The claims table; `fidelity` adds what the budget's ranking was calibrated at (`reports.fidelity`)."""
    header = ["arm", "metric", "measured difference [95 % CI]", "claimed", "published", "source", "verdict"]
    rows = []
    for cr in res.claims:
        c = cr.claim
        digits = 4 if c.unit == "dB" else 2
        measured = _fmt_interval(cr.difference, digits, sign=True) + f" {c.unit}"
        if cr.difference.method:
            measured += f" ({cr.difference.method})"
        verdict = cr.verdict if fidelity is None or fidelity.calibrated else f"{cr.verdict} (budget not calibrated)"
        rows.append([c.arm, _metric_label(c.metric), measured, _claimed(c), f"{c.number}: {c.text}" if c.text else c.number, c.source, verdict])
        if fidelity is not None:
            rows[-1].append(fidelity.label)
    if fidelity is not None:
        header.append("budget fidelity")
    return header, rows


def ablation_markdown(run_dir: str | os.PathLike[str], *, calibrations: Sequence[Mapping[str, Any]] | None = None,
                      storage: str | None = None) -> str:
    """The ablation's tables as Markdown: arms, differences to the reference, claims with verdicts, and
    the calibrated fidelity of the proxy budget they ran at (`calibrations`: default `find_calibrations()`)."""
    res = load_ablation(run_dir, storage=storage)
    spec, study = res.spec, res.study
    data = study.get("data", {})
    proxy = study.get("proxy", {})
    steps = proxy.get("steps")
    fidelity = budget_fidelity(None if steps is None else int(steps), find_calibrations() if calibrations is None else calibrations)
    lines = [f"## Ablation `{res.name}`" + (f": {spec.factor}" if spec.factor else ""), ""]
    if study.get("description"):
        lines += [str(study["description"]), ""]
    lines += [
        f"- reference arm: **{spec.reference}**; seeds per arm: {len(spec.seeds)} ({', '.join(map(str, spec.seeds))}); "
        f"trials done: {res.finished} of {res.budget}" + (" (run in progress)" if res.finished < res.budget else ""),
        (f"- proxy training: {proxy.get('steps')} steps, {proxy.get('threads')} thread(s) per trial; data "
         f"{data.get('train')} / {data.get('val') or data.get('train')} (val), QPs {', '.join(map(str, data.get('qps', [])))}"),
        f"- latency: {res.device_name}; {res.protocol}",
        f"- {fidelity.text}",
        _UNITS_NOTE,
        "",
        "### Arms",
        "",
    ]
    header, rows = _arm_rows(res)
    lines += _table(header, rows)
    lines += ["", "Architectures:", ""]
    for arm in res.arms:
        desc = f" - {arm.description}" if arm.description else ""
        lines.append(f"- `{arm.name}`: {arm.arch_summary}{desc}")
    lines += ["", f"### Difference to the reference (arm - {spec.reference})", ""]
    header, rows = _diff_rows(res)
    lines += _table(header, rows)
    lines += ["", _PAIRING_NOTE, ""]
    if res.claims:
        lines += ["### Published claims", ""]
        header, rows = _claim_rows(res, fidelity)
        lines += _table(header, rows)
        lines += ["", VERDICT_RULES, ""]
    problems = [f"- `{a.name}` {f}" for a in res.arms for f in a.failures]
    if problems:
        lines += ["### Trials without a result", ""] + problems + [""]
    return "\n".join(lines).rstrip("\n") + "\n"


# --------------------------------------------------------------------------------------------------
# Figures (the dashboard's ablation sections)
# --------------------------------------------------------------------------------------------------


_PAGE_PX = 1300  # the dashboard's content width
_CHAR_PX = 7.0  # average width of a 12 px character
_LINE_PX = 19


def _table_figure(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], *, fill: Sequence[str] | None = None,
                  widths: Sequence[float] | None = None) -> Any:
    """A Plotly table sized so that wrapped cells are not cut off (Plotly does not grow rows itself)."""
    import plotly.graph_objects as go

    widths = list(widths) if widths is not None else [1.0] * len(header)
    total = sum(widths)
    chars = [max(8, int(_PAGE_PX * w / total / _CHAR_PX)) for w in widths]

    def lines(row: Sequence[str]) -> int:
        return max(math.ceil(len(str(cell)) / c) or 1 for cell, c in zip(row, chars))

    columns = [list(col) for col in zip(*rows)] if rows else [[] for _ in header]
    cells: dict[str, Any] = {"values": columns, "align": "left", "font": {"size": 12}}
    if fill is not None:
        cells["fill"] = {"color": [list(fill)] * len(header)}
    fig = go.Figure(go.Table(columnwidth=widths, header={"values": [f"<b>{h}</b>" for h in header], "align": "left"}, cells=cells))
    height = 90 + _LINE_PX * (lines(header) + 1) + sum(_LINE_PX * lines(r) + 10 for r in rows)
    fig.update_layout(title=title, height=height, margin={"l": 10, "r": 10, "t": 60, "b": 10})
    return fig


def _arm_figure(res: AblationResult) -> Any:
    import plotly.graph_objects as go

    metric = "delta_y" if "delta_y" in res.metrics else "gain_y"
    fig = go.Figure()
    names = [a.name for a in res.arms]
    for arm in res.arms:
        per_seed = res.arm(arm.name).values.get(metric, {})
        fig.add_trace(go.Scatter(
            x=[arm.name] * len(per_seed), y=list(per_seed.values()), mode="markers", name=f"{arm.name}: seeds",
            marker={"size": 7, "opacity": 0.55}, text=[f"seed {s}" for s in per_seed], hovertemplate="%{text}: %{y:+.4f} dB<extra></extra>",
            showlegend=False,
        ))
        iv = arm.summary(metric)
        if iv.n:
            err = {} if not iv.defined else {"error_y": {"type": "data", "symmetric": False, "array": [iv.high - iv.estimate], "arrayminus": [iv.estimate - iv.low]}}
            fig.add_trace(go.Scatter(x=[arm.name], y=[iv.estimate], mode="markers", marker={"size": 13, "symbol": "diamond", "color": "#222"},
                                     name=f"{arm.name}: mean, 95 % CI", showlegend=False, hovertemplate="mean %{y:+.4f} dB<extra></extra>", **err))
    fig.update_layout(
        title=f"{res.name}: {_metric_label(metric)} per arm (points: seeds; diamond: mean with 95 % CI)",
        xaxis={"title": "arm", "categoryorder": "array", "categoryarray": names},
        yaxis={"title": f"{_metric_label(metric)} over Lanczos [dB]"},
        height=420,
    )
    return fig


def _claims_figure(res: AblationResult) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    n = len(res.claims)
    titles = [f"{cr.claim.arm}: {_metric_label(cr.claim.metric)} [{cr.claim.unit}] - {cr.verdict}" for cr in res.claims]
    fig = make_subplots(rows=n, cols=1, subplot_titles=titles, vertical_spacing=min(0.12, 0.5 / max(1, n)))
    for i, cr in enumerate(res.claims, start=1):
        iv, c = cr.difference, cr.claim
        finite = [v for v in (iv.low, iv.high, iv.estimate, c.low, c.high, 0.0) if math.isfinite(v)]
        span = (max(finite) - min(finite)) or 1.0
        lo = min(finite) - 0.25 * span
        hi = max(finite) + 0.25 * span
        band_lo = c.low if math.isfinite(c.low) else lo
        band_hi = c.high if math.isfinite(c.high) else hi
        fig.add_trace(go.Scatter(x=[band_lo, band_hi, band_hi, band_lo, band_lo], y=[-0.4, -0.4, 0.4, 0.4, -0.4], fill="toself", mode="lines",
                                 fillcolor="rgba(31,119,180,0.15)", line={"width": 0}, name="claimed range", showlegend=i == 1,
                                 hoverinfo="skip"), row=i, col=1)
        if iv.defined:
            fig.add_trace(go.Scatter(x=[iv.low, iv.high], y=[0, 0], mode="lines", line={"width": 4, "color": "#222"},
                                     name="measured 95 % CI", showlegend=i == 1), row=i, col=1)
        if not math.isnan(iv.estimate):
            fig.add_trace(go.Scatter(x=[iv.estimate], y=[0], mode="markers", marker={"size": 11, "color": "#d62728"},
                                     name="measured difference", showlegend=i == 1), row=i, col=1)
        fig.add_vline(x=0, line={"dash": "dot", "color": "#888"}, row=i, col=1)
        fig.update_xaxes(range=[lo, hi], row=i, col=1)
        fig.update_yaxes(visible=False, range=[-1, 1], row=i, col=1)
    fig.update_layout(title=f"{res.name}: claims vs measured differences (arm - {res.spec.reference})", height=170 * n + 120)
    return fig


def ablation_figures(run_dir: str | os.PathLike[str], *, storage: str | None = None) -> list[Any]:
    """Plotly figures for the dashboard: the arms table, the claims table, per-arm gains, claims vs CIs."""
    res = load_ablation(run_dir, storage=storage)
    figs = []
    header, rows = _arm_rows(res)
    figs.append(_table_figure(f"{res.name}: arms (mean [95 % CI]; reference {res.spec.reference})", header, rows))
    header, rows = _diff_rows(res)
    if rows:
        figs.append(_table_figure(f"{res.name}: difference to the reference (arm - {res.spec.reference}, 95 % CI)", header, rows))
    if res.claims:
        header, rows = _claim_rows(res)
        fill = [_VERDICT_COLOURS[cr.verdict] for cr in res.claims]
        steps = res.study.get("proxy", {}).get("steps")
        fidelity = budget_fidelity(None if steps is None else int(steps), find_calibrations())
        figs.append(_table_figure(f"{res.name}: published claims and verdicts ({steps} proxy steps: {fidelity.label})", header, rows, fill=fill,
                                  widths=[0.8, 0.7, 1.6, 1.3, 2.2, 2.6, 0.9]))
    figs.append(_arm_figure(res))
    if res.claims:
        figs.append(_claims_figure(res))
    return figs
