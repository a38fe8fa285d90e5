"""Confidence intervals for error rates.

- Binomial proportions (FMR, FNMR, FPIR, FNIR): the **Wilson score interval** (Wilson 1927;
  recommended over the Wald interval by Brown, Cai & DasGupta 2001, "Interval estimation for
  a binomial proportion"). It behaves at 0 errors (upper bound ~ z^2 / n) where Wald collapses.
- Ratio of two rates (a group's error rate over the best group's): the **Katz log interval**
  (Katz et al. 1978), exp(log RR +- z * sqrt(1/a - 1/n1 + 1/b - 1/n2)), with 0.5 added to
  every count when either error count is 0 (Haldane-Anscombe correction).

Caveat stated in every report: impostor pairs that share a template are not independent, so
binomial intervals on FMR are narrower than the truth when one template appears in many
pairs. The tail model's threshold intervals use a bootstrap over templates instead.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np


def z_value(confidence: float) -> float:
    """Two-sided standard normal quantile for ``confidence`` (0.95 -> 1.95996...)."""
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(errors: np.ndarray | int, trials: np.ndarray | int,
                    confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval (lo, hi) for ``errors`` out of ``trials``; nan where trials == 0."""
    k = np.asarray(errors, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    z = z_value(confidence)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1.0 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
        lo = np.where(n > 0, np.clip(centre - half, 0.0, 1.0), np.nan)
        hi = np.where(n > 0, np.clip(centre + half, 0.0, 1.0), np.nan)
    # Exact endpoints at the boundaries (rounding can leave 1e-17 instead of 0).
    lo = np.where((k == 0) & (n > 0), 0.0, lo)
    hi = np.where((k == n) & (n > 0), 1.0, hi)
    return lo, hi


def rate_ratio_interval(a: int, n1: int, b: int, n2: int,
                        confidence: float = 0.95) -> tuple[float, float, float]:
    """(ratio, lo, hi) of (a/n1) / (b/n2) by the Katz log method; nan when undefined."""
    if n1 <= 0 or n2 <= 0:
        return math.nan, math.nan, math.nan
    if a == 0 and b == 0:
        return math.nan, math.nan, math.nan
    if a == 0 or b == 0:
        a_, b_, n1_, n2_ = a + 0.5, b + 0.5, n1 + 0.5, n2 + 0.5
    else:
        a_, b_, n1_, n2_ = float(a), float(b), float(n1), float(n2)
    ratio = (a_ / n1_) / (b_ / n2_)
    se = math.sqrt(max(1.0 / a_ - 1.0 / n1_ + 1.0 / b_ - 1.0 / n2_, 0.0))
    z = z_value(confidence)
    return ratio, ratio * math.exp(-z * se), ratio * math.exp(z * se)
