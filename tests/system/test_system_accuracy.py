"""The deployment measures itself (issue 13): per-group FMR from impostor pairs of its accepted
identities, live FNIR from adjudication's decided duplicates, the refresh `dedup run` makes as
the gallery grows, and `dedup accuracy --json`. On the session's real PostgreSQL.

The accepted identities are real enrolments (submitted, UINs issued in PostgreSQL) with the
manifest's sex / birth_year / region, whose gallery templates are face-like synthetic vectors
under the pipeline's ids (dozens of distinct real faces are more than installed packages
ship); the refresh after a unit enters the gallery is checked with real photos.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support.cli import Cli
from tests.support.manifests import write_batch

ACCEPTED = 60
FAST = {"DEDUP_INDEX_TRAIN_SIZE": "1000", "DEDUP_FACE_WORKERS": "1", "DEDUP_CALIBRATION_BOOTSTRAP": "20"}
SEXES = ["F", "M", "F", "M", "F", "M", "F", "M", "F", "M", "F", "X"]     # X: a group with too few pairs


def demographics(i: int) -> dict[str, Any]:
    return {"sex": SEXES[i % len(SEXES)], "birth_year": 1950 + (i * 7) % 50,
            "region": None if i % 9 == 0 else ("north" if i % 3 else "south")}


def band(year: int | None) -> str:
    return "unknown" if year is None else f"{year // 10 * 10}-{year // 10 * 10 + 9}"


@pytest.fixture
def live(deployment: Cli, database_url: str, tmp_path: Path, photos: dict[str, Path]) -> dict[str, Any]:
    """60 accepted identities with demographic fields and a gallery template each."""
    from dedup.deployment import open_deployment
    from dedup.face.model import ModelSpec, model_id_for
    from dedup.pipeline import ensure_gallery, gallery_name, synthetic_sample
    from dedup.store.identities import issue_uin

    rows = [{"enrolment_id": f"P{i:03d}", "centre_id": "C1", "photo": "camera", **demographics(i)} for i in range(ACCEPTED)]
    receipt = deployment.json("submit", str(write_batch(tmp_path / "b", rows, photos)), user="c1")
    assert receipt["accepted"] == ACCEPTED
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        got = conn.execute("SELECT enrolment_pk, enrolment_id FROM enrolments ORDER BY enrolment_pk").fetchall()
        pks = [r["enrolment_pk"] for r in got]
        with conn.transaction():
            for pk in pks:
                issue_uin(conn, pk, "test")
    dep = open_deployment(deployment.home)
    spec = ModelSpec.from_settings(dep.settings.face)
    model_id = model_id_for(spec)
    vectors = synthetic_sample(spec.output_dim, ACCEPTED, seed=5)
    gallery = ensure_gallery(dep, model_id, spec.output_dim, train_sample=synthetic_sample(spec.output_dim, 2000, seed=6))
    gallery.add(vectors, [gallery_name(pk) for pk in pks], model_id=model_id)
    return {"dep": dep, "gallery": gallery, "vector": dict(zip(pks, vectors)),
            "groups": {pk: demographics(i) for i, pk in enumerate(pks)}}


def brute_force(live: dict[str, Any], pks: list[int], threshold: float) -> dict[str, dict[str, tuple[int, int]]]:
    """attribute -> group -> (pairs, pairs >= threshold), every pair of ``pks`` scored directly."""
    out: dict[str, dict[str, list[int]]] = {a: {} for a in ("sex", "birth_year", "region")}
    for a, b in itertools.combinations(pks, 2):
        score = float(np.dot(live["vector"][a], live["vector"][b]))
        for attr in out:
            ga, gb = live["groups"][a][attr], live["groups"][b][attr]
            if attr == "birth_year":
                ga, gb = band(ga), band(gb)
            ga = "unknown" if ga is None else ga
            gb = "unknown" if gb is None else gb
            key = ga if ga == gb else "cross-group"
            cell = out[attr].setdefault(key, [0, 0])
            cell[0] += 1
            cell[1] += score >= threshold
    return {a: {g: (v[0], v[1]) for g, v in groups.items()} for a, groups in out.items()}


def groups_of(figures: dict[str, Any]) -> dict[str, dict[str, tuple[int, int]]]:
    return {a: {r["group"]: (r["pairs"], r["false_matches"]) for r in rows} for a, rows in figures["groups"].items()}


@pytest.mark.parametrize("pairs", [10**6, 1000])   # every accepted identity; a random subset of them
def test_live_group_fmr_equals_a_brute_force_count(live: dict[str, Any], pairs: int) -> None:
    from dedup.evaluation import live as measure
    from dedup.store.accuracy import latest_refresh

    dep = dataclasses.replace(live["dep"], settings=live["dep"].settings.replace("calibration", impostor_pairs=pairs, bootstrap=20))
    every = np.array([float(np.dot(live["vector"][a], live["vector"][b])) for a, b in itertools.combinations(live["vector"], 2)])
    threshold = float(np.quantile(every, 0.9))            # about one pair in ten above it
    with dep.database.session() as conn:
        rid, sample = measure.refresh(dep, conn, live["gallery"], threshold, "admin", np.random.default_rng(3))
        stored = latest_refresh(conn)
    sampled = sample.enrolment_pks.tolist()
    if pairs == 1000:
        assert 2 < len(sampled) < ACCEPTED and len(sampled) * (len(sampled) - 1) // 2 <= 1000
    else:
        assert sorted(sampled) == sorted(live["vector"])
    assert stored is not None and stored.refresh_id == rid and stored.threshold == threshold
    brute = brute_force(live, sampled, threshold)
    assert groups_of(stored.figures) == brute
    n = len(sampled) * (len(sampled) - 1) // 2
    assert stored.impostor_pairs == n == stored.figures["impostor"]["pairs"]
    assert stored.figures["impostor"]["false_matches"] == sum(v[1] for v in brute["sex"].values())
    # Group X (one person in twelve) has too few pairs: listed and marked, with no ratio.
    x = next(r for r in stored.figures["groups"]["sex"] if r["group"] == "X")
    assert not x["enough_pairs"] and x["note"].startswith("too few pairs") and x["ratio_to_best"] is None
    best = [r for r in stored.figures["groups"]["sex"] if r["ratio_to_best"] == 1.0]
    assert best and all(r["enough_pairs"] for r in best)
    for r in stored.figures["groups"]["region"]:
        if r["pairs"]:
            lo, hi = r["fmr_ci"]
            assert lo <= r["false_matches"] / r["pairs"] <= hi
    # The same counts when the threshold lies below the exactly kept tail (pairs scored again).
    with dep.database.session() as conn:
        thin = measure.sample_live(conn, live["gallery"], pairs, np.random.default_rng(3), tail_keep=5)
    assert thin.impostor.tail_cut > threshold
    assert {a: {r.group: (r.pairs, r.false_matches) for r in rows}
            for a, rows in measure.group_fmr(thin, threshold).items()} == brute_force(live, thin.enrolment_pks.tolist(), threshold)


def decide_duplicates(live: dict[str, Any], database_url: str, tmp_path: Path, photos: dict[str, Path],
                      scores: list[float]) -> list[int]:
    """One case per score, each decided duplicate of its second candidate (scored as given) by alice."""
    from dedup.adjudication.cases import decide
    from dedup.adjudication.queue import claim_next
    from dedup.store.cases import NewCandidate, open_case
    from dedup.store.users import authenticate

    rows = [{"enrolment_id": f"D{i:03d}", "centre_id": "C1", "photo": "astronaut"} for i in range(len(scores))]
    Cli(live["dep"].home).json("submit", str(write_batch(tmp_path / "d", rows, photos)), user="c1")
    accepted = list(live["vector"])
    cases = []
    with psycopg.connect(database_url, row_factory=dict_row, autocommit=True) as conn:
        probes = [r["enrolment_pk"] for r in conn.execute(
            "SELECT enrolment_pk FROM enrolments WHERE enrolment_id LIKE 'D%%' ORDER BY enrolment_pk")]
        uin = {r["enrolment_pk"]: r["uin"] for r in conn.execute("SELECT enrolment_pk, uin FROM enrolments WHERE uin IS NOT NULL")}
        with conn.transaction():
            for i, (pk, score) in enumerate(zip(probes, scores)):
                other, linked = accepted[2 * i], accepted[2 * i + 1]
                # the top candidate is someone else: the pair counted is the linked candidate's
                cases.append(open_case(conn, pk, [NewCandidate(None, other, max(score, 0.99) + 0.005, "gallery"),
                                                  NewCandidate(None, linked, score, "gallery")]))
        alice = authenticate(conn, "alice")
        for _ in scores:
            got = claim_next(conn, alice, 600, control_rate=0.0)
            assert got is not None
            decide(conn, alice, got, "duplicate", uin[accepted[2 * cases.index(got) + 1]])
    return cases


def test_live_fnir_from_decided_duplicates_equals_a_hand_count(live: dict[str, Any], database_url: str, tmp_path: Path,
                                                               photos: dict[str, Path], deployment: Cli) -> None:
    from dedup.evaluation.live import MIN_GENUINE_PAIRS, genuine_figures
    from dedup.store.users import authenticate

    scores = [0.985, 0.97, 0.955, 0.94, 0.93, 0.91]
    cases = decide_duplicates(live, database_url, tmp_path, photos, scores)
    # A case decided distinct is no genuine pair; a control pair made from a decided duplicate is not counted twice.
    from dedup.adjudication import controls

    with psycopg.connect(database_url, row_factory=dict_row, autocommit=True) as conn:
        controls.add_from_case(conn, authenticate(conn, "sue"), cases[0])
        for t, misses in [(0.95, 3), (0.9, 0), (0.96, 4), (0.99, 6)]:
            got = genuine_figures(conn, t)
            assert (got["pairs"], got["misses"]) == (6, misses), t
            assert got["fnir"] == pytest.approx(misses / 6)
            assert got["fnir_ci"][0] <= got["fnir"] <= got["fnir_ci"][1]
            assert got["sources"] == {"decided_duplicate": 6, "control_pair": 0}
            assert not got["enough_pairs"] and got["note"] == (
                f"too few to estimate: 6 genuine pair(s) from adjudication, at least {MIN_GENUINE_PAIRS} are needed")
    # The CLI reports the same, at the threshold in force.
    doc = deployment.json("accuracy", user="sue")
    t = doc["threshold"]["value"]
    assert doc["genuine"]["pairs"] == 6 and doc["genuine"]["misses"] == sum(s < t for s in scores)
    assert doc["refresh"] is None and doc["notes"]          # no impostor figures yet: said so
    deployment.run("accuracy", "--json", user="alice", code=5)   # adjudicators do not see it
    deployment.run("accuracy", "--refresh", "--json", user="sue", code=5)  # refreshing is the admin's


def test_run_refreshes_the_tail_as_the_gallery_grows(live: dict[str, Any], deployment: Cli, database_url: str,
                                                     tmp_path: Path) -> None:
    """`dedup run` refreshes after a unit enters the gallery: the first time, then only once it has doubled."""
    import json

    import matplotlib.cbook
    from PIL import Image
    from skimage import data

    folder = tmp_path / "faces"
    (folder / "photos").mkdir(parents=True)
    Image.fromarray(data.astronaut()).save(folder / "photos" / "astronaut.jpg", quality=92)
    hopper = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    hopper.save(folder / "photos" / "hopper.jpg", quality=92)

    def refreshes() -> list[dict[str, Any]]:
        with psycopg.connect(database_url, row_factory=dict_row) as conn:
            return conn.execute("SELECT refresh_id, gallery_size, accepted, impostor_pairs FROM accuracy_refreshes "
                                "ORDER BY refresh_id").fetchall()

    for n, name in enumerate(["astronaut", "hopper"]):
        rows = [{"enrolment_id": f"R{n}", "centre_id": "C1", "photo": f"photos/{name}.jpg"}]
        deployment.json("submit", str(write_batch(folder, rows, {}, name=f"m{n}.parquet")), user="c1")
        out = deployment.run("run", "--once", "--json", env=FAST)
        assert json.loads(out.stdout)["warnings"] == []
    got = refreshes()
    assert len(got) == 1, got                                          # 61 then 62 templates: no doubling in between
    with psycopg.connect(database_url, row_factory=dict_row) as conn:   # R0 accepted, or sent to adjudication
        first = conn.execute("SELECT count(*) AS n FROM enrolments WHERE state = 'accepted' AND enrolment_id <> 'R1'").fetchone()["n"]
    assert got[0]["gallery_size"] == ACCEPTED + 1 and got[0]["accepted"] == first
    assert got[0]["impostor_pairs"] == first * (first - 1) // 2         # every accepted identity with a template
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        [row] = conn.execute("SELECT * FROM audit WHERE action = 'accuracy.refresh'").fetchall()
    assert row["actor"] == "dedup-run" and row["detail"]["gallery_size"] == ACCEPTED + 1
    doc = deployment.json("accuracy", user="sue")
    assert doc["refresh"]["refresh_id"] == got[0]["refresh_id"] and doc["refresh"]["next_at_gallery_size"] == 2 * (ACCEPTED + 1)
    assert doc["impostor"]["pairs"] == got[0]["impostor_pairs"] and set(doc["groups"]) == {"sex", "birth_year", "region"}
    assert doc["fpir"] is not None and doc["fpir"]["at_gallery_size"]["n"] == ACCEPTED + 2
    text = deployment.run("accuracy", user="sue").stdout       # for people: the same figures as tables
    assert "live FNIR: – from 0 genuine pair(s)" in text and "too few to estimate" in text
    assert f"impostor pairs: {got[0]['impostor_pairs']:,}" in text and "FMR by region" in text
    # An admin refreshes by hand whenever they like.
    assert deployment.json("accuracy", "--refresh")["refresh"]["refresh_id"] == got[0]["refresh_id"] + 1
