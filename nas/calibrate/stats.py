"""How well one ranking of architectures (a proxy budget) matches another (the long budget).

Why our own small functions: the panel is small (16-40 architectures), so every correlation needs an
interval, and 2000 bootstrap resamples must stay fast. Spearman is the project's one implementation
(`nas.ranks`, the same rule for too few points everywhere), called once per resample (a fraction of a
second for 2000); Kendall is computed for all resamples at once with numpy (`_kendall_rows`), with the
definition of `scipy.stats.kendalltau` (tau-b), which gives the point estimate.

Definitions (x = gain at a proxy budget, y = gain at the long budget, one value per architecture):

- Spearman's rho: Pearson correlation of the average ranks; Kendall's tau-b: concordant minus
  discordant pairs over sqrt((n0 - ties_x)(n0 - ties_y)), n0 = n(n-1)/2.
- 95 % interval: percentile bootstrap over architectures (resample n of n with replacement, seeded;
  resamples in which x or y is constant are dropped and counted; below 5 archs no interval).
- Pairwise accuracy: over the pairs whose long-run gains differ by more than `threshold_db`
  (0.05 dB: smaller differences are within seed noise), the fraction the proxy orders the same way;
  a tie at the proxy counts one half.
- Front recovery, with deploy MACs as the cost axis (known exactly, no timing): the long-run front
  F is the non-dominated set of (long gain: max, MACs: min); the proxy front P that of (proxy gain,
  MACs). `fraction` = |F and P| / |F| (`precision` = |F and P| / |P|). `hv_ratio` = the hypervolume of P's archs *at their long-run
  gains* over F's hypervolume: the share of the long-run front's quality kept by trusting the proxy's
  front. Reference point: (the lowest long-run gain of the set, 1.1 x the largest MACs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nas.pareto import non_dominated
from nas.ranks import MIN_RANK_PAIRS, spearman

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "MIN_BOOTSTRAP_N",
    "PAIR_THRESHOLD_DB",
    "Correlation",
    "FrontRecovery",
    "PairwiseAccuracy",
    "bootstrap_correlations",
    "format_interval",
    "front_recovery",
    "kendall",
    "pairwise_accuracy",
    "spearman",
]

BOOTSTRAP_RESAMPLES = 2000
PAIR_THRESHOLD_DB = 0.05
_NAN = float("nan")
#: Fewer archs than this get no interval: resampling 3 or 4 points gives degenerate, overconfident intervals.
MIN_BOOTSTRAP_N = 5
_CHUNK = 256  # resamples per vectorized block (memory: chunk x n x n)


@dataclass(frozen=True)
class Correlation:
    """A rank correlation with its percentile-bootstrap interval (NaN when it cannot be computed)."""

    estimate: float
    low: float
    high: float
    n: int
    resamples: int  # bootstrap resamples that were defined (x and y not constant)

    def to_dict(self) -> dict[str, object]:
        return {"estimate": _json(self.estimate), "low": _json(self.low), "high": _json(self.high), "n": self.n,
                "resamples": self.resamples, "confidence": 0.95, "method": "percentile bootstrap over architectures"}


@dataclass(frozen=True)
class PairwiseAccuracy:
    accuracy: float
    pairs: int
    threshold_db: float

    def to_dict(self) -> dict[str, float | int | None]:
        return {"accuracy": _json(self.accuracy), "pairs": self.pairs, "threshold_db": self.threshold_db}


@dataclass(frozen=True)
class FrontRecovery:
    long_front: tuple[int, ...]  # indices into the inputs
    proxy_front: tuple[int, ...]
    fraction: float
    hv_ratio: float

    @property
    def precision(self) -> float:
        """Share of the proxy front's archs that are on the long-run front (a big proxy front recovers cheaply)."""
        return len(set(self.long_front) & set(self.proxy_front)) / len(self.proxy_front) if self.proxy_front else _NAN

    def to_dict(self) -> dict[str, object]:
        return {"long_front": list(self.long_front), "proxy_front": list(self.proxy_front),
                "recovered": len(set(self.long_front) & set(self.proxy_front)), "fraction": _json(self.fraction),
                "precision": _json(self.precision),
                "hv_ratio": _json(self.hv_ratio), "cost_axis": "deploy MACs at 540x960"}


