"""The sharded IVF-PQ gallery: recall, shards, persistence, crashes, removal, limits."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from dedup.bench.synth import SyntheticData, SynthSpec, get_profile
from dedup.config import IndexSettings
from dedup.errors import GalleryError, InvalidParameter, ModelMismatch
from dedup.faults import CRASH_EXIT_CODE
from dedup.index.gallery import Gallery
from dedup.index.params import SearchParams
from tests.support.galleries import SMALL, build_gallery, exact_above


def _as_sets(found, n):
    return [set(found.of(i)[0].tolist()) for i in range(n)]


@pytest.mark.parametrize(("profile", "nprobe"), [("face-like", 16), ("uniform", 32)])
def test_duplicate_recall_against_exact_search(tmp_path: Path, profile: str, nprobe: int) -> None:
    data = SyntheticData(SynthSpec(get_profile(profile, dim=64), gallery_size=10_000, queries=300, seed=3))
    g = build_gallery(tmp_path, data)
    probes = data.probes()
    gal = data.gallery()
    threshold = data.profile.threshold
    found = g.search(probes.vectors, SearchParams(threshold=threshold, nprobe=nprobe, depth=64))
    wanted = got = 0
    for i in np.flatnonzero(probes.mated):
        mates = probes.mates(i)
        mates = mates[gal.vectors[mates] @ probes.vectors[i] >= threshold]
        wanted += mates.size
        got += len(set(mates.tolist()) & set(found.of(i)[0].tolist()))
    assert wanted > 100
    assert got / wanted >= 0.99
    # Scores are exact cosines (re-ranked on the stored float16 vectors), not PQ estimates.
    rows, scores = found.row_ids, found.scores
    exact = np.einsum("ij,ij->i", probes.vectors[found.probe_index()], gal.vectors[rows])
    assert np.abs(exact - scores).max() < 2e-3
    assert (scores >= threshold - 1e-6).all()


def test_exhaustive_parameters_equal_brute_force(face_gallery: Gallery, face_data: SyntheticData) -> None:
    probes = face_data.probes().vectors[:100]
    threshold = 0.85  # deep inside the face-like impostor tail: many rows per probe
    params = SearchParams(threshold=threshold, nprobe=64, depth=face_data.spec.gallery_size,
                          max_depth=face_data.spec.gallery_size, max_candidates=100_000)
    found = face_gallery.search(probes, params)
    truth = exact_above(face_data.gallery().vectors, probes, threshold)
    # float16 storage moves scores by < 1e-3: ignore rows that sit right at the threshold.
    scores = probes @ face_data.gallery().vectors.T
    for i, want in enumerate(truth):
        borderline = set(np.flatnonzero(np.abs(scores[i] - threshold) < 1e-3).tolist())
        assert (set(found.of(i)[0].tolist()) ^ want) <= borderline


def test_several_shards_equal_one_shard(tmp_path: Path, face_data: SyntheticData, face_gallery: Gallery) -> None:
    settings = IndexSettings(nlist=64, pq_m=16, pq_bits=4, train_size=5000, shard_capacity=2_500)
    sharded = build_gallery(tmp_path, face_data, settings, codec_from=face_gallery)
    assert len(sharded.shards()) == 5
    assert len(sharded) == len(face_gallery) == face_data.spec.gallery_size
    probes = face_data.probes().vectors
    # Exhaustive depth: both are then exact, so any difference is a merge or id-mapping bug.
    params = SearchParams(threshold=0.93, nprobe=64, depth=12_000, max_depth=12_000, max_candidates=10_000)
    one = face_gallery.search(probes, params)
    many = sharded.search(probes, params)
    assert _as_sets(one, len(probes)) == _as_sets(many, len(probes))
    np.testing.assert_allclose(np.sort(one.scores), np.sort(many.scores), atol=1e-6)


def test_persistence_round_trip(face_gallery: Gallery, face_data: SyntheticData) -> None:
    params = SearchParams(threshold=face_data.profile.threshold)
    probes = face_data.probes().vectors
    before = face_gallery.search(probes, params)
    reopened = Gallery.open(face_gallery.root, SMALL)
    after = reopened.search(probes, params)
    assert reopened.generation == face_gallery.generation
    np.testing.assert_array_equal(before.offsets, after.offsets)
    np.testing.assert_array_equal(before.row_ids, after.row_ids)
    np.testing.assert_array_equal(before.scores, after.scores)
    assert reopened.stats()["templates"] == face_data.spec.gallery_size
    assert reopened.enrolment_ids(np.array([0, 5, 11_999])) == ["e0", "e5", "e11999"]


def test_many_true_mates_are_all_returned(tmp_path: Path) -> None:
    """An identity captured 300 times: a probe of it must get all 300, then the cap works."""
    data = SyntheticData(SynthSpec(get_profile("face-like", dim=64), gallery_size=8_000, queries=1, seed=5))
    gal = data.gallery()
    rng = np.random.default_rng(0)
    person = gal.vectors[17]
    captures = person + 0.02 * rng.standard_normal((300, 64)).astype(np.float32)
    captures /= np.linalg.norm(captures, axis=1, keepdims=True)
    probe = captures[:1]
    g = Gallery.create(tmp_path, "m", 64, SMALL)
    g.train(gal.vectors[:5000])
    g.add(np.concatenate([gal.vectors, captures[1:]]), [f"e{i}" for i in range(8_000 + 299)])
    g = Gallery.open(tmp_path, SMALL)
    threshold = 0.97
    all_scores = np.concatenate([gal.vectors, captures[1:]]) @ probe[0]
    want = set(np.flatnonzero(all_scores >= threshold).tolist())
    assert len(want) >= 290
    found = g.search(probe, SearchParams(threshold=threshold, nprobe=8, depth=32, max_candidates=1000))
    # Stored float16 vectors move a score by < 1e-3: rows that close to the threshold may go either way.
    borderline = set(np.flatnonzero(np.abs(all_scores - threshold) < 1e-3).tolist())
    assert (set(found.of(0)[0].tolist()) ^ want) <= borderline
    assert not found.capped[0]
    assert found.searched_depth[0] > 32  # it had to deepen
    capped = g.search(probe, SearchParams(threshold=threshold, nprobe=8, depth=32, max_candidates=50))
    rows, scores = capped.of(0)
    assert capped.capped[0] and rows.size == 50
    best = np.sort(all_scores)[::-1][:50]
    np.testing.assert_allclose(scores, best, atol=2e-3)


def test_remove_and_compact(tmp_path: Path, face_data: SyntheticData) -> None:
    settings = IndexSettings(nlist=64, pq_m=16, pq_bits=4, train_size=5000, shard_capacity=4_000)
    g = build_gallery(tmp_path, face_data, settings)
    probes = face_data.probes()
    probes.vectors = probes.vectors[:120]
    # Exhaustive parameters, so the comparison is exact: removing rows must drop exactly them.
    n = face_data.spec.gallery_size
    params = SearchParams(threshold=0.93, nprobe=64, depth=n, max_depth=n, max_candidates=n)
    before = g.search(probes.vectors, params)
    victims = np.unique(before.row_ids)[:50]
    assert g.remove(victims) == 50
    assert g.remove(victims) == 0  # already gone: nothing changes
    g = Gallery.open(tmp_path, settings)
    after = g.search(probes.vectors, params)
    assert not set(after.row_ids.tolist()) & set(victims.tolist())
    assert len(g) == face_data.spec.gallery_size - 50
    kept_before = set(zip(before.probe_index().tolist(), before.row_ids.tolist()))
    kept_before = {(p, r) for p, r in kept_before if r not in set(victims.tolist())}
    kept_after = set(zip(after.probe_index().tolist(), after.row_ids.tolist()))
    assert kept_before == kept_after
    with pytest.raises(GalleryError):
        g.enrolment_ids(np.array([10**9]))
    report = g.compact()
    assert report["shards_after"] == 3
    g = Gallery.open(tmp_path, settings)
    assert len(g) == face_data.spec.gallery_size - 50
    assert g.stats()["removed"] == 0
    compacted = g.search(probes.vectors, params)
    assert set(zip(compacted.probe_index().tolist(), compacted.row_ids.tolist())) == kept_after


def test_add_is_exactly_once(tmp_path: Path, face_data: SyntheticData) -> None:
    g = build_gallery(tmp_path, face_data)
    gal = face_data.gallery()
    again = g.add(gal.vectors[:10], [f"e{r}" for r in range(10)])
    np.testing.assert_array_equal(again, np.arange(10))
    mixed = g.add(gal.vectors[:3], ["e0", "new-1", "e2"])
    assert mixed[0] == 0 and mixed[2] == 2 and mixed[1] == face_data.spec.gallery_size
    assert len(Gallery.open(tmp_path, SMALL)) == face_data.spec.gallery_size + 1


def test_bad_inputs_give_clear_errors(tmp_path: Path, face_gallery: Gallery) -> None:
    params = SearchParams(threshold=0.9)
    with pytest.raises(InvalidParameter, match=r"\(n, 64\)"):
        face_gallery.search(np.ones((2, 32), dtype=np.float32), params)
    with pytest.raises(InvalidParameter, match="L2-normalised"):
        face_gallery.search(np.ones((2, 64), dtype=np.float32), params)
    bad = np.full((1, 64), np.nan, dtype=np.float32)
    with pytest.raises(InvalidParameter, match="NaN"):
        face_gallery.search(bad, params)
    with pytest.raises(InvalidParameter, match="nprobe"):
        SearchParams(threshold=0.9, nprobe=0)
    with pytest.raises(InvalidParameter, match="threshold"):
        SearchParams(threshold=1.5)
    with pytest.raises(ModelMismatch, match="cannot enter"):
        face_gallery.add(np.eye(64, dtype=np.float32)[:1], ["x"], model_id="another-model")
    with pytest.raises(InvalidParameter, match="twice"):
        face_gallery.add(np.eye(64, dtype=np.float32)[:2], ["x", "x"])
    with pytest.raises(GalleryError, match="no gallery"):
        Gallery.open(tmp_path / "nowhere")
    with pytest.raises(GalleryError, match="already exists"):
        Gallery.create(face_gallery.root, "m", 64)
    empty = Gallery.create(tmp_path / "empty", "m", 64, SMALL)
    with pytest.raises(GalleryError, match="no trained codec"):
        empty.add(np.eye(64, dtype=np.float32)[:1], ["a"])
    with pytest.raises(InvalidParameter, match="pq_m"):
        Gallery.create(tmp_path / "odd", "m", 60, IndexSettings(pq_m=16)).train(
            np.eye(60, dtype=np.float32).repeat(100, axis=0))


def test_second_writer_is_refused(face_gallery: Gallery) -> None:
    with face_gallery.writer():
        other = Gallery.open(face_gallery.root, SMALL)
        with pytest.raises(GalleryError, match="another process"):
            other.add(np.eye(64, dtype=np.float32)[:1], ["late"])


_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from dedup.config import IndexSettings
    from dedup.index.gallery import Gallery
    settings = IndexSettings(nlist=64, pq_m=16, pq_bits=4, train_size=5000, shard_capacity=1500)
    g = Gallery.open(sys.argv[1], settings)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    g.add(x, [f"late-{i}" for i in range(4000)])
""")


