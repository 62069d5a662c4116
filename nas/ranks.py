"""Spearman's rank correlation, the one implementation of the project, in the standard library alone.

Why here and hand-written: latency (`nas.latency`, which must import with torch alone on GPU
machines), calibration (`nas.calibrate`, including every bootstrap resample) and the reports'
rung-to-rung figures all rank architectures, and they must give one answer for the same points,
including when there are too few of them. The rule, once: fewer than `MIN_RANK_PAIRS` pairs, or a
side whose values are all equal, has no rank correlation (NaN); unequal lengths are a bug (ValueError).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["MIN_RANK_PAIRS", "average_ranks", "spearman"]

#: Fewer pairs than this have no rank correlation: two points always agree or disagree perfectly.
MIN_RANK_PAIRS = 3


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks; tied values all get the mean of the ranks they span (e.g. [10, 20, 20] -> [1, 2.5, 2.5])."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        rank = (i + j) / 2 + 1  # mean of 1-based positions i+1 .. j+1
        for k in range(i, j + 1):
            ranks[order[k]] = rank
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson correlation of the average ranks (exact with ties; `scipy.stats.spearmanr`'s
    definition). NaN below `MIN_RANK_PAIRS` pairs or when either side has no variation."""
    if len(x) != len(y):
        raise ValueError(f"spearman needs equal lengths, got {len(x)} and {len(y)}")
    if len(x) < MIN_RANK_PAIRS:
        return math.nan
    rx, ry = average_ranks(x), average_ranks(y)
    mx, my = math.fsum(rx) / len(rx), math.fsum(ry) / len(ry)
    cov = math.fsum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx = math.fsum((a - mx) ** 2 for a in rx)
    vy = math.fsum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return math.nan
    return cov / math.sqrt(vx * vy)
