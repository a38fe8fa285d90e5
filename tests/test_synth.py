"""dedup.bench.synth: seeded synthetic templates with planted duplicates and groups.

Properties (Hypothesis, on small galleries with a small block size so that several blocks
are exercised): determinism, blocks that regenerate alone, ground truth that matches the
labels. Statistics (fixed seeds): each profile reproduces the targets in ``synth.TARGETS``
(documented in benchmarks/profiles/README.md), and a group with a smaller spread shows a
higher false-match rate. Plus the Parquet round trip and bad parameters.
"""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dedup.bench import synth
from dedup.bench.synth import (
    PROFILES,
    TARGETS,
    Group,
    Probes,
    Profile,
    SyntheticData,
    SynthSpec,
    TemplateBlock,
    get_profile,
    write_parquet,
)
from dedup.errors import InvalidParameter
from dedup.schemas import check_schema, templates_schema

SMALL = settings(max_examples=25, deadline=None)


def small_data(profile: str = "face-like", dim: int = 8, **kw) -> SyntheticData:
    kw.setdefault("gallery_size", 300)
    kw.setdefault("queries", 60)
    return SyntheticData(SynthSpec(get_profile(profile, dim=dim), **kw))


def same_block(a: TemplateBlock, b: TemplateBlock) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in
               ("row_ids", "vectors", "identity", "group", "duplicate", "quality"))


def same_probes(a: Probes, b: Probes) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in
               ("vectors", "identity", "group", "mated", "mate_offsets", "mate_rows"))


specs = st.fixed_dictionaries({
    "profile": st.sampled_from(list(PROFILES)),
    "gallery_size": st.integers(1, 400),
    "queries": st.integers(0, 50),
    "duplicate_rate": st.sampled_from([0.0, 0.05, 0.3, 0.9]),
    "mated_fraction": st.sampled_from([0.0, 0.5, 1.0]),
    "seed": st.integers(0, 2**32),
    "block": st.sampled_from([16, 97, 4096]),
})


# ----------------------------------------------------------------------------- determinism
@SMALL
@given(specs, st.randoms(use_true_random=False))
def test_same_seed_same_bytes_and_blocks_regenerate_alone(s, rnd):
    block = s.pop("block")
    with mock.patch.object(synth, "BLOCK", block):
        a = small_data(dim=8, **s)
        full = list(a.blocks())
        b = small_data(dim=8, **s)  # a fresh object, blocks asked for in a shuffled order
        order = list(range(b.n_blocks))
        rnd.shuffle(order)
        alone = {i: b.block(i) for i in order}
        assert len(full) == a.n_blocks == math.ceil(s["gallery_size"] / block)
        assert all(same_block(full[i], alone[i]) for i in range(a.n_blocks))
        assert a.gallery().vectors.tobytes() == b.gallery().vectors.tobytes()
        assert same_probes(a.probes(), b.probes())


def test_other_seed_other_data():
    a, b = small_data(seed=1), small_data(seed=2)
    assert not np.array_equal(a.gallery().vectors, b.gallery().vectors)
    assert not np.array_equal(a.probes().vectors, b.probes().vectors)


def test_full_size_block_regenerates_alone():
    """The real block size (65 536 rows), a second block that is partly filled."""
    spec = SynthSpec(get_profile("uniform", dim=4), gallery_size=synth.BLOCK + 500, queries=20, seed=5)
    full = list(SyntheticData(spec).blocks())
    alone = SyntheticData(spec).block(1)
    assert full[1].row_ids[0] == synth.BLOCK and len(alone.row_ids) == 500
    assert same_block(full[1], alone)