@pytest.mark.parametrize("point", ["shard.files_written", "shard.renamed", "gallery.shards_written",
                                   "gallery.manifest_written"])
def test_crash_while_writing_leaves_previous_generation(tmp_path: Path, face_data: SyntheticData,
                                                        face_gallery: Gallery, point: str) -> None:
    root = tmp_path / "g"
    g = build_gallery(root, face_data, codec_from=face_gallery)
    probes = face_data.probes().vectors
    params = SearchParams(threshold=face_data.profile.threshold)
    before = g.search(probes, params)
    env = {**os.environ, "DEDUP_CRASH_AT": point}
    proc = subprocess.run([sys.executable, "-c", _WRITER, str(root)], env=env, capture_output=True, text=True)
    assert proc.returncode == CRASH_EXIT_CODE, proc.stderr
    survivor = Gallery.open(root, SMALL)
    assert survivor.generation == g.generation
    assert len(survivor) == face_data.spec.gallery_size
    after = survivor.search(probes, params)
    np.testing.assert_array_equal(before.row_ids, after.row_ids)
    # The next writer cleans up what the crash left and succeeds.
    proc = subprocess.run([sys.executable, "-c", _WRITER, str(root)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    done = Gallery.open(root, SMALL)
    assert len(done) == face_data.spec.gallery_size + 4000
    leftovers = [p.name for p in (root / "shards").iterdir() if p.name not in done.manifest.shards]
    assert leftovers == [] or all(name in _kept_shards(done) for name in leftovers)


def test_crash_after_switch_shows_the_new_generation(tmp_path: Path, face_data: SyntheticData,
                                                     face_gallery: Gallery) -> None:
    root = tmp_path / "g"
    g = build_gallery(root, face_data, codec_from=face_gallery)
    env = {**os.environ, "DEDUP_CRASH_AT": "gallery.switched"}
    proc = subprocess.run([sys.executable, "-c", _WRITER, str(root)], env=env, capture_output=True, text=True)
    assert proc.returncode == CRASH_EXIT_CODE, proc.stderr
    now = Gallery.open(root, SMALL)
    assert now.generation == g.generation + 1
    assert len(now) == face_data.spec.gallery_size + 4000


def _kept_shards(g: Gallery) -> set[str]:
    import json

    names: set[str] = set()
    for path in (g.root / "generations").glob("*.json"):
        names.update(json.loads(path.read_text())["shards"])
    return names


def test_compact_retrain_keeps_every_row_and_its_matches(tmp_path: Path, face_data: SyntheticData) -> None:
    settings = IndexSettings(nlist=64, pq_m=16, pq_bits=4, train_size=5000, shard_capacity=5_000)
    g = Gallery.create(tmp_path, face_data.profile.model_id, 64, settings)
    # Bootstrap codec trained on another profile (as a new deployment does), then retrained.
    other = SyntheticData(SynthSpec(get_profile("uniform", dim=64), gallery_size=5_000, queries=0, seed=1))
    g.train(other.gallery().vectors)
    old_version = g.codec.version
    gal = face_data.gallery()
    g.add(gal.vectors, [f"e{r}" for r in gal.row_ids])
    report = Gallery.open(tmp_path, settings).compact(retrain=True)
    assert report["codec_version"] != old_version
    g = Gallery.open(tmp_path, settings)
    assert g.manifest.codec_version == report["codec_version"] and len(g) == face_data.spec.gallery_size
    probes = face_data.probes()
    found = g.search(probes.vectors, SearchParams(threshold=0.95, nprobe=16))
    mated = np.flatnonzero(probes.mated)
    # the mated probes whose mate scores >= the threshold exactly (what the search must return)
    findable = [i for i in mated if float((gal.vectors[probes.mates(i)] @ probes.vectors[i]).max()) >= 0.95]
    hits = sum(bool(set(probes.mates(i).tolist()) & set(found.of(i)[0].tolist())) for i in findable)
    assert len(findable) > mated.size / 2 and hits / len(findable) > 0.95
    assert g.enrolment_ids(np.array([123])) == ["e123"]


def test_many_small_writes_are_merged_and_nothing_is_lost(tmp_path: Path, face_data: SyntheticData,
                                                          face_gallery: Gallery) -> None:
    settings = IndexSettings(nlist=64, pq_m=16, pq_bits=4, train_size=5000, shard_capacity=8_000,
                             small_shard_limit=3)
    g = Gallery.create(tmp_path, face_data.profile.model_id, 64, settings)
    g.use_codec(face_gallery.codec)
    gal = face_data.gallery()
    for lo in range(0, 2_000, 200):  # ten small units, as `dedup run` writes them
        g.add(gal.vectors[lo:lo + 200], [f"e{r}" for r in range(lo, lo + 200)])
        assert len(Gallery.open(tmp_path, settings).manifest.shards) <= settings.small_shard_limit + 1
    g = Gallery.open(tmp_path, settings)
    assert len(g) == 2_000
    assert g.find_enrolments([f"e{r}" for r in (0, 999, 1999)] + ["e2000"]) == {"e0": 0, "e999": 999, "e1999": 1999}
    np.testing.assert_allclose(g.exact_vectors(np.arange(2_000)), gal.vectors[:2_000], atol=2e-3)


@pytest.mark.parametrize(("drift", "valid"), [(0.0, True), (5e-3, True), (0.02, False), (-0.5, False)])
def test_both_searches_give_a_probe_the_same_verdict(face_gallery: Gallery, drift: float, valid: bool) -> None:
    """The gallery's IVF-PQ search and the exact torch search share one probe check
    (dedup.index.probes): a probe whose norm drifts is accepted or refused by both alike."""
    from dedup.index.exact import exact_search

    vectors = face_gallery.exact_vectors(np.arange(200, dtype=np.int64))
    probe = vectors[:1] * (1.0 + drift)
    verdicts = []
    for search in (lambda: face_gallery.search(probe, SearchParams(threshold=0.9)),
                   lambda: exact_search(vectors, np.arange(200), probe, 0.9, 5, device="cpu")):
        try:
            search()
            verdicts.append(True)
        except InvalidParameter as exc:
            assert "L2-normalised" in str(exc)
            verdicts.append(False)
    assert verdicts == [valid, valid]
