"""2-D hypervolume against areas worked out by hand (union of rectangles anchored at the reference)."""

from __future__ import annotations

import math

import pytest

from reports.hypervolume import hypervolume_2d, hypervolume_curve


def test_single_point_is_its_rectangle():
    # gain 2 dB at 4 ms, reference (0 dB, 10 ms): (10 - 4) * (2 - 0) = 12
    assert hypervolume_2d([(2.0, 4.0)], ref_latency=10.0) == pytest.approx(12.0)


def test_two_point_staircase():
    # A = (1 dB, 2 ms), B = (3 dB, 6 ms), ref (0, 10):
    # union = A's 8 x 1 rectangle + the part of B's 4 x 3 rectangle above A: 8 + 4 * 2 = 16
    assert hypervolume_2d([(1.0, 2.0), (3.0, 6.0)], ref_latency=10.0) == pytest.approx(16.0)
    # order of the input does not matter
    assert hypervolume_2d([(3.0, 6.0), (1.0, 2.0)], ref_latency=10.0) == pytest.approx(16.0)


def test_dominated_and_useless_points_add_nothing():
    base = hypervolume_2d([(1.0, 2.0), (3.0, 6.0)], ref_latency=10.0)
    extra = [
        (0.5, 5.0),  # dominated by A
        (-1.0, 1.0),  # worse than Lanczos (gain < 0)
        (5.0, 10.0),  # not faster than the reference latency
        (9.0, 12.0),  # slower than the reference
        (math.nan, 1.0),
    ]
    assert hypervolume_2d([(1.0, 2.0), (3.0, 6.0), *extra], ref_latency=10.0) == pytest.approx(base)


def test_reference_gain_shifts_the_floor():
    # ref gain 0.5 dB: (10 - 4) * (2 - 0.5) = 9
    assert hypervolume_2d([(2.0, 4.0)], ref_gain=0.5, ref_latency=10.0) == pytest.approx(9.0)


def test_three_points_by_hand():
    # P1 (1, 1), P2 (2, 3), P3 (4, 7), ref (0, 8): 7*1 + 5*1 + 1*2 = 14
    assert hypervolume_2d([(1, 1), (2, 3), (4, 7)], ref_latency=8.0) == pytest.approx(14.0)


def test_curve_is_running_hypervolume():
    pts = [(-1.0, 1.0), (1.0, 2.0), (0.5, 5.0), (3.0, 6.0)]
    assert hypervolume_curve(pts, ref_latency=10.0) == pytest.approx([0.0, 8.0, 8.0, 16.0])
