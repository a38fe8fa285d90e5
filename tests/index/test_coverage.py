"""List coverage: the list count a search needs, measured on mated pairs found without the
search. The ranks must mean what the search does (a mate at rank r is visited with r + 1
lists), the list count must follow the pairs and the recall target, too few pairs must
leave the configured nprobe in force, and a damaged measurement must stop the search."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from dedup.bench.synth import SyntheticData, SynthSpec, get_profile, write_parquet
from dedup.errors import GalleryError
from dedup.evaluation.stats import wilson_interval
from dedup.index.coarse import nearest_lists
from dedup.index.coverage import ListCoverage, identity_pairs, measure_coverage, own_lists
from dedup.index.gallery import Gallery
from dedup.index.params import SearchParams
from tests.support.cli import Cli
from tests.support.galleries import SMALL as SETTINGS
from tests.support.galleries import build_gallery


@pytest.fixture(scope="module")
def planted() -> SyntheticData:
    # Many planted duplicates, so the pairs above the threshold are enough for a 0.999 target.
    return SyntheticData(SynthSpec(get_profile("face-like", dim=64), gallery_size=24_000, queries=10,
                                   duplicate_rate=0.35, seed=5))


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory, planted: SyntheticData) -> Gallery:
    return build_gallery(tmp_path_factory.mktemp("coverage"), planted, SETTINGS)


def _pairs(data: SyntheticData) -> tuple[np.ndarray, np.ndarray]:
    g = data.gallery()
    dup = np.flatnonzero(g.duplicate)
    return g.vectors[dup], g.vectors[g.identity[dup]]


def _measured(root: Path, data: SyntheticData) -> tuple[Gallery, ListCoverage, np.ndarray]:
    """A fresh gallery of ``data``, its planted pairs' coverage (not saved), their first sides."""
    g = build_gallery(root, data, SETTINGS)
    assert g.codec is not None
    a, b = _pairs(data)
    return g, measure_coverage(g.codec.trained, g.codec.version, a, b, "planted"), a


def _coverage(ranks: list[int], scores: list[float] | None = None, nlist: int = 2048,
              gaps: list[float] | None = None) -> ListCoverage:
    r = np.asarray(ranks, dtype=np.int32)
    s = np.full(r.size, 0.99, np.float32) if scores is None else np.asarray(scores, np.float32)
    return ListCoverage("v", "test", s, r, nlist, 0.0, None if gaps is None else np.asarray(gaps, np.float32))


def test_a_rank_is_where_the_search_s_coarse_step_puts_the_mate_s_list(gallery: Gallery, planted: SyntheticData) -> None:
    codec = gallery.codec
    assert codec is not None
    a, b = _pairs(planted)
    a, b = a[:500], b[:500]
    cov = measure_coverage(codec.trained, codec.version, a, b, "test")
    _, order_a = nearest_lists(codec.trained, a, codec.nlist)
    _, order_b = nearest_lists(codec.trained, b, codec.nlist)
    pos_ab = np.argmax(order_a == own_lists(codec.trained, b)[:, None], axis=1)
    pos_ba = np.argmax(order_b == own_lists(codec.trained, a)[:, None], axis=1)
    # Ties count against the pair, so a rank is never below the list's place in the order.
    assert (cov.ranks >= np.maximum(pos_ab, pos_ba)).all()
    assert np.mean(cov.ranks == np.maximum(pos_ab, pos_ba)) > 0.99
    np.testing.assert_allclose(cov.scores, np.einsum("ij,ij->i", a, b), rtol=1e-6)


def test_a_mate_at_rank_r_is_found_with_r_plus_one_lists(gallery: Gallery, planted: SyntheticData) -> None:
    codec = gallery.codec
    assert codec is not None
    g = planted.gallery()
    dup = np.flatnonzero(g.duplicate)[:300]
    cov = measure_coverage(codec.trained, codec.version, g.vectors[dup], g.vectors[g.identity[dup]], "test")
    t = float(np.quantile(cov.scores, 0.2))
    for r in np.unique(cov.ranks[cov.scores >= t])[:6]:
        sel = dup[(cov.ranks == r) & (cov.scores >= t)]
        params = SearchParams(threshold=t, nprobe=int(r) + 1, depth=512, max_depth=512, recall_target=0.0)
        found = gallery.search(g.vectors[sel], params)
        for i, row in enumerate(sel):
            assert int(g.identity[row]) in set(found.of(i)[0].tolist()), f"rank {r}: mate not found with {r + 1} lists"


