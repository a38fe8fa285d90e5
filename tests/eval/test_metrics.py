"""DET, FNMR at FMR and the per-group table against brute force and a hand-computed table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dedup.evaluation.metrics import CROSS_GROUP, det_curve, empirical_threshold, fnmr_at_fmr, per_group
from dedup.evaluation.scores import EDGES, genuine_scores, impostor_sample
from tests.support.scores import brute_pairs


def test_det_equals_brute_force_at_every_threshold(small_set: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    vectors, ident, group = small_set
    imp = impostor_sample(vectors, ident, group, ["a", "b", "c"], max_pairs=10**9, block_elements=5000)
    gen = genuine_scores(vectors, ident, group)
    det = det_curve(imp, gen)
    scores, is_imp, _, is_gen = brute_pairs(vectors, ident, group)
    s_imp, s_gen = scores[is_imp].astype(np.float64), scores[is_gen].astype(np.float64)
    assert det.threshold.size > 100
    for k in range(0, det.threshold.size, 7):
        t = det.threshold[k]
        assert t in EDGES
        assert det.fmr[k] == np.count_nonzero(s_imp >= t) / s_imp.size
        assert det.fnmr[k] == np.count_nonzero(s_gen < t) / s_gen.size


def test_fnmr_at_fmr_equals_brute_force(small_set: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    vectors, ident, group = small_set
    imp = impostor_sample(vectors, ident, group, ["a", "b", "c"], max_pairs=10**9, tail_keep=6000)
    gen = genuine_scores(vectors, ident, group)
    scores, is_imp, _, is_gen = brute_pairs(vectors, ident, group)
    s_imp = np.sort(scores[is_imp])[::-1]
    s_gen = scores[is_gen].astype(np.float64)
    targets = [1e-1, 1e-2, 1e-3]
    points = fnmr_at_fmr(imp, gen, targets, tail=None)
    for f, p in zip(targets, points):
        k = math.floor(f * s_imp.size)
        t = float(np.nextafter(s_imp[k], np.float32(np.inf)))   # just above the (k+1)-th highest
        assert p.source == "empirical" and p.threshold == t
        assert p.false_matches == np.count_nonzero(s_imp >= t) <= k
        assert p.false_non_matches == np.count_nonzero(s_gen < t)
        assert p.fnmr == p.false_non_matches / s_gen.size
    # Beyond the kept tail the threshold falls back to the 1e-4 edges, still honouring the target.
    t = empirical_threshold(imp, 0.5)
    assert np.count_nonzero(s_imp >= t) <= 0.5 * s_imp.size


def _hand_set() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seven 2-d templates at known angles (degrees): scores are cosines of the differences.

    group A: a1 (id 1, 0), a2 (id 1, 10), a3 (id 2, 50), a4 (id 3, 180)
    group B: b1 (id 4, 200), b2 (id 4, 270), b3 (id 5, 215)
    """
    deg = np.radians([0, 10, 50, 180, 200, 270, 215])
    v = np.stack([np.cos(deg), np.sin(deg)], axis=1).astype(np.float32)
    return v, np.array([1, 1, 2, 3, 4, 4, 5]), np.array([0, 0, 0, 0, 1, 1, 1], dtype=np.int16)


def test_per_group_equals_hand_computed_table() -> None:
    # At threshold 0.5 (cos 60 deg), by hand:
    #   A impostor pairs: a1a3 (50: match), a1a4 (180), a2a3 (40: match), a2a4 (170), a3a4 (130) -> 5 pairs, 2 false matches
    #   A genuine: a1a2 (10: match) -> 1 pair, 0 false non-matches
    #   B impostor pairs: b1b3 (15: match), b2b3 (55: match) -> 2 pairs, 2 false matches
    #   B genuine: b1b2 (70: no match) -> 1 pair, 1 false non-match
    #   cross pairs: 4 x 3 = 12; matches a4b1 (20) and a4b3 (35) -> 2 false matches
    v, ident, group = _hand_set()
    imp = impostor_sample(v, ident, group, ["A", "B"], max_pairs=10**6)
    gen = genuine_scores(v, ident, group)
    rows = {r.group: r for r in per_group(imp, gen, 0.5)}
    a, b, x = rows["A"], rows["B"], rows[CROSS_GROUP]
    assert (a.impostor_pairs, a.false_matches, a.genuine_pairs, a.false_non_matches) == (5, 2, 1, 0)
    assert (b.impostor_pairs, b.false_matches, b.genuine_pairs, b.false_non_matches) == (2, 2, 1, 1)
    assert (x.impostor_pairs, x.false_matches, x.genuine_pairs) == (12, 2, 0)
    assert a.fmr == pytest.approx(0.4) and b.fmr == 1.0 and x.fmr == pytest.approx(2 / 12)
    assert a.fnmr == 0.0 and b.fnmr == 1.0 and x.fnmr is None
    # Ratios to the best group: FMR best is A (0.4); FNMR best is A (0, so 0.5 is added to every count).
    assert a.fmr_ratio == pytest.approx(1.0) and b.fmr_ratio == pytest.approx(2.5)
    assert b.fnmr_ratio == pytest.approx((1.5 / 1.5) / (0.5 / 1.5))
    assert a.fmr_ci is not None and a.fmr_ci[0] < 0.4 < a.fmr_ci[1]
