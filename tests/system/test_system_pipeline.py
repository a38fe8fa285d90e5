"""`dedup run` end to end with real photos, and killed at every step then resumed.

Real faces: scikit-image's astronaut and matplotlib's grace_hopper; a second capture of
each is the same photograph re-framed, rotated, re-exposed and re-compressed (as the demo
does: no installed package ships two photographs of one person)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support.cli import Cli

# Small codec training and in-process face work: the machine is shared.
FAST = {"DEDUP_INDEX_TRAIN_SIZE": "1000", "DEDUP_FACE_WORKERS": "1"}


@pytest.fixture(scope="session")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of real face photos, second captures, a photo without a face and a broken file."""
    import matplotlib.cbook
    from PIL import Image
    from skimage import data

    from dedup.bench.demo import recapture

    root = tmp_path_factory.mktemp("faces")
    astronaut = Image.fromarray(data.astronaut())
    hopper = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    astronaut.save(root / "astronaut-1.jpg", quality=92)
    recapture(astronaut, 1).save(root / "astronaut-2.jpg", quality=75)
    hopper.save(root / "hopper-1.jpg", quality=92)
    recapture(hopper, 2).save(root / "hopper-2.jpg", quality=75)
    Image.fromarray(data.coffee()).save(root / "coffee.jpg")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def batch(folder: Path, faces: Path, rows: list[tuple[str, str]]) -> Path:
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    for _, name in rows:
        (folder / name).write_bytes((faces / name).read_bytes())
    when = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    pq.write_table(pa.table({"enrolment_id": [r[0] for r in rows], "centre_id": ["C1"] * len(rows),
                             "captured_at": pa.array([when] * len(rows), pa.timestamp("us", tz="UTC")),
                             "photo": [r[1] for r in rows]}), folder / "m.parquet")
    return folder / "m.parquet"


def states(database_url: str) -> dict[str, dict]:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return {r["enrolment_id"]: r for r in conn.execute("SELECT * FROM enrolments")}


def gallery_names(home: Path) -> list[str]:
    from dedup.index.gallery import Gallery

    g = Gallery.open(home / "gallery")
    return sorted(g.enrolment_ids(sorted(s for sh in g.shards() for s in sh.row_ids.tolist())))


def test_duplicates_become_cases_and_decisions_take_effect(deployment: Cli, database_url: str, tmp_path: Path, faces: Path) -> None:
    first = batch(tmp_path / "b1", faces, [("A1", "astronaut-1.jpg"), ("A2", "astronaut-2.jpg"), ("G1", "hopper-1.jpg"),
                                           ("N1", "coffee.jpg"), ("B1", "broken.jpg")])
    receipt = deployment.json("submit", str(first), user="c1")
    assert [i["reason"] for i in receipt["items"]] == [None, None, None, None, "unreadable_image"]
    out = deployment.json("run", "--once", env=FAST)
    assert (out["enrolments"], out["accepted"], out["cases"], out["rejected"]) == (4, 2, 1, 1)
    st = states(database_url)
    assert st["A1"]["state"] == "accepted" and st["G1"]["state"] == "accepted" and st["A1"]["uin"] != st["G1"]["uin"]
    assert (st["N1"]["state"], st["N1"]["reason"]) == ("rejected", "no_face")

    # The second capture in the same batch: a case whose candidate is the first capture.
    case = deployment.json("queue", "next", user="alice")
    assert case["enrolment_id"] == "A2"
    [cand] = case["candidates"]
    assert (cand["enrolment_id"], cand["found_in"], cand["uin"]) == ("A1", "batch", st["A1"]["uin"]) and cand["score"] >= 0.9082
    deployment.run("queue", "decide", str(case["case_id"]), "--duplicate-of", st["A1"]["uin"], user="alice")

    # A later batch: the second capture of G1 is found in the gallery.
    second = batch(tmp_path / "b2", faces, [("G2", "hopper-2.jpg")])
    deployment.json("submit", str(second), user="c1")
    assert deployment.json("run", "--once", env=FAST)["cases"] == 1
    case = deployment.json("queue", "next", user="bob")
    [cand] = case["candidates"]
    assert (case["enrolment_id"], cand["enrolment_id"], cand["found_in"]) == ("G2", "G1", "gallery")
    uin = deployment.json("queue", "decide", str(case["case_id"]), "--distinct", user="bob")["uin"]

    st = states(database_url)
    assert (st["A2"]["state"], st["A2"]["duplicate_of"]) == ("duplicate", st["A1"]["uin"])
    assert (st["G2"]["state"], st["G2"]["uin"]) == ("accepted", uin)
    assert deployment.json("run", "--once", env=FAST)["enrolments"] == 0  # nothing left: a rerun changes nothing
    pks = {k: v["enrolment_pk"] for k, v in st.items()}
    assert gallery_names(deployment.home) == sorted(f"e{pks[k]}" for k in ("A1", "A2", "G1", "G2"))
    assert not list((deployment.home / "store" / "work").iterdir())  # no template left outside the gallery