def test_the_list_count_is_the_fewest_that_hold_the_target() -> None:
    # 10,000 pairs, ranks 0..4: four lists miss a fifth of them, five miss none.
    cov = _coverage([0, 1, 2, 3, 4] * 2000)
    assert cov.nprobe_for(0.9, 0.999) == 5
    # A 0.5 target may leave two fifths out (three lists), not three fifths (two).
    assert cov.nprobe_for(0.9, 0.5) == 3
    # 1% of the pairs at rank 40: at a 0.99 target the upper bound of 100 misses in 10,000
    # is above 1%, so they must be reached; at 0.98 they may be left.
    ranks = [0] * 9900 + [40] * 100
    assert _coverage(ranks).nprobe_for(0.9, 0.99) == 41
    assert _coverage(ranks).nprobe_for(0.9, 0.98) == 1
    # The answer is never above what the codec has.
    assert _coverage([70] * 5000, nlist=64).nprobe_for(0.9, 0.999) == 64


def test_the_chosen_count_meets_the_bound_and_one_fewer_does_not() -> None:
    rng = np.random.default_rng(3)
    for target in (0.99, 0.999, 0.9995):
        ranks = np.minimum(rng.geometric(0.3, size=20_000) - 1, 500)
        cov = _coverage(ranks.tolist())
        k = cov.nprobe_for(0.9, target)
        assert k is not None
        n = ranks.size
        assert wilson_interval(int((ranks >= k).sum()), n, 0.95)[1] <= 1 - target
        if k > 1:
            assert wilson_interval(int((ranks >= k - 1).sum()), n, 0.95)[1] > 1 - target


def test_too_few_pairs_or_a_threshold_they_do_not_reach_keep_the_configured_nprobe() -> None:
    assert _coverage([0] * 3000).nprobe_for(0.9, 0.999) is None     # 0 of 3,000 missed: bound 1.3e-3
    assert _coverage([0] * 4000).nprobe_for(0.9, 0.999) == 1        # 0 of 4,000: bound 9.6e-4
    low = _coverage([0] * 4000, scores=[0.8] * 4000)
    assert low.nprobe_for(0.9, 0.999) is None                       # none scores >= 0.9
    assert low.nprobe_for(0.9, 0.0) is None                         # no target: nothing to hold


def test_pairs_above_the_threshold_decide_not_the_others() -> None:
    # Far pairs (below the threshold) sit deep in the lists; they must not raise the count.
    cov = _coverage([0] * 5000 + [900] * 5000, scores=[0.97] * 5000 + [0.5] * 5000)
    assert cov.nprobe_for(0.95, 0.999) == 1
    assert cov.nprobe_for(0.4, 0.999) == 901


def test_a_gap_is_how_much_farther_the_mates_list_is_than_the_nearest(gallery: Gallery,
                                                                     planted: SyntheticData) -> None:
    codec = gallery.codec
    assert codec is not None
    a, b = _pairs(planted)
    a, b = a[:400], b[:400]
    cov = measure_coverage(codec.trained, codec.version, a, b, "test")
    assert cov.gaps is not None
    want = []
    for x, y in ((a, b), (b, a)):
        dist, lists = nearest_lists(codec.trained, x, codec.nlist)
        at = np.argmax(lists == own_lists(codec.trained, y)[:, None], axis=1)
        want.append(dist[np.arange(x.shape[0]), at] - dist[:, 0])
    np.testing.assert_allclose(cov.gaps, np.maximum(*want), rtol=0, atol=1e-6)
    assert (cov.gaps[cov.ranks == 0] <= 1e-6).all()  # the nearest list is no farther than itself


def test_the_plan_shares_the_miss_allowance_between_gaps_and_ranks() -> None:
    rng = np.random.default_rng(8)
    n = 40_000
    ranks = np.minimum(rng.geometric(0.2, size=n) - 1, 300)
    gaps = rng.exponential(0.005, size=n) * (1 + ranks / 10)
    for target in (0.99, 0.999):
        cov = _coverage(ranks.tolist(), gaps=gaps.tolist())
        plan = cov.search_plan(0.9, target)
        assert plan is not None and plan[1] is not None
        k, gap = plan
        missed = int(((ranks >= k) | (gaps > gap)).sum())
        assert wilson_interval(missed, n, 0.95)[1] <= 1 - target       # the plan holds the target
        assert (gaps > gap).sum() > 0 and (ranks >= k).sum() > 0         # both took part of the allowance
        assert k <= ranks.max() and gap < gaps.max()  # neither had to reach its largest
    # No allowance (0 of 4,000 at 0.999): every pair is kept, the count one past the largest rank.
    cov = _coverage([0, 3, 9, 1] * 1000, gaps=[0.0, 0.01, 0.02, 0.005] * 1000)
    k, gap = cov.search_plan(0.9, 0.999)  # type: ignore[misc]
    assert k == 10 and 0.02 <= gap < 0.0201
    # Too few pairs, or none above the threshold: no plan, as for the count alone.
    assert _coverage([0] * 3000, gaps=[0.0] * 3000).search_plan(0.9, 0.999) is None
    assert _coverage([0] * 4000, scores=[0.8] * 4000, gaps=[0.0] * 4000).search_plan(0.9, 0.999) is None
    # Without gaps (a format-1 file), the plan is the count alone.
    assert _coverage([0, 1, 2, 3, 4] * 2000).search_plan(0.9, 0.999) == (5, None)


