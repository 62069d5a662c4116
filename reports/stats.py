"""Small-sample statistics for ablations: t-intervals of means and differences, and claim verdicts.

Why our own functions: an ablation has 2-6 seeds per arm, so every interval must use Student's t
(not a normal approximation), the difference of two arms trained with the same seeds must be
*paired* (seed-to-seed variation is shared by both arms and cancels), and the verdict must be a
pure, documented function of the interval so that it can be unit-tested on constructed numbers.

Conventions: `confidence` is two-sided (0.95 -> the 2.5 % and 97.5 % quantiles); an interval that
cannot be computed (fewer than two values) has NaN bounds; a sample with zero spread gives the
degenerate interval [mean, mean] (e.g. MACs, which do not vary with the seed).

Verdict of a claim about (arm - reference), given the measured interval [lo, hi] and the claimed
range [a, b] (`nas.study.Claim`: increase -> 0 <= a, decrease -> b <= 0, equal -> a <= 0 <= b):

- **contradicts**: the interval and the claimed range do not overlap (hi < a or lo > b): every
  value the data allow is outside what was claimed (wrong direction, or the wrong size);
- **consistent**: they overlap, and
    - increase / decrease: the interval excludes zero on the claimed side (lo > 0, resp. hi < 0),
      i.e. the effect is real and its size is among the claimed ones;
    - equal: the whole interval lies inside the tolerance band (a <= lo and hi <= b);
- **inconclusive**: everything else (they overlap but the interval still contains zero, resp.
  sticks out of the band), and any interval with a NaN bound (too few seeds).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "CONSISTENT",
    "CONTRADICTS",
    "INCONCLUSIVE",
    "VERDICTS",
    "Interval",
    "diff_interval",
    "mean_interval",
    "paired_diff_interval",
    "summary_diff_interval",
    "summary_interval",
    "t_quantile",
    "verdict",
    "welch_diff_interval",
]

CONSISTENT = "consistent"
INCONCLUSIVE = "inconclusive"
CONTRADICTS = "contradicts"
VERDICTS: tuple[str, ...] = (CONSISTENT, INCONCLUSIVE, CONTRADICTS)
_NAN = float("nan")


@dataclass(frozen=True)
class Interval:
    """An estimate with a two-sided confidence interval; `method` says how it was computed."""

    estimate: float
    low: float
    high: float
    n: int
    method: str = "t"
    confidence: float = 0.95

    @property
    def defined(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def scaled(self, factor: float) -> Interval:
        """The interval times a positive factor (e.g. 100 / reference mean, for percent)."""
        if not factor > 0:
            raise ValueError(f"scale factor must be positive, got {factor!r}")
        return Interval(self.estimate * factor, self.low * factor, self.high * factor, self.n, self.method, self.confidence)


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def t_quantile(probability: float, df: float) -> float:
    """The `probability` quantile of Student's t with `df` degrees of freedom (scipy)."""
    from scipy import stats

    if not df > 0:
        raise ValueError(f"degrees of freedom must be positive, got {df!r}")
    return float(stats.t.ppf(probability, df))


def _interval(estimate: float, se: float, df: float, n: int, method: str, confidence: float) -> Interval:
    if se == 0:
        return Interval(estimate, estimate, estimate, n, method, confidence)
    if not df > 0 or math.isnan(se):
        return Interval(estimate, _NAN, _NAN, n, method, confidence)
    q = t_quantile(0.5 + confidence / 2, df)
    return Interval(estimate, estimate - q * se, estimate + q * se, n, method, confidence)


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    if n >= 2 and min(values) == max(values):
        return values[0], 0.0  # exactly no spread (fsum / n may be off by an ulp)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, _NAN
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var)


def mean_interval(values: Sequence[float], *, confidence: float = 0.95) -> Interval:
    """Mean of `values` with the t-interval mean +- t(1 - alpha/2, n - 1) * s / sqrt(n)."""
    _check_confidence(confidence)
    values = [float(v) for v in values]
    if not values:
        return Interval(_NAN, _NAN, _NAN, 0, "t", confidence)
    mean, sd = _mean_sd(values)
    n = len(values)
    if n < 2:
        return Interval(mean, _NAN, _NAN, n, "t", confidence)
    return _interval(mean, sd / math.sqrt(n), n - 1, n, "t", confidence)


