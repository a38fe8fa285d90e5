"""Confidence intervals: closed forms at the boundaries, symmetry, Katz ratio by hand."""

from __future__ import annotations

import math

import numpy as np

from dedup.evaluation.stats import rate_ratio_interval, wilson_interval, z_value


def test_z_value() -> None:
    assert abs(z_value(0.95) - 1.959964) < 1e-6


def test_wilson_closed_forms_at_zero_and_all() -> None:
    z2 = z_value(0.95) ** 2
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and abs(hi - z2 / (10 + z2)) < 1e-12
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and abs(lo - 10 / (10 + z2)) < 1e-12


def test_wilson_symmetric_and_contains_estimate() -> None:
    lo, hi = wilson_interval(np.array([5, 3, 40]), np.array([10, 1000, 50]))
    assert abs((lo[0] + hi[0]) / 2 - 0.5) < 1e-12
    assert np.all(lo < np.array([0.5, 0.003, 0.8])) and np.all(hi > np.array([0.5, 0.003, 0.8]))
    lo, hi = wilson_interval(0, 0)
    assert math.isnan(float(lo)) and math.isnan(float(hi))


def test_katz_ratio_by_hand() -> None:
    r, lo, hi = rate_ratio_interval(20, 1000, 10, 2000)
    assert abs(r - 4.0) < 1e-12
    se = math.sqrt(1 / 20 - 1 / 1000 + 1 / 10 - 1 / 2000)
    assert abs(lo - 4.0 * math.exp(-1.959964 * se)) < 1e-5 and abs(hi - 4.0 * math.exp(1.959964 * se)) < 1e-5
    r, lo, hi = rate_ratio_interval(1, 1, 0, 1)          # zero count: 0.5 added to every count
    assert abs(r - 3.0) < 1e-12 and lo < 3.0 < hi
    assert math.isnan(rate_ratio_interval(0, 5, 0, 5)[0])
