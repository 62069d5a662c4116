"""The Pareto front of a run (maximize gain, minimize latency), defined once.

The driver's `pareto.txt`, `nas.runstate` (dashboards, Markdown tables) and `nas.export` all take
the front from here, so they always agree. It is computed here rather than by Optuna's
`study.best_trials` so that it means the same on Optuna 4 (constraints in user attributes) and 5
(native constraints), and only trained, feasible trials can be on it (`is_front_candidate`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from nas.trial_record import Key, is_front_candidate, linear_metric

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

__all__ = ["non_dominated", "pareto_front", "render_pareto_table"]


def non_dominated(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (gain, latency) that no other point dominates (>= gain and <= latency,
    better in one). Equal points do not dominate each other: both are kept."""
    keep = []
    for i, (g, lat) in enumerate(points):
        dominated = any(
            og >= g and olat <= lat and (og > g or olat < lat) for j, (og, olat) in enumerate(points) if j != i
        )
        if not dominated:
            keep.append(i)
    return keep


def pareto_front(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """The non-dominated front candidates among Optuna trials, sorted by latency (then gain, number)."""
    pool = [t for t in trials if is_front_candidate(state=t.state.name, attrs=t.user_attrs, values=t.values)]
    front = [pool[i] for i in non_dominated([(t.values[0], t.values[1]) for t in pool])]
    front.sort(key=lambda t: (t.values[1], -t.values[0], t.number))
    return front


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{float(value):+.3f}"


def render_pareto_table(front: Sequence[FrozenTrial], *, gain_name: str, latency_name: str, device_name: str, note: str = "") -> str:
    """A plain-text table of the front (one row per Optuna trial), as printed at the end of a run.

    The front is selected on val (the objective); the table also reports each trial on the test
    split, over Lanczos and over the linear baseline ("what the architecture adds"). Under successive
    halving the rows are top-rung records: `trial` is the sampler's trial number, `note` says which
    rung, and a seed-spread column shows how far the top rung's seeds were apart."""
    header = ["trial", "arch", f"val {gain_name} [dB]", f"test {gain_name} [dB]", "test vs linear [dB]",
              f"{latency_name} [ms]", "MACs [G]", "params [k]", "preset"]
    spread = any(Key.SEED_SPREAD in t.user_attrs for t in front)
    if spread:
        header.insert(3, "seed spread [dB]")
    rows = []
    for t in front:
        a = t.user_attrs
        test = a.get(Key.TEST) or {}
        rows.append(
            [
                str(a.get(Key.SOURCE_TRIAL, t.number)),
                str(a.get(Key.ARCH_SUMMARY, "")),
                f"{t.values[0]:+.3f}",
                _signed(test.get(gain_name)),
                _signed(test.get(linear_metric(gain_name))),
                f"{t.values[1]:.3f}",
                f"{a.get(Key.MACS, 0) / 1e9:.3f}",
                f"{a.get(Key.PARAMS, 0) / 1e3:.1f}",
                str(a.get(Key.PRESET) or "-"),
            ]
        )
        if spread:
            rows[-1].insert(3, "-" if a.get(Key.SEED_SPREAD) is None else f"{a[Key.SEED_SPREAD]:.3f}")
    if not rows:
        return "Pareto front: no feasible trained trial yet."
    widths = [max(len(c) for c in col) for col in zip(header, *rows)]
    lines = [
        f"Pareto front ({len(rows)} trial{'s' if len(rows) != 1 else ''}; {note + '; ' if note else ''}selected on val, "
        f"reported on test; latency on {device_name}):",
        "  ".join(h.ljust(w) for h, w in zip(header, widths)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)