def summary_interval(mean: float, sd: float, n: int, *, confidence: float = 0.95) -> Interval:
    """A t-interval from summary statistics (e.g. a latency measurement's mean, std and run count)."""
    _check_confidence(confidence)
    if n < 2:
        return Interval(float(mean), _NAN, _NAN, n, "t", confidence)
    return _interval(float(mean), float(sd) / math.sqrt(n), n - 1, n, "t", confidence)


def paired_diff_interval(a: Mapping[int, float], b: Mapping[int, float], *, confidence: float = 0.95) -> Interval:
    """Mean of a[s] - b[s] over the seeds s present in both, with the paired t-interval."""
    _check_confidence(confidence)
    seeds = sorted(set(a) & set(b))
    diffs = [float(a[s]) - float(b[s]) for s in seeds]
    iv = mean_interval(diffs, confidence=confidence) if diffs else Interval(_NAN, _NAN, _NAN, 0, "t", confidence)
    return Interval(iv.estimate, iv.low, iv.high, iv.n, "paired t", confidence)


def summary_diff_interval(
    mean_a: float, sd_a: float, n_a: int, mean_b: float, sd_b: float, n_b: int, *, confidence: float = 0.95
) -> Interval:
    """Welch's interval for mean_a - mean_b from summary statistics (unequal variances).

    Degrees of freedom by Welch-Satterthwaite: (va + vb)^2 / (va^2 / (na - 1) + vb^2 / (nb - 1))
    with va = sd_a^2 / n_a, vb = sd_b^2 / n_b."""
    _check_confidence(confidence)
    estimate = float(mean_a) - float(mean_b)
    n = n_a + n_b
    if n_a < 2 or n_b < 2:
        return Interval(estimate, _NAN, _NAN, n, "Welch t", confidence)
    va, vb = sd_a**2 / n_a, sd_b**2 / n_b
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(estimate, estimate, estimate, n, "Welch t", confidence)
    df = (va + vb) ** 2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1))
    return _interval(estimate, se, df, n, "Welch t", confidence)


def welch_diff_interval(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95) -> Interval:
    """mean(a) - mean(b) with Welch's t-interval (for samples that are not paired)."""
    if not a or not b:
        return Interval(_NAN, _NAN, _NAN, len(a) + len(b), "Welch t", confidence)
    mean_a, sd_a = _mean_sd([float(v) for v in a])
    mean_b, sd_b = _mean_sd([float(v) for v in b])
    return summary_diff_interval(mean_a, sd_a, len(a), mean_b, sd_b, len(b), confidence=confidence)


def diff_interval(a: Mapping[int, float], b: Mapping[int, float], *, confidence: float = 0.95) -> Interval:
    """Arm a minus arm b, values keyed by seed: paired by seed when at least two seeds match
    (the seeds present in both), else Welch's unpaired interval over all values."""
    common = set(a) & set(b)
    if len(common) >= 2:
        return paired_diff_interval(a, b, confidence=confidence)
    return welch_diff_interval(list(a.values()), list(b.values()), confidence=confidence)


def verdict(low: float, high: float, *, expect: str, claim_low: float, claim_high: float) -> str:
    """Consistent / inconclusive / contradicts for a measured interval vs a claim (module docstring)."""
    if expect not in ("increase", "decrease", "equal"):
        raise ValueError(f"expect must be increase, decrease or equal, got {expect!r}")
    if any(math.isnan(v) for v in (claim_low, claim_high)) or claim_low > claim_high:
        raise ValueError(f"bad claimed range [{claim_low}, {claim_high}]")
    if (expect == "increase" and claim_low < 0) or (expect == "decrease" and claim_high > 0):
        raise ValueError(f"the claimed range [{claim_low}, {claim_high}] does not match expect = {expect!r}")
    if expect == "equal" and not claim_low <= 0 <= claim_high:
        raise ValueError(f"an 'equal' claim needs a band containing 0, got [{claim_low}, {claim_high}]")
    if math.isnan(low) or math.isnan(high):
        return INCONCLUSIVE
    if low > high:
        raise ValueError(f"interval low {low} is above high {high}")
    if high < claim_low or low > claim_high:
        return CONTRADICTS
    if expect == "increase":
        return CONSISTENT if low > 0 else INCONCLUSIVE
    if expect == "decrease":
        return CONSISTENT if high < 0 else INCONCLUSIVE
    return CONSISTENT if claim_low <= low and high <= claim_high else INCONCLUSIVE
