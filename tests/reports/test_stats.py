"""reports.stats: t-intervals checked against hand-computed values and table quantiles, and the
claim verdict on constructed intervals (every branch of the definition in the module docstring)."""

from __future__ import annotations

import math

import pytest

from reports.stats import (
    CONSISTENT,
    CONTRADICTS,
    INCONCLUSIVE,
    diff_interval,
    mean_interval,
    paired_diff_interval,
    summary_diff_interval,
    summary_interval,
    t_quantile,
    verdict,
    welch_diff_interval,
)

INF = math.inf


@pytest.mark.parametrize(("df", "q"), [(1, 12.7062047), (2, 4.3026527), (4, 2.7764451), (10, 2.2281389), (30, 2.0422725)])
def test_t_quantiles_match_the_printed_table(df, q):
    assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-6)


def test_mean_interval_by_hand():
    # mean 3, s = sqrt(2.5), se = s / sqrt(5) = sqrt(0.5), t(0.975, 4) = 2.7764451
    iv = mean_interval([1, 2, 3, 4, 5])
    half = 2.7764451 * math.sqrt(0.5)
    assert (iv.estimate, iv.n) == (3.0, 5)
    assert iv.low == pytest.approx(3 - half, abs=1e-6) and iv.high == pytest.approx(3 + half, abs=1e-6)
    # a 90 % interval uses t(0.95, 4) = 2.1318468 and is narrower
    iv90 = mean_interval([1, 2, 3, 4, 5], confidence=0.90)
    assert iv90.high - 3 == pytest.approx(2.1318468 * math.sqrt(0.5), abs=1e-6)


def test_degenerate_samples():
    one = mean_interval([0.7])
    assert one.estimate == 0.7 and math.isnan(one.low) and math.isnan(one.high) and not one.defined
    flat = mean_interval([2.5, 2.5, 2.5])  # e.g. MACs: no spread, exact
    assert (flat.low, flat.high) == (2.5, 2.5)
    odd = 26.064  # math.fsum([odd] * 3) / 3 != odd in floating point
    assert mean_interval([odd] * 3) == mean_interval([odd] * 3) and mean_interval([odd] * 3).low == odd == mean_interval([odd] * 3).high
    empty = mean_interval([])
    assert empty.n == 0 and math.isnan(empty.estimate)


def test_paired_difference_by_hand_uses_only_matching_seeds():
    a = {0: 1.0, 1: 2.0, 2: 4.0, 7: 100.0}
    b = {0: 0.5, 1: 1.0, 2: 3.0, 9: -50.0}
    # diffs 0.5, 1, 1: mean 5/6, s = sqrt(1/12), se = s / sqrt(3) = 1/6, t(0.975, 2) = 4.3026527
    iv = paired_diff_interval(a, b)
    assert iv.n == 3 and iv.method == "paired t"
    assert iv.estimate == pytest.approx(5 / 6)
    assert iv.low == pytest.approx(5 / 6 - 4.3026527 / 6, abs=1e-6)
    assert iv.high == pytest.approx(5 / 6 + 4.3026527 / 6, abs=1e-6)
    assert diff_interval(a, b) == iv


def test_pairing_removes_the_shared_seed_effect():
    # the arm is exactly 0.1 better on every seed; seeds differ by a lot
    ref = {0: 1.0, 1: 3.0, 2: -2.0}
    arm = {s: v + 0.1 for s, v in ref.items()}
    paired = diff_interval(arm, ref)
    assert paired.low == pytest.approx(0.1) and paired.high == pytest.approx(0.1)
    unpaired = welch_diff_interval(list(arm.values()), list(ref.values()))
    assert unpaired.estimate == pytest.approx(0.1) and unpaired.low < -3 and unpaired.high > 3


def test_welch_by_hand():
    # a: mean 2, var 1 (n 3) -> va = 1/3; b: mean 0, var 4 (n 3) -> vb = 4/3; se = sqrt(5/3)
    # df = (5/3)^2 / ((1/3)^2 / 2 + (4/3)^2 / 2) = (25/9) / (17/18) = 50/17
    iv = welch_diff_interval([1, 2, 3], [-2, 0, 2])
    from scipy import stats

    q = stats.t.ppf(0.975, 50 / 17)
    assert iv.estimate == 2 and iv.method == "Welch t"
    assert iv.high - 2 == pytest.approx(q * math.sqrt(5 / 3), rel=1e-9)
    assert diff_interval({0: 1, 1: 2, 2: 3}, {5: -2, 6: 0, 7: 2}) == iv  # no matching seeds -> Welch
    same = summary_diff_interval(2.0, 1.0, 3, 0.0, 2.0, 3)
    assert (same.low, same.high) == pytest.approx((iv.low, iv.high))