def test_a_coverage_file_keeps_its_gaps_and_one_without_them_still_reads() -> None:
    cov = _coverage([0, 2, 5] * 10, gaps=[0.0, 0.0123456789, 0.5] * 10, nlist=64)
    back = ListCoverage.from_dict(json.loads(json.dumps(cov.to_dict())), "test")
    assert back.gaps is not None and np.array_equal(back.gaps, cov.gaps)
    old = cov.to_dict()
    old["format"] = 1
    del old["gaps"]
    assert ListCoverage.from_dict(old, "test").gaps is None
    bad = cov.to_dict()
    bad["gaps"] = bad["gaps"][:-1]
    with pytest.raises(GalleryError, match="inconsistent gaps"):
        ListCoverage.from_dict(bad, "test")
    bad["gaps"] = [-1.0] * 30
    with pytest.raises(GalleryError, match="inconsistent gaps"):
        ListCoverage.from_dict(bad, "test")


def test_a_saved_measurement_reads_back_bit_for_bit_and_plans_the_same_search() -> None:
    # Scores one float32 step either side of the threshold, gaps of every magnitude: a
    # rounded copy moves pairs across the threshold and the gap by a few float32 steps.
    rng = np.random.default_rng(3)
    t = np.float32(0.9)
    scores = np.concatenate([[np.nextafter(t, np.float32(0)), t, np.nextafter(t, np.float32(1))] * 200,
                             rng.uniform(0.85, 1.0, 4_000)]).astype(np.float32)
    gaps = np.concatenate([[0.0, np.float32(1e-12), np.float32(0.0812898576)],
                           rng.uniform(0, 0.2, scores.size - 3) ** 3]).astype(np.float32)
    ranks = np.minimum(rng.geometric(0.3, scores.size) - 1, 63)
    cov = _coverage(ranks.tolist(), scores.tolist(), nlist=64, gaps=gaps.tolist())
    back = ListCoverage.from_dict(json.loads(json.dumps(cov.to_dict())), "test")
    assert np.array_equal(back.scores, cov.scores) and back.gaps is not None and np.array_equal(back.gaps, cov.gaps)
    assert cov.search_plan(float(t), 0.99) is not None
    for target in (0.99, 0.995):
        assert back.search_plan(float(t), target) == cov.search_plan(float(t), target)


def test_the_measured_gap_loses_no_kept_pair_the_lists_find(tmp_path: Path, planted: SyntheticData) -> None:
    """Every measured pair above the threshold with a rank below the count and a gap within
    the gap that the search of all the count's lists finds, the search within the gap finds
    too (the PQ depth, not the gap, decides the others), and it visits fewer lists."""
    g, cov, a = _measured(tmp_path / "g", planted)
    g.save_coverage(cov)
    t = 0.9
    gallery = Gallery.open(tmp_path / "g", SETTINGS)
    params = gallery.with_measured(SearchParams(threshold=t, depth=64, max_candidates=10_000))
    assert params.nprobe_source == "measured" and params.list_gap is not None and cov.gaps is not None
    every_list = dataclasses.replace(params, list_gap=None)
    gal = planted.gallery()
    dup = np.flatnonzero(gal.duplicate)
    keep = (cov.scores >= t) & (cov.ranks < params.nprobe) & (cov.gaps <= params.list_gap - 1e-5)
    assert keep.sum() > 1000 and keep.mean() < 1.0
    probes = gal.vectors[dup[keep]]
    within, everywhere = gallery.search(probes, params), gallery.search(probes, every_list)
    lost = [i for i, row in enumerate(dup[keep]) if int(gal.identity[row]) in set(everywhere.of(i)[0].tolist())
            and int(gal.identity[row]) not in set(within.of(i)[0].tolist())]
    assert lost == []
    dist, _ = nearest_lists(gallery.codec.trained, probes, params.nprobe)  # type: ignore[union-attr]
    assert ((dist - dist[:, :1]) <= params.list_gap).sum(axis=1).mean() < 0.9 * params.nprobe


