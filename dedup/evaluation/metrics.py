"""Verification metrics (one-to-one): DET, FNMR at FMR, per-group error rates.

Definitions (ISO/IEC 19795-1): at threshold t, FMR(t) is the fraction of impostor pairs
scoring >= t, FNMR(t) the fraction of genuine pairs scoring < t. Per group: FMR over
impostor pairs whose two templates are both in the group (cross-group pairs are reported on
their own row), FNMR over genuine pairs of the group's identities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dedup.evaluation.scores import EDGES, GenuineScores, ImpostorSample, count_ge_edges
from dedup.evaluation.stats import rate_ratio_interval, wilson_interval
from dedup.evaluation.tail import TailModel

MIN_EXPECTED_ERRORS = 10   # empirical FMR targets need >= this many impostor pairs above


@dataclass
class DetCurve:
    """FMR and FNMR at every 1e-4 threshold where both are defined."""

    threshold: np.ndarray
    fmr: np.ndarray
    fnmr: np.ndarray


def det_curve(imp: ImpostorSample, gen: GenuineScores) -> DetCurve:
    """FMR/FNMR at every bin edge (thresholds resolved to 1e-4)."""
    ge = count_ge_edges(imp.total)
    n_imp = max(imp.n_pairs, 1)
    g = np.sort(gen.scores.astype(np.float64))
    fnmr = np.searchsorted(g, EDGES, side="left") / max(g.size, 1)
    fmr = ge / n_imp
    # Keep the part where something happens: from the first edge where FMR < 1 to FNMR == 1.
    lo = max(int(np.searchsorted(-fmr, -1.0, side="right")) - 1, 0)
    hi = min(int(np.searchsorted(fnmr, 1.0, side="left")) + 1, EDGES.size)
    return DetCurve(EDGES[lo:hi].copy(), fmr[lo:hi], fnmr[lo:hi])


def empirical_threshold(imp: ImpostorSample, target: float) -> float:
    """Smallest threshold with at most ``floor(target * n)`` impostor pairs at or above it.

    Exact (the float above the (k+1)-th highest impostor score) when the kept tail holds that
    score; otherwise the first 1e-4 edge that satisfies it.
    """
    n = imp.n_pairs
    k = int(math.floor(target * n + 1e-9))
    if k < imp.tail_scores.size:
        v = np.sort(imp.tail_scores)[::-1]
        return float(np.nextafter(v[k], np.float32(np.inf)))
    ge = count_ge_edges(imp.total)
    return float(EDGES[int(np.flatnonzero(ge <= k)[0])])


@dataclass
class OperatingPoint:
    """FNMR at one FMR target. ``source`` says where the threshold comes from: ``empirical`` (at
    least ``MIN_EXPECTED_ERRORS`` sampled impostor pairs above it), ``tail-model`` (fewer: the
    generalized Pareto tail extrapolates), or ``not estimable`` (fewer and no tail model: the
    figures are None and ``note`` says from how many pairs)."""

    fmr_target: float
    threshold: float | None
    source: str                 # "empirical", "tail-model" or "not estimable"
    fmr: float | None           # empirical FMR at the threshold (may be 0 beyond the sample)
    fnmr: float | None
    fnmr_ci: tuple[float, float] | None
    impostor_pairs: int
    false_matches: int
    genuine_pairs: int
    false_non_matches: int
    note: str = ""


def fnmr_at_fmr(imp: ImpostorSample, gen: GenuineScores, targets: list[float], tail: TailModel | None,
                confidence: float = 0.95) -> list[OperatingPoint]:
    """FNMR at each FMR target: empirical where the sample holds >= 10 impostor pairs above the
    threshold, else the tail model's threshold, else not estimable (``source`` says which)."""
    out = []
    n = imp.n_pairs
    for f in targets:
        if n * f >= MIN_EXPECTED_ERRORS:
            t, source = empirical_threshold(imp, f), "empirical"
            note = f"read from {n:,} sampled impostor pairs ({imp.count_ge(t):,} at or above it)"
        elif tail is not None:
            t, source = tail.threshold_for_fmr(f), "tail-model"
            note = (f"FMR {f:g} needs >= {math.ceil(MIN_EXPECTED_ERRORS / f):,} pairs to read; extrapolated by the "
                    f"tail model fitted to the highest of {n:,} pairs")
        else:
            out.append(OperatingPoint(f, None, "not estimable", None, None, None, n, 0, gen.n_pairs, 0,
                                      f"not estimable from {n:,} impostor pairs (FMR {f:g} needs >= "
                                      f"{math.ceil(MIN_EXPECTED_ERRORS / f):,} pairs, and no tail model could be fitted)"))
            continue
        fm = imp.count_ge(t)
        fnm = gen.count_lt(t)
        lo, hi = wilson_interval(fnm, gen.n_pairs, confidence)
        out.append(OperatingPoint(f, t, source, fm / max(n, 1), fnm / max(gen.n_pairs, 1),
                                  (float(lo), float(hi)), n, fm, gen.n_pairs, fnm, note))
    return out