def test_summary_interval_for_latency_runs():
    iv = summary_interval(100.0, 4.0, 5)  # 5 timed runs, std 4 ms
    assert iv.high - 100 == pytest.approx(2.7764451 * 4 / math.sqrt(5), abs=1e-6)
    assert math.isnan(summary_interval(100.0, 0.0, 1).low)  # one run: no interval
    assert summary_interval(7.0, 0.0, 4).low == 7.0


def test_scaled_to_percent():
    iv = summary_interval(-2.0, 1.0, 4).scaled(100 / 40)
    assert iv.estimate == pytest.approx(-5.0) and iv.low < -5 < iv.high
    with pytest.raises(ValueError):
        iv.scaled(-1.0)


# -- verdicts ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("interval", "claim", "expected"),
    [
        # increase, default range [0, inf]
        ((0.02, 0.08), ("increase", 0, INF), CONSISTENT),
        ((-0.01, 0.08), ("increase", 0, INF), INCONCLUSIVE),  # contains zero
        ((-0.3, -0.1), ("increase", 0, INF), CONTRADICTS),  # significantly the other way
        ((-0.3, 0.0), ("increase", 0, INF), INCONCLUSIVE),  # touches 0: an increase of 0 is not ruled out... nor shown
        # increase with a size: "+0.01 to +0.05 dB"
        ((0.02, 0.03), ("increase", 0.01, 0.05), CONSISTENT),
        ((0.04, 0.30), ("increase", 0.01, 0.05), CONSISTENT),  # overlaps the claimed sizes, excludes 0
        ((0.10, 0.30), ("increase", 0.01, 0.05), CONTRADICTS),  # real, but far larger than claimed
        ((0.001, 0.008), ("increase", 0.01, 0.05), CONTRADICTS),  # real, but smaller than claimed
        ((-0.02, 0.008), ("increase", 0.01, 0.05), CONTRADICTS),  # rules out every claimed size
        ((-0.02, 0.02), ("increase", 0.01, 0.05), INCONCLUSIVE),
        # decrease: "about -0.02 dB" written as [-0.03, -0.01]
        ((-0.025, -0.015), ("decrease", -0.03, -0.01), CONSISTENT),
        ((-0.05, 0.01), ("decrease", -0.03, -0.01), INCONCLUSIVE),
        ((-0.5, -0.2), ("decrease", -0.03, -0.01), CONTRADICTS),
        ((0.01, 0.2), ("decrease", -INF, 0), CONTRADICTS),
        ((-3.0, -1.0), ("decrease", -INF, 0), CONSISTENT),
        # equal: tolerance bands
        ((0.0, 0.0), ("equal", 0, 0), CONSISTENT),  # identical deploy MACs
        ((-0.01, 0.02), ("equal", -0.05, 0.05), CONSISTENT),
        ((-0.01, 0.09), ("equal", -0.05, 0.05), INCONCLUSIVE),
        ((0.06, 0.09), ("equal", -0.05, 0.05), CONTRADICTS),
        ((-0.04, 3.0), ("equal", -0.05, INF), CONSISTENT),  # non-inferiority: "no loss beyond 0.05"
        ((-0.2, -0.06), ("equal", -0.05, INF), CONTRADICTS),
        ((1e-9, 1e-9), ("equal", 0, 0), CONTRADICTS),
        # too few seeds
        ((math.nan, math.nan), ("increase", 0, INF), INCONCLUSIVE),
        ((math.nan, math.nan), ("equal", -1, 1), INCONCLUSIVE),
    ],
)
def test_verdict_on_constructed_intervals(interval, claim, expected):
    expect, a, b = claim
    assert verdict(*interval, expect=expect, claim_low=a, claim_high=b) == expected


@pytest.mark.parametrize(
    ("expect", "a", "b"),
    [("increase", -0.1, 0.1), ("decrease", -0.1, 0.1), ("equal", 0.1, 0.2), ("grow", 0, 1), ("equal", 0.2, 0.1)],
)
def test_verdict_refuses_a_malformed_claim(expect, a, b):
    with pytest.raises(ValueError):
        verdict(0.0, 1.0, expect=expect, claim_low=a, claim_high=b)


def test_verdict_refuses_an_inverted_interval():
    with pytest.raises(ValueError):
        verdict(1.0, 0.0, expect="increase", claim_low=0, claim_high=INF)