def test_identity_pairs_are_every_pair_within_an_identity() -> None:
    identity = np.array([7, 3, 7, 9, 7, 3, 1])
    left, right = identity_pairs(identity)
    pairs = {tuple(sorted(p)) for p in zip(left.tolist(), right.tolist())}
    assert pairs == {(0, 2), (0, 4), (2, 4), (1, 5)}
    li, ri = identity_pairs(np.repeat(np.arange(100), 20), limit=500)
    assert li.size == 500 and (np.repeat(np.arange(100), 20)[li] == np.repeat(np.arange(100), 20)[ri]).all()
    assert identity_pairs(np.arange(10))[0].size == 0
    assert identity_pairs(np.zeros(0, np.int64))[0].size == 0
    # One identity with 20,000 captures (200M pairs): a sample, drawn without listing them.
    crowd = np.r_[np.zeros(20_000, np.int64), np.arange(1, 50)]
    li, ri = identity_pairs(crowd, limit=1000)
    assert li.size == 1000 and (crowd[li] == crowd[ri]).all() and (li != ri).all()


def test_the_gallery_searches_with_the_measured_count_and_reopens_with_it(
        tmp_path: Path, planted: SyntheticData) -> None:
    g, cov, a = _measured(tmp_path / "g", planted)
    t = 0.9
    plan = cov.search_plan(t, 0.999)
    assert plan is not None, f"{int((cov.scores >= t).sum())} pairs above {t}: the fixture needs more"
    want, gap = plan
    assert g.with_measured(SearchParams(threshold=t)).nprobe_source == "configured"  # not measured yet
    g.save_coverage(cov)
    again = Gallery.open(tmp_path / "g", SETTINGS)
    params = again.with_measured(SearchParams(threshold=t, nprobe=3))
    assert (params.nprobe, params.nprobe_source, params.list_gap) == (want, "measured", gap)
    assert again.with_measured(params) == params                       # resolved once
    pinned = again.with_measured(SearchParams(threshold=t, nprobe=3, recall_target=0.0))
    assert (pinned.nprobe, pinned.nprobe_source, pinned.list_gap) == (3, "configured", None)
    assert again.stats()["list_coverage"]["pairs"] == cov.pairs
    # The measured count holds the target on pairs it was not measured on: fresh captures.
    fresh = SyntheticData(SynthSpec(planted.profile, planted.spec.gallery_size, 2000, 0.35, 1.0, planted.spec.seed))
    probes = fresh.probes()
    found = again.search(probes.vectors, SearchParams(threshold=t, depth=64))
    gal = planted.gallery()
    wanted = hit = 0
    for i in range(probes.vectors.shape[0]):
        mates = probes.mates(i)
        mates = set(mates[gal.vectors[mates] @ probes.vectors[i] >= t].tolist())
        wanted += len(mates)
        hit += len(mates & set(found.of(i)[0].tolist()))
    assert wanted > 500 and hit / wanted >= 0.995


def _coverage_file(root: Path) -> Path:
    (path,) = (root / "codec").glob("*.coverage-*.json")
    return path


def test_a_measurement_of_another_codec_is_refused_and_a_damaged_one_stops_the_search(
        tmp_path: Path, planted: SyntheticData) -> None:
    g, cov, a = _measured(tmp_path / "g", planted)
    with pytest.raises(GalleryError, match="measure it again"):
        g.save_coverage(dataclasses.replace(cov, codec_version="0123456789abcdef"))
    g.save_coverage(cov)
    path = _coverage_file(tmp_path / "g")
    text = path.read_text()
    data = json.loads(text)
    data["ranks"][0] = 0 if data["ranks"][0] else 1   # one rank changed on disk
    path.write_text(json.dumps(data))
    with pytest.raises(GalleryError, match="changed on disk"):
        Gallery.open(tmp_path / "g", SETTINGS).search(a[:5], SearchParams(threshold=0.9))
    # Removed, it is damage too: the generation records it, so the search never quietly
    # falls back to the configured list count.
    path.unlink()
    with pytest.raises(GalleryError, match="missing"):
        Gallery.open(tmp_path / "g", SETTINGS).search(a[:5], SearchParams(threshold=0.9))
    path.write_text(text)
    assert Gallery.open(tmp_path / "g", SETTINGS).search(a[:5], SearchParams(threshold=0.9)).n_probes == 5


