"""The threshold-aware search (list pruning by measured bounds, re-rank only what can reach
the threshold) against the fixed search and exact search, over a seeded grid of seeds,
dimensions and thresholds: it never misses a pair above the threshold that the fixed
search found, and everything it returns is a true pair."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from dedup.bench.synth import SyntheticData, SynthSpec, get_profile
from dedup.config import IndexSettings
from dedup.index.gallery import Gallery
from dedup.index.params import SearchParams
from dedup.index.results import Candidates
from tests.support.galleries import build_gallery

SEEDS = (3, 17, 29)
DIMS = (32, 64, 128)
THRESHOLDS = (0.85, 0.92, 0.957)


def pairs(found: Candidates) -> set[tuple[int, int]]:
    return set(zip(found.probe_index().tolist(), found.row_ids.tolist()))


def exact_pairs(vectors: np.ndarray, probes: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    scores = probes @ vectors.T
    p, r = np.nonzero(scores >= threshold)
    return set(zip(p.tolist(), r.tolist()))


@pytest.fixture(scope="module", params=[(s, d) for s in SEEDS for d in DIMS], ids=lambda p: f"seed{p[0]}-d{p[1]}")
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Gallery, SyntheticData]:
    seed, dim = request.param
    data = SyntheticData(SynthSpec(get_profile("face-like", dim=dim), gallery_size=4_000, queries=250,
                                   duplicate_rate=0.03, seed=seed))
    settings = IndexSettings(nlist=64, pq_m=dim // 4, train_size=3_000, shard_capacity=2_500)
    return build_gallery(tmp_path_factory.mktemp("g"), data, settings, seed=seed), data


@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_early_exit_misses_nothing_the_fixed_search_found(built: tuple[Gallery, SyntheticData],
                                                          threshold: float) -> None:
    from dedup.index.search import cpu_ivf

    gallery, data = built
    probes = data.probes().vectors
    assert gallery.codec is not None and gallery.codec.bounds is not None
    # The threshold-aware path is the one tested.
    assert gallery.codec.bounds.at(threshold) is not None and all(cpu_ivf(s.index) for s in gallery.shards())
    params = SearchParams(threshold=threshold, nprobe=32, depth=16, early_exit=True)
    fast = gallery.search(probes, params)
    fixed = gallery.search(probes, dataclasses.replace(params, early_exit=False))
    truth = exact_pairs(data.gallery().vectors, probes, threshold - 1e-5)
    assert pairs(fixed), "the grid point has no pairs above the threshold to miss"
    # Capped probes keep their max_candidates highest rows found: there the early exit may
    # find higher rows than the fixed search, never lower ones.
    both_capped = fixed.capped & fast.capped
    missed = {(p, r) for p, r in pairs(fixed) - pairs(fast) if not both_capped[p]}
    assert missed == set()
    for p in np.flatnonzero(both_capped):
        _, s_fast = fast.of(p)
        _, s_fixed = fixed.of(p)
        assert s_fast.size == s_fixed.size and np.all(s_fast >= s_fixed - 1e-6)
    assert pairs(fast) <= truth  # every returned row is really above the threshold
    assert np.all(fast.scores >= threshold)
    # Capped probes are reported at least as often as by the fixed search.
    assert not (fixed.capped & ~fast.capped).any()


def test_bounds_prune_lists_and_fall_back_below_the_grid(built: tuple[Gallery, SyntheticData]) -> None:
    from dedup.index.coarse import nearest_lists

    gallery, data = built
    codec = gallery.codec
    assert codec is not None and codec.bounds is not None
    probes = data.probes().vectors
    gap, _ = codec.bounds.at(0.957)  # type: ignore[misc]
    dist, _ = nearest_lists(codec.trained, probes, 32)
    visited = (dist - dist[:, :1] <= gap).sum(axis=1)
    assert visited.mean() < 32  # most probes visit fewer lists than nprobe
    assert codec.bounds.at(0.5) is None  # below the measured grid: the fixed search
    low = SearchParams(threshold=0.5, nprobe=8, max_candidates=5, early_exit=True)
    a = gallery.search(probes[:50], low)
    b = gallery.search(probes[:50], dataclasses.replace(low, early_exit=False))
    for f in ("offsets", "row_ids", "scores", "capped"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


def test_bounds_survive_save_and_load(tmp_path: Path) -> None:
    from dedup.index.codec import Codec, CodecSpec

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3_000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    codec = Codec.train(x, CodecSpec(32, 16, 8, 4))
    bounds = codec.bounds
    assert bounds is not None and bounds.pairs > 0
    # Running maxima: a bound at a lower threshold is never smaller.
    assert list(bounds.list_gap) == sorted(bounds.list_gap) and list(bounds.est_error) == sorted(bounds.est_error)
    codec.save(tmp_path / "c.faiss")
    again = Codec.load(tmp_path / "c.faiss")
    assert again.bounds == bounds
    assert bounds.at(0.955) == (bounds.list_gap[4], bounds.est_error[4])  # the next lower grid point, 0.95


def test_the_default_search_finds_mates_from_outside_the_codecs_training_sample(tmp_path: Path) -> None:
    """A new deployment's codec is trained on synthetic templates; its real templates come from
    elsewhere. The threshold-aware search's bounds are measured on the training sample, and on
    such probes it lost mates (8 of 40 here, 2026-12-01), so the default search is the fixed
    one (``search.early_exit`` off), which finds every one."""
    from dedup.config import Settings
    from dedup.pipeline import synthetic_sample

    rng = np.random.default_rng(0)
    sample = synthetic_sample(128, 20_000)
    mean = sample.mean(axis=0)
    mean /= np.linalg.norm(mean)
    gallery = Gallery.create(tmp_path / "g", "m", 128)
    gallery.train(sample)
    probes, mates = [], []
    for _ in range(40):  # directions far from the synthetic cone, as real templates were
        d = rng.normal(size=128)
        d -= (d @ mean) * mean
        base = -0.2 * mean + 0.98 * d / np.linalg.norm(d) + 0.25 * rng.normal(size=128) / np.sqrt(128)
        base /= np.linalg.norm(base)
        noise = rng.normal(size=128)
        noise -= (noise @ base) * base
        c = rng.uniform(0.93, 0.999)
        probes.append(base)
        mates.append(c * base + np.sqrt(1 - c * c) * noise / np.linalg.norm(noise))
    gallery.add(np.asarray(mates, dtype=np.float32), [f"m{i}" for i in range(len(mates))])
    gallery = Gallery.open(tmp_path / "g")
    params = SearchParams.from_settings(Settings().search, 0.92)
    assert not params.early_exit
    found = gallery.search(np.asarray(probes, dtype=np.float32), params)
    assert found.counts().tolist() == [1] * len(probes)

