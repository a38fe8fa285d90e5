"""The coarse step (each probe's nearest IVF lists): right against a float64 brute force, and
the same for a probe whichever batch it arrives in (a re-run after a crash, a deepening round
of a few probes, another Dask block), so a probe's decision never depends on its neighbours
in the queue. And the gallery's search gives the same rows at every probe block size."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from dedup.bench.synth import SyntheticData, SynthSpec, get_profile
from dedup.config import IndexSettings
from dedup.index.coarse import centroids, nearest_lists
from dedup.index.codec import Codec, CodecSpec
from dedup.index.gallery import Gallery
from dedup.index.params import SearchParams
from dedup.index.rotation import to_index_space
from tests.support.galleries import build_gallery


def _templates(n: int, dim: int, seed: int) -> np.ndarray:
    data = SyntheticData(SynthSpec(get_profile("face-like", dim=dim), n, 10, 0.01, 0.5, seed))
    return np.concatenate([data.block(b).vectors for b in range(data.n_blocks)])[:n]


@pytest.fixture(scope="module", params=[("opq", 128, 256), ("none", 64, 96), ("opq", 32, 300)],
                ids=lambda p: f"{p[0]}-d{p[1]}-nlist{p[2]}")
def codec_and_probes(request: pytest.FixtureRequest) -> tuple[Codec, np.ndarray]:
    rotation, dim, nlist = request.param
    x = _templates(12_000, dim, seed=dim)
    codec = Codec.train(x[:10_000], CodecSpec(dim, nlist, dim // 4, 4), rotation=rotation)
    return codec, np.ascontiguousarray(x[10_000:])


def test_nearest_lists_are_the_nearest_centroids(codec_and_probes: tuple[Codec, np.ndarray]) -> None:
    codec, probes = codec_and_probes
    dist, lists = nearest_lists(codec.trained, probes, 16)
    cents, _ = centroids(codec.trained)
    coded = to_index_space(codec.trained, probes).astype(np.float64)
    true = ((coded[:, None, :] - cents[None, :, :].astype(np.float64)) ** 2).sum(axis=2)
    np.testing.assert_allclose(dist, np.take_along_axis(true, lists, axis=1), rtol=1e-5, atol=1e-6)
    assert (np.diff(dist, axis=1) >= 0).all(), "nearest first"
    # The 16 chosen are the 16 nearest (up to float32 ties at the boundary).
    kth = np.sort(true, axis=1)[:, 15]
    assert (np.take_along_axis(true, lists, axis=1) <= kth[:, None] + 1e-6).all()
    # nprobe = nlist sorts every list.
    _, every = nearest_lists(codec.trained, probes[:5], codec.nlist)
    assert sorted(every[0].tolist()) == list(range(codec.nlist))


def test_a_probe_gets_the_same_lists_in_any_batch(codec_and_probes: tuple[Codec, np.ndarray]) -> None:
    codec, probes = codec_and_probes
    whole_d, whole_l = nearest_lists(codec.trained, probes, 24)
    for size in (1, 5, 13, 300, 777):
        for lo in range(0, min(probes.shape[0], 3 * size + 40), size):
            d, lists = nearest_lists(codec.trained, probes[lo:lo + size], 24)
            assert np.array_equal(lists, whole_l[lo:lo + size]), f"batch of {size} at {lo}: other lists"
            assert np.array_equal(d, whole_d[lo:lo + size]), f"batch of {size} at {lo}: other distances"
    # The rotation into the index's space is batch-independent too.
    one = np.concatenate([to_index_space(codec.trained, probes[i:i + 1]) for i in range(50)])
    assert np.array_equal(one, to_index_space(codec.trained, probes[:50]))


@pytest.fixture(scope="module")
def two_shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[Gallery, np.ndarray]:
    data = SyntheticData(SynthSpec(get_profile("face-like", dim=64), gallery_size=6_000, queries=600,
                                   duplicate_rate=0.3, seed=11))
    settings = IndexSettings(nlist=64, pq_m=16, train_size=5_000, shard_capacity=3_500)
    gallery = build_gallery(Path(tmp_path_factory.mktemp("g")), data, settings, seed=11)
    assert len(gallery.shards()) >= 2
    return gallery, data.probes().vectors


@pytest.mark.parametrize("early_exit", [False, True], ids=["fixed", "early-exit"])
def test_the_gallery_finds_the_same_rows_at_every_block_size(two_shards: tuple[Gallery, np.ndarray],
                                                               early_exit: bool) -> None:
    gallery, probes = two_shards
    params = SearchParams(threshold=0.9, nprobe=8, depth=8, early_exit=early_exit)
    whole = gallery.search(probes, params, block=probes.shape[0])
    assert whole.row_ids.size > 0, "nothing above the threshold: the comparison would prove nothing"
    for block in (1, 7, 64, 250):
        part = gallery.search(probes, params, block=block)
        assert np.array_equal(part.offsets, whole.offsets), f"block {block}: other counts per probe"
        assert np.array_equal(part.row_ids, whole.row_ids), f"block {block}: other rows"
        assert np.array_equal(part.scores, whole.scores)
        assert np.array_equal(part.capped, whole.capped)


def test_a_shard_searched_with_the_shared_coarse_step_finds_what_it_finds_alone(
        two_shards: tuple[Gallery, np.ndarray]) -> None:
    gallery, probes = two_shards
    assert gallery.codec is not None
    params = gallery.with_bounds(SearchParams(threshold=0.9, nprobe=8, depth=8))
    coarse = nearest_lists(gallery.codec.trained, probes, params.nprobe)
    for shard in gallery.shards():
        for p in (params, dataclasses.replace(params, early_exit=True)):
            alone, shared = shard.search(probes, p), shard.search(probes, p, coarse=coarse)
            assert np.array_equal(alone.offsets, shared.offsets) and np.array_equal(alone.row_ids, shared.row_ids)
