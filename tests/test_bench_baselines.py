"""The comparison engines of `dedup bench`: each finds exactly the brute-force pairs above the
threshold on a small gallery, and a sweep stops at the first setting reaching its target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dedup.bench.baselines import ExactEngine, FaissRefineEngine, HnswEngine, sweep
from dedup.bench.synth import SyntheticData, SynthSpec, get_profile
from dedup.config import IndexSettings
from dedup.index.gallery import Gallery
from dedup.index.params import SearchParams
from dedup.index.results import Candidates
from tests.support.galleries import build_gallery

THRESHOLD = 0.97  # 52 pairs on this data, at most 3 per probe


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Gallery, np.ndarray, np.ndarray, set[tuple[int, int]]]:
    data = SyntheticData(SynthSpec(get_profile("face-like", dim=32), gallery_size=3_000, queries=200,
                                   duplicate_rate=0.03, seed=5))
    gallery = build_gallery(tmp_path_factory.mktemp("g"), data,
                            IndexSettings(nlist=32, pq_m=8, train_size=2_000), seed=5)
    vectors = data.gallery().vectors
    probes = data.probes().vectors
    p, r = np.nonzero(probes @ vectors.T >= THRESHOLD)
    truth = set(zip(p.tolist(), r.tolist()))
    assert len(truth) > 40  # pairs to find
    return gallery, vectors, probes, truth


def pairs(found: Candidates) -> set[tuple[int, int]]:
    return set(zip(found.probe_index().tolist(), found.row_ids.tolist()))


def recall(found: Candidates, truth: set[tuple[int, int]]) -> float:
    return len(pairs(found) & truth) / len(truth)


PARAMS = SearchParams(threshold=THRESHOLD, depth=32, max_candidates=100)


@pytest.mark.parametrize("method", ["faiss-knn", "torch-matmul"])
def test_exact_finds_exactly_the_truth(small: tuple, method: str) -> None:
    _, vectors, probes, truth = small
    engine = ExactEngine(vectors, np.arange(vectors.shape[0], dtype=np.int64), PARAMS)
    engine.method = method
    found = engine.search(probes)
    assert pairs(found) == truth and not found.capped.any()


def test_exact_calibration_keeps_the_faster_method(small: tuple) -> None:
    _, vectors, probes, _ = small
    engine = ExactEngine(vectors, np.arange(vectors.shape[0], dtype=np.int64), PARAMS)
    engine.calibrate(probes)
    rates = engine.calibration
    assert set(rates) == {"faiss-knn", "torch-matmul"} and engine.method == max(rates, key=lambda m: rates[m])


def test_faiss_refine_tuned_to_full_recall_finds_exactly_the_truth(small: tuple) -> None:
    gallery, vectors, probes, truth = small
    assert gallery.codec is not None
    engine = FaissRefineEngine(gallery.codec.trained, vectors, np.arange(vectors.shape[0], dtype=np.int64), PARAMS,
                               gallery.codec.spec.code_bytes)
    engine.tune(lambda c: recall(c, truth), probes, 1.0)
    assert engine.sweep is not None and engine.sweep.reached
    assert pairs(engine.search(probes)) == truth
    # The sweep stopped at the first setting that reached the target, and not before.
    points = engine.sweep.points
    assert points[-1].recall == 1.0 and all(p.recall < 1.0 for p in points[:-1])
    # Then nprobe was narrowed between the grid point before and that one: the setting used
    # reaches the target, and every narrowed nprobe below it did not.
    chosen = engine.setting
    assert chosen["k_factor"] == points[-1].setting["k_factor"] and chosen["nprobe"] <= points[-1].setting["nprobe"]
    assert recall(engine.search(probes), truth) == 1.0
    narrowed = engine.sweep.narrowed
    assert all(p.recall < 1.0 for p in narrowed if p.setting["nprobe"] < chosen["nprobe"])
    below = [p.setting["nprobe"] for p in points if p.setting["nprobe"] < points[-1].setting["nprobe"]]
    if below and points[-1].setting["nprobe"] - max(below) > 1:
        assert narrowed, "a gap between grid points is narrowed"
        assert chosen["nprobe"] - 1 == max(below) or any(p.setting["nprobe"] == chosen["nprobe"] - 1 for p in narrowed)


def test_hnsw_tuned_to_full_recall_finds_exactly_the_truth(small: tuple) -> None:
    _, vectors, probes, truth = small
    rows = np.arange(vectors.shape[0], dtype=np.int64)
    engine = HnswEngine(lambda: iter([(vectors, rows)]), vectors.shape[0], vectors.shape[1], PARAMS, 16, 80, 0)
    engine.tune(lambda c: recall(c, truth), probes, 1.0)
    assert engine.sweep is not None and engine.sweep.reached
    assert pairs(engine.search(probes)) == truth
    points = engine.sweep.points
    assert all(p.recall < 1.0 for p in points[:-1]) and engine.ef == points[-1].setting["ef"]


def test_sweep_stops_at_first_reaching_or_at_a_plateau() -> None:
    tried: list[int] = []

    def recall_of(s: dict[str, int]) -> float:
        tried.append(s["x"])
        return {1: 0.5, 2: 0.9, 3: 0.99, 4: 1.0, 5: 1.0}[s["x"]]

    out = sweep([{"x": i} for i in range(1, 6)], recall_of, 0.99)
    assert out.reached and out.chosen == {"x": 3} and tried == [1, 2, 3]
    tried.clear()
    flat = sweep([{"x": i} for i in range(1, 6)], lambda s: min(0.9, 0.5 + 0.4 * s["x"]), 0.999, plateau_steps=2)
    assert not flat.reached and flat.plateau and len(flat.points) == 3 and flat.chosen == {"x": 1}


def test_cli_accepts_the_engines_and_rejects_unknown(tmp_path: Path) -> None:
    from dedup.bench.gallery import BenchSpec
    from dedup.errors import InvalidParameter

    assert BenchSpec(compare=("flat", "exact", "faiss-refine")).compare == ("exact", "faiss-refine")
    with pytest.raises(InvalidParameter, match="scann"):
        BenchSpec(compare=("scann",))
