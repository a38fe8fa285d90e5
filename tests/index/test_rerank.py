"""The exact re-rank (``dedup.index.search.rerank``) and the gallery's once-per-block rotation:
scores are the stored vectors' dot products, the same in any batch, ``-inf`` where nothing
was asked, and a damaged index cannot make the re-rank read past the stored vectors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from dedup.bench.synth import SyntheticData, SynthSpec, get_profile
from dedup.errors import GalleryError
from dedup.index.params import SearchParams
from dedup.index.rotation import rotation_of
from dedup.index.search import rerank
from tests.support.galleries import SMALL, build_gallery


def _data(dim: int, seed: int) -> SyntheticData:
    return SyntheticData(SynthSpec(get_profile("face-like", dim=dim), gallery_size=3_000, queries=300,
                                   duplicate_rate=0.03, seed=seed))


def _positions(rng: np.random.Generator, n_probes: int, k: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    positions = rng.integers(0, rows, size=(n_probes, k))
    positions[rng.random((n_probes, k)) < 0.2] = -1  # FAISS pads short proposal lists with -1
    mask = (positions >= 0) & (rng.random((n_probes, k)) < 0.8)
    return positions, mask


@pytest.mark.parametrize("exact_dtype", ["float32", "float16"])
@pytest.mark.parametrize(("dim", "seed"), [(64, 3), (128, 17)])
def test_rerank_scores_are_the_stored_vectors_dot_products(tmp_path: Path, exact_dtype: str, dim: int,
                                                           seed: int) -> None:
    data = _data(dim, seed)
    settings = dataclasses.replace(SMALL, exact_dtype=exact_dtype, train_size=2_000)
    shard = build_gallery(tmp_path, data, settings, seed=seed).shards()[0]
    probes = data.probes().vectors
    positions, mask = _positions(np.random.default_rng(seed), probes.shape[0], 16, shard.meta.count)

    got = rerank(shard.vectors, probes, positions, mask)

    stored = np.asarray(shard.vectors, dtype=np.float64)
    want = np.einsum("md,mkd->mk", probes.astype(np.float64), stored[np.maximum(positions, 0)])
    assert got.dtype == np.float32
    assert np.all(np.isneginf(got[~mask]))
    np.testing.assert_allclose(got[mask], want[mask], rtol=0, atol=2e-6)


@pytest.mark.parametrize("exact_dtype", ["float32", "float16"])
def test_rerank_gives_a_probe_the_same_scores_in_any_batch(tmp_path: Path, exact_dtype: str) -> None:
    data = _data(96, 29)
    settings = dataclasses.replace(SMALL, exact_dtype=exact_dtype, train_size=2_000)
    shard = build_gallery(tmp_path, data, settings, seed=29).shards()[0]
    probes = data.probes().vectors
    positions, mask = _positions(np.random.default_rng(5), probes.shape[0], 24, shard.meta.count)
    whole = rerank(shard.vectors, probes, positions, mask)
    for lo, hi in [(0, 1), (7, 10), (100, 300), (3, 257)]:
        part = rerank(shard.vectors, probes[lo:hi], positions[lo:hi], mask[lo:hi])
        assert np.array_equal(part, whole[lo:hi])  # bit for bit, -inf included


def test_a_proposed_position_past_the_stored_vectors_is_refused(tmp_path: Path) -> None:
    data = _data(64, 3)
    shard = build_gallery(tmp_path, data, dataclasses.replace(SMALL, train_size=2_000)).shards()[0]
    probes = data.probes().vectors[:4]
    positions = np.zeros((4, 3), dtype=np.int64)
    positions[2, 1] = shard.meta.count  # one past the end: FAISS itself would read out of bounds
    with pytest.raises(GalleryError, match="row position"):
        rerank(shard.vectors, probes, positions, positions >= 0)


@pytest.mark.parametrize("early_exit", [False, True])
def test_the_gallerys_shared_rotation_gives_each_shards_own_answer(tmp_path: Path, early_exit: bool) -> None:
    """The gallery rotates and coarse-assigns a block once for all shards; each shard's answer
    is the one it gives when it rotates the probes itself."""
    data = _data(64, 11)
    settings = dataclasses.replace(SMALL, train_size=2_000, shard_capacity=1_100)  # three shards, OPQ codec
    gallery = build_gallery(tmp_path / "g", data, settings, seed=11)
    assert len(gallery.shards()) == 3 and gallery.codec is not None
    assert rotation_of(gallery.codec.trained) is not None
    probes = data.probes().vectors
    params = gallery.with_measured(SearchParams(threshold=0.95, nprobe=8, depth=8, early_exit=early_exit,
                                                   max_candidates=10_000))
    together = gallery.search(probes, params, block=128)
    for shard in gallery.shards():
        alone = shard.search(probes, params)
        lo, hi = shard.meta.min_row_id, shard.meta.max_row_id
        mine = (together.row_ids >= lo) & (together.row_ids <= hi)
        assert np.array_equal(together.probe_index()[mine], alone.probe_index())
        assert np.array_equal(together.row_ids[mine], alone.row_ids)
        assert np.array_equal(together.scores[mine], alone.scores)
    assert together.row_ids.size > 0
