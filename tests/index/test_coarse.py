"""The coarse step (each probe's nearest IVF lists): right against a float64 brute force, and
exactly the exact distances correctly rounded (ties by list id) with either screen, and the
same for a probe whichever batch it arrives in (a re-run after a crash, a deepening round
of a few probes, another Dask block), so a probe's decision never depends on its neighbours
in the queue. And the gallery's search gives the same rows at every probe block size."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dedup.bench.synth import SyntheticData, SynthSpec, get_profile
from dedup.config import IndexSettings
from dedup.index import coarse
from dedup.index.coarse import centroids, distances, nearest_lists
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


@pytest.mark.parametrize("screen", [None, "float32", "float64"], ids=["auto", "screen32", "screen64"])
def test_a_probe_gets_the_same_lists_in_any_batch(codec_and_probes: tuple[Codec, np.ndarray],
                                                   screen: str | None) -> None:
    codec, probes = codec_and_probes
    coded = to_index_space(codec.trained, probes)
    whole_d, whole_l = nearest_lists(codec.trained, probes, 24)
    for size in (1, 5, 13, 300, 777):
        for lo in range(0, min(probes.shape[0], 3 * size + 40), size):
            if screen is None:
                d, lists = nearest_lists(codec.trained, probes[lo:lo + size], 24)
            else:
                d, lists = coarse._nearest_lists(codec.trained, coded[lo:lo + size], 24, screen=screen)
            assert np.array_equal(lists, whole_l[lo:lo + size]), f"batch of {size} at {lo}: other lists"
            assert np.array_equal(d, whole_d[lo:lo + size]), f"batch of {size} at {lo}: other distances"
    # The rotation into the index's space is batch-independent too.
    one = np.concatenate([to_index_space(codec.trained, probes[i:i + 1]) for i in range(50)])
    assert np.array_equal(one, to_index_space(codec.trained, probes[:50]))


def _fraction_rounded(p: np.ndarray, cent: np.ndarray, norm: np.float32) -> np.float32:
    """|p|^2 - 2 p.c + norm in exact rational arithmetic, rounded to the nearest float32 (ties
    to even): an independent reference for the implementation's ``math.fsum`` path."""
    ps, cs = [Fraction(float(v)) for v in p], [Fraction(float(v)) for v in cent]
    exact = sum(a * a - 2 * a * b for a, b in zip(ps, cs, strict=True)) + Fraction(float(norm))
    near = np.float32(float(exact))
    options = [np.nextafter(near, np.float32(-np.inf)), near, np.nextafter(near, np.float32(np.inf))]
    return min(options, key=lambda f: (abs(Fraction(float(f)) - exact), int(f.view(np.uint32)) & 1))


def _exact_distances(index: Any, coded: np.ndarray) -> tuple[np.ndarray, int]:
    """Every probe's exact distance to every centroid, correctly rounded to float32, and how
    many entries needed exact arithmetic. A float64 product is within 1e-12 A of the exact
    value (d <= 512: gamma_514 < 6e-14); where that interval rounds to one float32 it is the
    answer, elsewhere the exact rational sum decides."""
    cents, norms = centroids(index)
    wide, c64 = coded.astype(np.float64), cents.astype(np.float64)
    sq = np.einsum("ij,ij->i", wide, wide)
    plain = sq[:, None] + norms[None, :].astype(np.float64) - 2.0 * (wide @ c64.T)
    cmax = math.sqrt(float(np.einsum("ij,ij->i", c64, c64).max()))
    width = 1e-12 * (sq + 2.0 * np.sqrt(sq) * cmax + float(norms.max()))[:, None]
    out, up = (plain - width).astype(np.float32), (plain + width).astype(np.float32)
    unsure = np.argwhere(out != up)
    for i, j in unsure:
        out[i, j] = _fraction_rounded(coded[i], cents[j], norms[j])
    return out, len(unsure)


@pytest.fixture(scope="module", params=[("opq", 128, 256), ("none", 128, 256), ("opq", 512, 128), ("none", 512, 128)],
                ids=lambda p: f"{p[0]}-d{p[1]}-nlist{p[2]}")