@dataclass
class GroupRow:
    """Error rates of one demographic group at the operating threshold."""

    group: str
    impostor_pairs: int
    false_matches: int
    fmr: float | None
    fmr_ci: tuple[float, float] | None
    fmr_ratio: float | None          # to the group with the lowest FMR
    fmr_ratio_ci: tuple[float, float] | None
    genuine_pairs: int
    false_non_matches: int
    fnmr: float | None
    fnmr_ci: tuple[float, float] | None
    fnmr_ratio: float | None
    fnmr_ratio_ci: tuple[float, float] | None


CROSS_GROUP = "(cross-group)"


def per_group(imp: ImpostorSample, gen: GenuineScores, threshold: float, confidence: float = 0.95
              ) -> list[GroupRow]:
    """FMR and FNMR of every group at ``threshold``, with Wilson intervals and Katz ratio intervals
    to the best group; a last row holds cross-group impostor pairs (no FNMR)."""
    names = imp.group_names
    g_count = len(names)
    fm = [imp.count_ge(threshold, which=g) for g in range(g_count + 1)]
    n_imp = [int(imp.hist[g].sum()) for g in range(g_count + 1)]
    fnm = [gen.count_lt(threshold, which=g) for g in range(g_count)]
    n_gen = [int(np.count_nonzero(gen.group == g)) for g in range(g_count)]
    best_fmr = _best(fm[:g_count], n_imp[:g_count])
    best_fnmr = _best(fnm, n_gen)
    rows = []
    for g in range(g_count + 1):
        fmr, fmr_ci = _rate(fm[g], n_imp[g], confidence)
        r_fmr = _ratio(fm[g], n_imp[g], best_fmr, fm, n_imp, confidence)
        if g < g_count:
            fnmr, fnmr_ci = _rate(fnm[g], n_gen[g], confidence)
            r_fnmr = _ratio(fnm[g], n_gen[g], best_fnmr, fnm, n_gen, confidence)
            name, ng, nf = names[g], n_gen[g], fnm[g]
        else:
            fnmr, fnmr_ci, r_fnmr, name, ng, nf = None, None, (None, None), CROSS_GROUP, 0, 0
        rows.append(GroupRow(name, n_imp[g], fm[g], fmr, fmr_ci, r_fmr[0], r_fmr[1],
                             ng, nf, fnmr, fnmr_ci, r_fnmr[0], r_fnmr[1]))
    return rows


def _rate(k: int, n: int, confidence: float) -> tuple[float | None, tuple[float, float] | None]:
    if n == 0:
        return None, None
    lo, hi = wilson_interval(k, n, confidence)
    return k / n, (float(lo), float(hi))


def _best(errors: list[int], trials: list[int]) -> int | None:
    """Index of the group with the lowest rate (None if no group has trials)."""
    rates = [(e / n if n else math.inf) for e, n in zip(errors, trials)]
    if not rates or min(rates) == math.inf:
        return None
    return int(np.argmin(rates))


def _ratio(k: int, n: int, best: int | None, errors: list[int], trials: list[int], confidence: float
           ) -> tuple[float | None, tuple[float, float] | None]:
    if best is None or n == 0:
        return None, None
    r, lo, hi = rate_ratio_interval(k, n, errors[best], trials[best], confidence)
    if math.isnan(r):
        return None, None
    return r, (lo, hi)