def test_killed_at_every_step_the_rerun_finishes_with_nothing_lost_or_doubled(deployment: Cli, database_url: str,
                                                                              tmp_path: Path, faces: Path) -> None:
    manifest = batch(tmp_path / "b", faces, [("A1", "astronaut-1.jpg"), ("A2", "astronaut-2.jpg"), ("G1", "hopper-1.jpg"),
                                             ("N1", "coffee.jpg")])
    deployment.json("submit", str(manifest), user="c1")
    env = {**os.environ, **FAST, "DEDUP_HOME": str(deployment.home), "DEDUP_USER": "admin"}

    def run(crash_at: str | None) -> subprocess.CompletedProcess[str]:
        e = {**env, **({"DEDUP_CRASH_AT": crash_at} if crash_at else {})}
        return subprocess.run([sys.executable, "-m", "dedup.cli", "run", "--once", "--json"], env=e, capture_output=True,
                              text=True, timeout=300)

    from dedup.faults import CRASH_EXIT_CODE

    expected_after = {
        "run.claimed": {"processing"},
        "run.embedded": {"processing"},
        "run.deciding": {"processing"},  # killed inside the decision transaction: none of it happened
        "run.decided": {"accepted", "adjudication", "rejected"},
        "run.added": {"accepted", "adjudication", "rejected"},
    }
    uins_seen: dict[str, str] = {}
    for point, allowed in expected_after.items():
        r = run(point)
        assert r.returncode == CRASH_EXIT_CODE, (point, r.stderr)
        st = states(database_url)
        assert {v["state"] for v in st.values()} == allowed, point
        for k, v in st.items():  # a UIN, once issued, never changes
            if v["uin"]:
                assert uins_seen.setdefault(k, v["uin"]) == v["uin"]
    final = run(None)
    assert final.returncode == 0, final.stderr
    st = states(database_url)
    assert {k: v["state"] for k, v in st.items()} == {"A1": "accepted", "A2": "adjudication", "G1": "accepted", "N1": "rejected"}
    assert all(uins_seen[k] == st[k]["uin"] for k in uins_seen)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM uins").fetchone()[0] == 2
        assert conn.execute("SELECT count(*) FROM cases").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM case_candidates").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM run_units WHERE state <> 'done'").fetchone()[0] == 0
    pks = {k: v["enrolment_pk"] for k, v in st.items()}
    assert gallery_names(deployment.home) == sorted(f"e{pks[k]}" for k in ("A1", "A2", "G1"))  # each template once
    again = run(None)
    assert again.returncode == 0 and '"enrolments": 0' in again.stdout


def test_run_on_a_dask_cluster_finds_the_same_candidates(deployment: Cli, database_url: str, tmp_path: Path,
                                                          faces: Path) -> None:
    """`dedup run --scheduler ADDR`: the gallery search runs on the cluster's workers."""
    from distributed import LocalCluster

    first = batch(tmp_path / "b1", faces, [("G1", "hopper-1.jpg"), ("A1", "astronaut-1.jpg")])
    deployment.json("submit", str(first), user="c1")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        out = deployment.json("run", "--once", "--scheduler", cluster.scheduler_address, env=FAST)
        assert (out["accepted"], out["cases"]) == (2, 0)
        second = batch(tmp_path / "b2", faces, [("G2", "hopper-2.jpg")])
        deployment.json("submit", str(second), user="c1")
        assert deployment.json("run", "--once", "--scheduler", cluster.scheduler_address, env=FAST)["cases"] == 1
    case = deployment.json("queue", "next", user="alice")
    [cand] = case["candidates"]
    assert (case["enrolment_id"], cand["enrolment_id"], cand["found_in"]) == ("G2", "G1", "gallery")