def exact_case(request: pytest.FixtureRequest) -> tuple[Any, np.ndarray, np.ndarray]:
    """A trained index, probes in its space (face-like, and the awkward: zero, a duplicate,
    tiny, huge, not unit, the centroids themselves, midpoints of two), and the exact answer."""
    rotation, dim, nlist = request.param
    train = 10_000 if dim <= 128 else 5_000
    x = _templates(train + 300, dim, seed=dim + 1)
    index = Codec.train(x[:train], CodecSpec(dim, nlist, dim // 16, 4), rotation=rotation).trained
    coded = to_index_space(index, x[train:])
    cents, _ = centroids(index)
    rng = np.random.default_rng(dim)
    probes = np.concatenate([
        coded, np.zeros((2, dim)), coded[:1], coded[1:4] * 1e-3, coded[4:7] * 1e3, coded[7:10] * 37,
        rng.standard_normal((20, dim)), cents[:8], (cents[8:12] + cents[12:16]) / 2]).astype(np.float32)
    exact, _ = _exact_distances(index, probes)
    return index, probes, exact


@pytest.mark.parametrize("screen", [None, "float32", "float64"], ids=["auto", "screen32", "screen64"])
def test_nearest_lists_are_the_exact_distances_correctly_rounded(
        exact_case: tuple[Any, np.ndarray, np.ndarray], screen: str | None) -> None:
    index, probes, exact = exact_case
    nlist = exact.shape[1]
    # The reference: every list by (exact distance, list id).
    order = np.lexsort((np.broadcast_to(np.arange(nlist), exact.shape), exact))
    for k in (1, 8, 64, nlist, nlist + 7):
        if screen is None:
            dist, lists = nearest_lists(index, probes, k, rotated=True)
        else:
            dist, lists = coarse._nearest_lists(index, probes, k, screen=screen)
        want = order[:, :min(k, nlist)]
        assert np.array_equal(lists, want), f"nprobe {k}: other lists"
        assert np.array_equal(dist.view(np.uint32), np.take_along_axis(exact, want, axis=1).view(np.uint32)), \
            f"nprobe {k}: other distances"


def test_nearest_lists_match_the_plain_float64_product(exact_case: tuple[Any, np.ndarray, np.ndarray]) -> None:
    """Against the float64 product rounded (``distances``, the previous coarse step): the same
    bits wherever that product's own rounding error cannot cross a float32 boundary, which is
    all but a handful of entries (the probes that are centroids, mostly)."""
    index, probes, exact = exact_case
    plain = distances(index, probes, rotated=True)
    _, unsure = _exact_distances(index, probes)
    assert (plain != exact).sum() <= unsure <= 0.001 * exact.size
    dist, lists = nearest_lists(index, probes, 64, rotated=True)
    differ = np.take_along_axis(plain, lists, axis=1) != dist
    assert differ.sum() <= unsure
    face_like = probes.shape[0] - 44  # the held-out templates come first
    ref = np.lexsort((np.broadcast_to(np.arange(plain.shape[1]), plain.shape), plain))[:face_like, :64]
    if not (plain[:face_like] != exact[:face_like]).any():
        assert np.array_equal(lists[:face_like], ref)


@pytest.mark.parametrize("screen", ["float32", "float64"])
def test_awkward_probes_get_the_same_answer_in_any_batch(exact_case: tuple[Any, np.ndarray, np.ndarray],
                                                         screen: str) -> None:
    index, probes, _ = exact_case
    whole_d, whole_l = coarse._nearest_lists(index, probes, 16, screen=screen)
    tail = probes.shape[0] - 44
    for size in (1, 7, 44):
        for lo in range(tail, probes.shape[0], size):
            d, lists = coarse._nearest_lists(index, probes[lo:lo + size], 16, screen=screen)
            assert np.array_equal(lists, whole_l[lo:lo + size]) and np.array_equal(d, whole_d[lo:lo + size])
    dup = tail + 2  # the duplicate of probe 0
    assert np.array_equal(whole_l[dup], whole_l[0]) and np.array_equal(whole_d[dup], whole_d[0])


def test_exact_rounding_settles_halfway_cases() -> None:
    """Where the float64 sum lands exactly halfway between two float32 values, the rest of
    the exact sum decides, not float32's ties-to-even."""
    def rounded(p: list[float], cent: list[float], norm: float) -> np.float32:
        return coarse._exactly_rounded(np.array(p, np.float32), np.array(cent, np.float32), np.float32(norm))

    # 1 + 2^-24 + 2^-60: halfway between 1 and 1 + 2^-23 in float64, a little above exactly.
    assert rounded([1.0, 2.0**-12, 2.0**-30], [0.0, 0.0, 0.0], 0.0) == np.float32(1 + 2.0**-23)
    # 1 + 3 2^-24 - 2^-60: halfway between 1 + 2^-23 and 1 + 2^-22, a little below.
    assert rounded([1.0, 2.0**-12, 2.0**-30], [0.0, 0.0, 2.0**-30], 2.0**-23) == np.float32(1 + 2.0**-23)
    rng = np.random.default_rng(5)
    for _ in range(200):
        p, cent = rng.standard_normal((2, 24)).astype(np.float32)
        norm = np.float32(np.dot(cent, cent))
        assert rounded(p.tolist(), cent.tolist(), float(norm)) == _fraction_rounded(p, cent, norm)


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
    params = gallery.with_measured(SearchParams(threshold=0.9, nprobe=8, depth=8))
    coarse = nearest_lists(gallery.codec.trained, probes, params.nprobe)
    for shard in gallery.shards():
        for p in (params, dataclasses.replace(params, early_exit=True)):
            alone, shared = shard.search(probes, p), shard.search(probes, p, coarse=coarse)
            assert np.array_equal(alone.offsets, shared.offsets) and np.array_equal(alone.row_ids, shared.row_ids)