# ----------------------------------------------------------------------------- ground truth
@SMALL
@given(specs)
def test_ground_truth_matches_labels(s):
    block = s.pop("block")
    with mock.patch.object(synth, "BLOCK", block):
        data = small_data(dim=8, **s)
        g = data.gallery()
        p = data.probes()
    n = s["gallery_size"]
    rows = np.arange(n)
    assert np.array_equal(g.row_ids, rows)
    # An identity is the row of its first capture, in the same block, and labels agree.
    assert np.all(g.identity <= rows) and np.all(g.identity // block == rows // block)
    assert np.array_equal(g.identity[g.identity], g.identity)
    assert np.array_equal(g.duplicate, g.identity != rows)
    assert np.array_equal(g.group, g.group[g.identity])
    assert np.allclose(np.linalg.norm(g.vectors, axis=1), 1.0, atol=1e-5)
    assert np.all((g.quality > 0) & (g.quality <= 1))
    assert p.vectors.shape == (s["queries"], 8) and p.mate_offsets.shape == (s["queries"] + 1,)
    if s["queries"]:
        assert np.allclose(np.linalg.norm(p.vectors, axis=1), 1.0, atol=1e-5)
    for i in range(s["queries"]):
        if p.mated[i]:
            expected = rows[g.identity == p.identity[i]]
            assert expected.size >= 1
            assert np.array_equal(p.mates(i), expected)
            assert p.group[i] == g.group[p.identity[i]]
        else:
            assert p.mates(i).size == 0 and p.identity[i] >= n
    assert p.mate_rows.size == p.mate_offsets[-1]
    assert s["mated_fraction"] != 0.0 or not p.mated.any()
    assert s["mated_fraction"] != 1.0 or p.mated.all()


@pytest.mark.parametrize("rate", [0.0, 0.01, 0.2, 0.6])
def test_planted_duplicate_rate_within_binomial_tolerance(rate):
    with mock.patch.object(synth, "BLOCK", 1000):
        data = small_data("uniform", dim=4, gallery_size=20_000, queries=0, duplicate_rate=rate, seed=11)
        dup = data.gallery().duplicate
    trials = dup.size - data.n_blocks  # the first row of every block is never a duplicate
    sd = math.sqrt(trials * rate * (1 - rate))
    assert abs(int(dup.sum()) - trials * rate) <= 4 * sd + 1e-9
    assert not dup[::1000].any()


def test_recaptures_are_true_mates():
    data = small_data("arcface-like", dim=64, gallery_size=500, queries=0, seed=3)
    g = data.gallery()
    extra = data.recaptures(7, 25)
    assert extra.shape == (25, 64) and np.array_equal(extra, data.recaptures(7, 25))
    assert np.allclose(np.linalg.norm(extra, axis=1), 1.0, atol=1e-5)
    own = extra @ g.vectors[g.identity == g.identity[7]].T
    others = extra @ g.vectors[g.identity != g.identity[7]].T
    assert own.min() > np.percentile(others, 99.9)
    assert data.recaptures(7, 0).shape == (0, 64)


# ----------------------------------------------------------------------------- statistics
def profile_stats(profile: Profile, gallery: int = 3000, probes: int = 3000, seed: int = 1) -> dict:
    """The statistics named in synth.TARGETS, from the generator's own gallery and probes."""
    data = SyntheticData(SynthSpec(profile, gallery_size=gallery, queries=probes,
                                   duplicate_rate=0.0, mated_fraction=0.5, seed=seed))
    g, p = data.gallery(), data.probes()
    m = np.flatnonzero(p.mated)
    genuine = np.einsum("ij,ij->i", p.vectors[m], g.vectors[p.mate_rows[p.mate_offsets[m]]])
    impostor = (p.vectors[~p.mated] @ g.vectors.T).ravel()
    fmr = float((impostor >= profile.threshold).mean())
    out = {"impostor.mean": impostor.mean(), "impostor.sd": impostor.std(),
           "fmr_at_threshold.all": fmr, "log10_fmr": math.log10(max(fmr, 1e-9)),
           "fnmr_at_threshold": float((genuine < profile.threshold).mean()),
           "genuine.mean": genuine.mean(),
           "mean_vector_norm": float(np.linalg.norm(g.vectors.astype(np.float64).mean(axis=0)))}
    for q in (1, 5, 10, 50, 90, 99):
        out[f"impostor.p{q}"] = np.percentile(impostor, q)
        out[f"genuine.p{q}"] = np.percentile(genuine, q)
    return {k: float(v) for k, v in out.items()}


@pytest.mark.parametrize("name", list(PROFILES))
def test_profile_matches_documented_targets(name):
    profile = PROFILES[name]
    assert TARGETS[name], f"no documented targets for {name}"
    got = profile_stats(profile)
    off = {k: (got[k], t, tol) for k, (t, tol) in TARGETS[name].items() if abs(got[k] - t) > tol}
    assert not off, f"{name}: statistic -> (got, target, tolerance): {off}"


@pytest.mark.parametrize("name", ["face-like", "arcface-like"])
def test_smaller_spread_group_has_higher_fmr(name):
    base = PROFILES[name]
    profile = base.with_groups([Group("wide", 0.5, spread=1.0), Group("narrow", 0.5, spread=0.7)])
    data = SyntheticData(SynthSpec(profile, gallery_size=3000, queries=2000, duplicate_rate=0.0,
                                   mated_fraction=0.0, seed=4))
    g, p = data.gallery(), data.probes()
    scores = p.vectors @ g.vectors.T
    fmr = [float((scores[np.ix_(p.group == k, g.group == k)] >= profile.threshold).mean()) for k in (0, 1)]
    assert fmr[1] > 1.5 * fmr[0] > 0


def test_default_groups_plant_a_differential():
    """The default face-like and arcface-like groups: D has the smaller spread."""
    for name in ("face-like", "arcface-like"):
        spreads = {g.name: g.spread for g in PROFILES[name].groups}
        assert min(spreads, key=spreads.get) == "D" and spreads["D"] < 1.0
        assert math.isclose(sum(g.share for g in PROFILES[name].groups), 1.0)


# ----------------------------------------------------------------------------- Parquet
def test_parquet_streaming_round_trip(tmp_path):
    with mock.patch.object(synth, "BLOCK", 128):
        data = small_data("face-like", dim=16, gallery_size=1000, queries=40, duplicate_rate=0.1, seed=9)
        paths = write_parquet(data, tmp_path)
        g, p, n_blocks = data.gallery(), data.probes(), data.n_blocks
    schema = templates_schema(16)
    gallery = pq.ParquetFile(paths["gallery"])
    assert gallery.metadata.num_row_groups == n_blocks == 8  # one row group per block: streamed
    t = gallery.read()
    assert t.schema.equals(schema) and t.schema.metadata == schema.metadata
    check_schema(t.schema, schema, "gallery")
    assert np.array_equal(np.stack(t.column("embedding").to_numpy(zero_copy_only=False)), g.vectors)
    assert t.column("identity").to_pylist() == [f"i{i}" for i in g.identity]
    names = [grp.name for grp in data.profile.groups]
    assert t.column("group").to_pylist() == [names[k] for k in g.group]
    assert t.column("source").to_pylist()[:2] == ["synth:face-like:9:g0", "synth:face-like:9:g1"]
    assert set(t.column("model_id").to_pylist()) == {data.profile.model_id}
    assert all(t.column("synthetic").to_pylist())
    assert np.array_equal(t.column("quality").to_numpy(), g.quality)
    probes = pq.read_table(paths["probes"])
    assert probes.schema.equals(schema) and probes.num_rows == 40
    assert np.array_equal(np.stack(probes.column("embedding").to_numpy(zero_copy_only=False)), p.vectors)
    assert probes.column("identity").to_pylist() == [f"i{i}" for i in p.identity]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["gallery.parquet", "probes.parquet"]


# ----------------------------------------------------------------------------- bad parameters
def _profile(**kw) -> Profile:
    return Profile(**{**vars(PROFILES["face-like"]), **kw})


BAD = {
    "unknown profile": lambda: get_profile("nope"),
    "dim 1": lambda: get_profile("uniform", dim=1),
    "negative weight": lambda: _profile(w_id=-0.1),
    "no identity or capture": lambda: _profile(w_id=0.0, w_cap=0.0),
    "negative alpha": lambda: _profile(alpha=-1.0),
    "nan quality sigma": lambda: _profile(quality_sigma=float("nan")),
    "threshold not a cosine": lambda: _profile(threshold=1.5),
    "clusters without count": lambda: _profile(w_cluster=0.1, n_clusters=0),
    "no groups": lambda: _profile(groups=()),
    "zero share": lambda: _profile(groups=(Group("A", 0.0),)),
    "zero spread": lambda: _profile(groups=(Group("A", 1.0, spread=0.0),)),
    "duplicate group names": lambda: _profile(groups=(Group("A", 0.5), Group("A", 0.5))),
    "gallery size 0": lambda: SynthSpec(PROFILES["uniform"], gallery_size=0),
    "gallery size float": lambda: SynthSpec(PROFILES["uniform"], gallery_size=10.5),
    "negative queries": lambda: SynthSpec(PROFILES["uniform"], gallery_size=10, queries=-1),
    "duplicate rate 1": lambda: SynthSpec(PROFILES["uniform"], gallery_size=10, duplicate_rate=1.0),
    "mated fraction > 1": lambda: SynthSpec(PROFILES["uniform"], gallery_size=10, mated_fraction=1.5),
    "negative seed": lambda: SynthSpec(PROFILES["uniform"], gallery_size=10, seed=-1),
    "profile by name": lambda: SynthSpec("uniform", gallery_size=10),
    "block out of range": lambda: small_data(gallery_size=10).block(1),
    "recapture row out of range": lambda: small_data(gallery_size=10).recaptures(10, 1),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_parameters_raise_invalid_parameter(case):
    with pytest.raises(InvalidParameter):
        BAD[case]()


def test_get_profile_other_dim_keeps_the_rest():
    p = get_profile("arcface-like", dim=64)
    assert p.dim == 64 and p.model_id == "synthetic:arcface-like:d64:v1"
    assert p.threshold == PROFILES["arcface-like"].threshold and p.groups == PROFILES["arcface-like"].groups
    assert get_profile("face-like") is PROFILES["face-like"]


# ----------------------------------------------------------------------------- anchored to the real model
def test_face_like_is_built_around_dlibs_own_directions():
    """The shared direction is dlib's mean direction, and the identity's largest variances lie
    along dlib's principal directions, in order (dedup/bench/anchors/face-like.json)."""
    anchor = synth.load_anchor("face-like", 128)
    assert anchor is not None and anchor.principal_directions.shape == (32, 128)
    st = SyntheticData(SynthSpec(PROFILES["face-like"], gallery_size=10, queries=0, seed=4))._structure
    assert float(st.mean_dir @ anchor.mean_direction) > 1 - 1e-5
    assert np.allclose(st.group_dirs @ st.mean_dir, 0, atol=1e-5)
    axes = st.scaled / np.linalg.norm(st.scaled, axis=1, keepdims=True)  # rows: basis directions, largest variance first
    overlap = np.abs(axes[:32] @ anchor.principal_directions.T)
    assert np.allclose(np.diag(overlap), 1.0, atol=1e-4)
    # another seed: the same anchored directions, other group directions
    other = SyntheticData(SynthSpec(PROFILES["face-like"], gallery_size=10, queries=0, seed=5))._structure
    assert np.allclose(other.mean_dir, st.mean_dir, atol=1e-6) and not np.allclose(other.group_dirs, st.group_dirs)
    # at another dim the anchor does not apply (it is the 128-d model's) and the profile still works
    assert synth.load_anchor("face-like", 64) is None
    assert small_data("face-like", dim=64).gallery().vectors.shape == (300, 64)


def test_an_unreadable_anchor_is_a_clear_error():
    bad = Profile(**{**vars(PROFILES["face-like"]), "anchor": "no-such-model"})
    with pytest.raises(InvalidParameter, match="profile anchor 'no-such-model': cannot read"):
        SyntheticData(SynthSpec(bad, gallery_size=10, queries=0)).gallery()


@pytest.fixture(scope="module")
def real_templates():
    """dedup's own dlib templates of every distinct real capture on hand: Obama (three photos),
    Biden (face_recognition 1.3.0's test photos, fetched into a cache), Collins, Hopper."""
    from dedup.config import FaceSettings
    from dedup.face import embed_photos
    from tests.support.real_photos import distinct_captures, real_photos, with_other_people

    captures = distinct_captures(with_other_people(real_photos()))
    result = embed_photos([str(p.path) for p in captures], FaceSettings(workers=1, device="cpu"))
    assert [r.reason for r in result.results] == [None] * len(captures), [(r.source, r.reason) for r in result.results]
    return result.embeddings.astype(np.float64), [p.person for p in captures]


def test_real_photos_see_the_impostor_scores_the_profile_claims(real_templates):
    """Real probes against a synthetic face-like gallery: mean, spread and p99 within
    synth.REAL_PROBE_TOLERANCE of the profile's documented targets."""
    vectors, _ = real_templates
    gallery = SyntheticData(SynthSpec(PROFILES["face-like"], gallery_size=20_000, queries=0, seed=3)).gallery().vectors
    scores = (vectors @ gallery.T.astype(np.float64)).ravel()
    got = {"impostor.mean": scores.mean(), "impostor.sd": scores.std(), "impostor.p99": np.percentile(scores, 99)}
    off = {k: (float(v), TARGETS["face-like"][k][0], synth.REAL_PROBE_TOLERANCE[k]) for k, v in got.items()
           if abs(v - TARGETS["face-like"][k][0]) > synth.REAL_PROBE_TOLERANCE[k]}
    assert not off, f"statistic -> (real probes, profile target, tolerance): {off}"
    # and no real probe sits alone outside the synthetic cone: each one's own mean is near the profile's
    per_probe = (vectors @ gallery.T.astype(np.float64)).mean(axis=1)
    assert np.all(np.abs(per_probe - TARGETS["face-like"]["impostor.mean"][0]) < 0.05), per_probe


def test_every_real_genuine_pair_scores_above_every_real_impostor_pair(real_templates):
    """Different photographs of one person against two people, for the default model (dlib)."""
    vectors, persons = real_templates
    s = vectors @ vectors.T
    pairs = [(i, j) for i in range(len(persons)) for j in range(i + 1, len(persons))]
    genuine = [s[i, j] for i, j in pairs if persons[i] == persons[j]]
    impostor = [s[i, j] for i, j in pairs if persons[i] != persons[j]]
    assert len(genuine) == 3 and len(impostor) == 12
    assert min(genuine) > max(impostor), (genuine, impostor)
    # the refitted genuine target is these pairs' mean
    assert abs(float(np.mean(genuine)) - TARGETS["face-like"]["genuine.mean"][0]) < 0.002
