"""Summary statistics of run times, in the standard library alone (Spearman: `nas.ranks`, re-exported here).

Why hand-written rather than numpy/scipy: this package must import with torch alone on GPU
machines, and the definitions (sample std, numpy's default percentile rule, average ranks for
ties) are spelled out here so the stored numbers are reproducible from the docstrings.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nas.ranks import average_ranks, spearman

if TYPE_CHECKING:
    from nas.task import JSONDict

__all__ = ["LatencyStats", "average_ranks", "spearman", "spread_of", "summarize_times"]


@dataclass(frozen=True)
class LatencyStats:
    """Summary of per-run times in milliseconds.

    `std_ms` is the sample standard deviation (n-1 denominator; 0 for a single run), `cv_percent`
    is 100 * std / mean, `p90_ms` is the 90th percentile with linear interpolation between order
    statistics (position 0.9 * (n-1) in the sorted list, numpy's default rule).

    The spread: `iqr_ms` is the interquartile range p75 - p25 (same percentile rule) and
    `iqr_percent` is 100 * iqr / median. Why the IQR and not the std: with ten CPU runs one
    descheduled run inflates the std, while the IQR says how far the typical runs disagree, which
    is what decides whether two architectures' medians can be told apart.
    """

    n: int
    mean_ms: float
    median_ms: float
    p90_ms: float
    min_ms: float
    max_ms: float
    std_ms: float
    cv_percent: float
    iqr_ms: float
    iqr_percent: float

    def to_dict(self) -> JSONDict:
        """The stored form, one key per field (part of every latency record)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: JSONDict) -> LatencyStats:
        """Inverse of `to_dict`; a missing field raises KeyError (the record reader reports it)."""
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (pos - lo) * (sorted_values[hi] - sorted_values[lo])


def spread_of(times_ms: Sequence[float]) -> dict[str, float]:
    """`iqr_ms` and `iqr_percent` (see `LatencyStats`) of a non-empty list of run times (ms).

    Separate from `summarize_times` so records stored before the spread existed get it from their
    `times_ms` when read back."""
    s = sorted(float(t) for t in times_ms)
    if not s:
        raise ValueError("spread_of needs at least one time")
    iqr = _percentile(s, 0.75) - _percentile(s, 0.25)
    median = _percentile(s, 0.5)
    return {"iqr_ms": iqr, "iqr_percent": 100.0 * iqr / median if median > 0 else 0.0}


def summarize_times(times_ms: Sequence[float]) -> LatencyStats:
    """Mean, median, p90, min, max, std, CV and IQR of a non-empty list of run times (ms)."""
    values = [float(t) for t in times_ms]
    if not values:
        raise ValueError("summarize_times needs at least one time")
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"run times must be finite and >= 0 ms, got {values!r}")
    n = len(values)
    s = sorted(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return LatencyStats(
        n=n,
        mean_ms=mean,
        median_ms=_percentile(s, 0.5),
        p90_ms=_percentile(s, 0.9),
        min_ms=s[0],
        max_ms=s[-1],
        std_ms=std,
        cv_percent=100.0 * std / mean if mean > 0 else 0.0,
        **spread_of(s),
    )