def _json(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _constant(values: Sequence[float]) -> bool:
    return len(values) < 2 or min(values) == max(values)


def kendall(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (scipy), NaN where `spearman` is (fewer than `MIN_RANK_PAIRS` points or a constant side)."""
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} != {len(y)}")
    if len(x) < MIN_RANK_PAIRS or _constant(x) or _constant(y):
        return _NAN
    from scipy.stats import kendalltau

    return float(kendalltau(x, y).statistic)


def _kendall_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row pair of (B, n) arrays; NaN where a row is constant."""
    n = x.shape[1]
    dx = np.sign(x[:, :, None] - x[:, None, :])
    dy = np.sign(y[:, :, None] - y[:, None, :])
    s = (dx * dy).sum(axis=(1, 2)) / 2  # each unordered pair is counted twice in the full matrix
    n0 = n * (n - 1) / 2
    tx = ((dx == 0).sum(axis=(1, 2)) - n) / 2  # tied pairs (the diagonal is not a pair)
    ty = ((dy == 0).sum(axis=(1, 2)) - n) / 2
    den = np.sqrt((n0 - tx) * (n0 - ty))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, s / np.where(den > 0, den, 1.0), np.nan)


def _interval(estimate: float, samples: np.ndarray, n: int) -> Correlation:
    valid = samples[~np.isnan(samples)]
    if math.isnan(estimate) or valid.size < 2:
        return Correlation(estimate, _NAN, _NAN, n, int(valid.size))
    low, high = np.percentile(valid, [2.5, 97.5])
    return Correlation(estimate, float(low), float(high), n, int(valid.size))


def bootstrap_correlations(
    x: Sequence[float], y: Sequence[float], *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[Correlation, Correlation]:
    """(Spearman, Kendall) of x vs y, each with its 95 % percentile-bootstrap interval.

    The same resampled index sets serve both statistics; `seed` makes the intervals reproducible."""
    n = len(x)
    rho, tau = spearman(x, y), kendall(x, y)
    if n < MIN_BOOTSTRAP_N or math.isnan(rho):
        return Correlation(rho, _NAN, _NAN, n, 0), Correlation(tau, _NAN, _NAN, n, 0)
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    index = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    rhos, taus = [], []
    for start in range(0, resamples, _CHUNK):
        block = index[start:start + _CHUNK]
        rhos.append(np.array([spearman(a, b) for a, b in zip(xs[block].tolist(), ys[block].tolist())], dtype=float))
        taus.append(_kendall_rows(xs[block], ys[block]))
    return _interval(rho, np.concatenate(rhos), n), _interval(tau, np.concatenate(taus), n)


def pairwise_accuracy(proxy: Sequence[float], long: Sequence[float], *, threshold_db: float = PAIR_THRESHOLD_DB) -> PairwiseAccuracy:
    """Share of the pairs with |long_i - long_j| > threshold that the proxy orders the same way."""
    if len(proxy) != len(long):
        raise ValueError(f"proxy and long differ in length: {len(proxy)} != {len(long)}")
    score, pairs = 0.0, 0
    for i in range(len(long)):
        for j in range(i + 1, len(long)):
            d_long = long[i] - long[j]
            if abs(d_long) <= threshold_db:
                continue
            pairs += 1
            d_proxy = proxy[i] - proxy[j]
            score += 0.5 if d_proxy == 0 else float(d_proxy * d_long > 0)
    return PairwiseAccuracy(score / pairs if pairs else _NAN, pairs, threshold_db)


def _area(points: Sequence[tuple[float, float]], *, ref_gain: float, ref_cost: float) -> float:
    """Area dominated by (gain: max, cost: min) points and bounded by the reference point."""
    area, best = 0.0, ref_gain
    for c, g in sorted((c, g) for g, c in points if g > ref_gain and c < ref_cost):
        if g > best:
            area += (ref_cost - c) * (g - best)
            best = g
    return area


def front_recovery(proxy: Sequence[float], long: Sequence[float], cost: Sequence[float]) -> FrontRecovery:
    """How much of the long-run front of (gain, cost) the proxy's front finds (module docstring)."""
    if not len(proxy) == len(long) == len(cost):
        raise ValueError("proxy, long and cost must have the same length")
    if not long:
        return FrontRecovery((), (), _NAN, _NAN)
    long_front = tuple(non_dominated([(g, c) for g, c in zip(long, cost)]))
    proxy_front = tuple(non_dominated([(g, c) for g, c in zip(proxy, cost)]))
    fraction = len(set(long_front) & set(proxy_front)) / len(long_front)
    ref = dict(ref_gain=min(long), ref_cost=1.1 * max(cost) if max(cost) > 0 else 1.0)
    full = _area([(long[i], cost[i]) for i in long_front], **ref)
    kept = _area([(long[i], cost[i]) for i in proxy_front], **ref)
    return FrontRecovery(long_front, proxy_front, fraction, kept / full if full > 0 else _NAN)


def format_interval(c: Mapping[str, Any]) -> str:
    """'+0.55 [+0.20, +0.81]' from a correlation dict (`estimate`, `low`, `high`); 'n/a' without an estimate."""
    if c.get("estimate") is None:
        return "n/a"
    if c.get("low") is None:
        return f"{c['estimate']:+.2f}"
    return f"{c['estimate']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}]"