def test_the_measurement_stays_with_its_codec_through_writes_and_can_be_cleared(
        tmp_path: Path, planted: SyntheticData) -> None:
    g, cov, a = _measured(tmp_path / "g", planted)
    g.save_coverage(cov)
    generation = g.generation
    more = SyntheticData(SynthSpec(planted.profile, 500, 10, 0.0, 0.5, 99)).gallery()
    g.add(more.vectors, [f"more{r}" for r in more.row_ids])        # a writer's new generation
    again = Gallery.open(tmp_path / "g", SETTINGS)
    assert again.generation > generation and again.coverage is not None
    assert again.with_measured(SearchParams(threshold=0.9)).nprobe_source == "measured"
    again.save_coverage(None)
    cleared = Gallery.open(tmp_path / "g", SETTINGS)
    assert cleared.coverage is None and cleared.with_measured(SearchParams(threshold=0.9)).nprobe_source == "configured"
    # Once no kept generation records it, its file is collected with them.
    for i in range(cleared.settings.keep_generations + 1):
        cleared.add(more.vectors[:1], [f"again{i}"])
    assert not list((tmp_path / "g" / "codec").glob("*.coverage-*.json"))
    # A new codec (compact --retrain) has lists the measurement never saw: it is dropped.
    again.save_coverage(cov)
    again.compact(retrain=True)
    retrained = Gallery.open(tmp_path / "g", SETTINGS)
    assert retrained.manifest.codec_version != cov.codec_version and retrained.coverage is None


def test_dedup_gallery_coverage_measures_a_labelled_set(tmp_path: Path, planted: SyntheticData) -> None:
    build_gallery(tmp_path / "g", planted, SETTINGS)
    files = write_parquet(planted, tmp_path / "labelled")
    cli = Cli(tmp_path / "home")
    (tmp_path / "home").mkdir()
    out = cli.json("gallery", "coverage", str(files["gallery"]), "--path", str(tmp_path / "g"))
    assert out["pairs"] > 5000 and out["source"].startswith("labelled templates")
    assert Gallery.open(tmp_path / "g", SETTINGS).coverage is not None
    words = cli.run("gallery", "coverage", str(files["gallery"]), "--path", str(tmp_path / "g")).stdout
    assert "pairs" in words and "threshold in force" in words
    # Templates of another model, and a set without a second capture: specific errors.
    other = SyntheticData(SynthSpec(get_profile("face-like", dim=32), 2000, 10, 0.1, 0.5, 1))
    other_files = write_parquet(other, tmp_path / "other")
    err = cli.run("gallery", "coverage", str(other_files["gallery"]), "--path", str(tmp_path / "g"), code=4).stderr
    assert "model" in err
    single = SyntheticData(SynthSpec(planted.profile, 2000, 10, 0.0, 0.5, 2))
    single_files = write_parquet(single, tmp_path / "single")
    err = cli.run("gallery", "coverage", str(single_files["gallery"]), "--path", str(tmp_path / "g"), code=2).stderr
    assert "two captures" in err
    err = cli.run("gallery", "coverage", "--path", str(tmp_path / "g"), code=2).stderr
    assert "--clear" in err
    cli.run("gallery", "coverage", "--clear", "--path", str(tmp_path / "g"))
    assert Gallery.open(tmp_path / "g", SETTINGS).coverage is None


def test_gallery_verify_reports_a_damaged_measurement(tmp_path: Path, planted: SyntheticData) -> None:
    from dedup.index.verify import check

    g = build_gallery(tmp_path / "g", planted, SETTINGS)
    codec = g.codec
    assert codec is not None
    a, b = _pairs(planted)
    g.save_coverage(measure_coverage(codec.trained, codec.version, a[:100], b[:100], "planted"))
    assert check(tmp_path / "g", SETTINGS)[0].ok
    path = _coverage_file(tmp_path / "g")
    text = path.read_text()
    path.write_text(text.replace('"planted"', '"elsewhere"'))
    report = check(tmp_path / "g", SETTINGS)[0]
    assert not report.ok and [f.problem for f in report.findings if f.damage] == ["coverage_damaged"]
    path.unlink()
    report = check(tmp_path / "g", SETTINGS)[0]
    assert not report.ok and [f.problem for f in report.findings if f.damage] == ["coverage_missing"]
