"""Impostor/genuine scoring equals a brute-force computation of every pair."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dedup.evaluation.scores import EDGES, NBINS, bin_index, genuine_scores, impostor_sample
from tests.support.scores import brute_pairs


@given(st.lists(st.floats(-1.0, 1.0, width=32), min_size=1, max_size=50))
@settings(max_examples=200, deadline=None)
def test_bin_index_is_exact(values: list[float]) -> None:
    s = np.array(values, dtype=np.float32)
    k = bin_index(s)
    assert np.all((EDGES[k] <= s) & (s < EDGES[k + 1]))


def test_bin_index_on_edges() -> None:
    s = EDGES[[0, 1, 9300, 19300, NBINS - 1]].astype(np.float32)
    k = bin_index(s)
    assert np.all((EDGES[k] <= s.astype(np.float64)) & (s.astype(np.float64) < EDGES[k + 1]))


def test_exhaustive_impostor_histogram_equals_brute_force(small_set: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    vectors, ident, group = small_set
    sample = impostor_sample(vectors, ident, group, ["a", "b", "c"], max_pairs=10**9, tail_keep=500,
                             block_elements=3000)
    assert sample.exhaustive
    scores, imp, gcode, _ = brute_pairs(vectors, ident, group)
    for g in range(4):
        sel = imp & (gcode == g)
        expected = np.bincount(bin_index(scores[sel]), minlength=NBINS)
        assert np.array_equal(sample.hist[g], expected), g
    assert sample.n_pairs == int(imp.sum())
    # The kept tail holds exactly the impostor pairs at or above the cut; counts above any
    # threshold over the cut are exact, per group too.
    top = np.sort(scores[imp])[::-1]
    assert sample.tail_scores.size == int((top >= sample.tail_cut).sum()) >= 500
    for t in (float(sample.tail_cut), float(top[100]), float(top[3]) + 1e-7, 0.9876543):
        if t >= sample.tail_cut:
            assert sample.count_ge(t) == int((scores[imp].astype(np.float64) >= t).sum())
            for g in range(4):
                sel = imp & (gcode == g)
                assert sample.count_ge(t, which=g) == int((scores[sel].astype(np.float64) >= t).sum())


def test_sampled_rows_are_all_paired(small_set: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    vectors, ident, group = small_set
    sample = impostor_sample(vectors, ident, group, ["a", "b", "c"], max_pairs=5000,
                             rng=np.random.default_rng(3), block_elements=2000)
    assert not sample.exhaustive
    m = sample.rows.size
    assert m * (m - 1) // 2 <= 5000 < (m + 1) * m // 2
    sub = sample.rows
    scores, imp, _, _ = brute_pairs(vectors[sub], ident[sub], group[sub])
    assert sample.n_pairs == int(imp.sum())
    assert np.array_equal(sample.total, np.bincount(bin_index(scores[imp]), minlength=NBINS))


def test_genuine_scores_equal_brute_force(small_set: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    vectors, ident, group = small_set
    gen = genuine_scores(vectors, ident, group)
    scores, _, _, genuine = brute_pairs(vectors, ident, group)
    assert gen.n_pairs == int(genuine.sum())
    assert np.allclose(np.sort(gen.scores), np.sort(scores[genuine]), atol=1e-6)
    i, j = np.triu_indices(vectors.shape[0], k=1)
    for g in range(3):
        assert int((gen.group == g).sum()) == int((genuine & (group[i] == g)).sum())
