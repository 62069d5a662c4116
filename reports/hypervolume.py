"""2-D hypervolume of (gain, latency) points: how much of the useful corner a search has covered.

Why our own: the objective pair is fixed (maximize PSNR-Y gain, minimize latency), the exact 2-D
sweep is a few lines, and it keeps the dashboard free of Optuna's private hypervolume helpers
(whose location and sign conventions changed between versions).

The reference point is (gain = `ref_gain`, latency = `ref_latency`): a point adds area only if it
beats Lanczos (gain > ref_gain, 0 dB by default) and is faster than the reference latency (the
study's latency budget, else the slowest trial). Units: dB x ms.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

__all__ = ["hypervolume_2d", "hypervolume_curve"]


def hypervolume_2d(points: Iterable[tuple[float, float]], *, ref_gain: float = 0.0, ref_latency: float) -> float:
    """Area dominated by `points` = (gain_db, latency_ms) and bounded by the reference point.

    Sweep by increasing latency: each point extends the covered region upwards by the amount its
    gain exceeds the best gain of all faster points, over the latency span from itself to the
    reference latency.
    """
    useful = sorted(
        (lat, gain)
        for gain, lat in points
        if math.isfinite(gain) and math.isfinite(lat) and gain > ref_gain and lat < ref_latency
    )
    area = 0.0
    best = ref_gain
    for lat, gain in useful:
        if gain > best:
            area += (ref_latency - lat) * (gain - best)
            best = gain
    return area


def hypervolume_curve(points_in_order: Sequence[tuple[float, float]], *, ref_gain: float = 0.0, ref_latency: float) -> list[float]:
    """Hypervolume after each of the points, in the order they were found (non-decreasing)."""
    out: list[float] = []
    seen: list[tuple[float, float]] = []
    for point in points_in_order:
        seen.append(point)
        out.append(hypervolume_2d(seen, ref_gain=ref_gain, ref_latency=ref_latency))
    return out
