"""The adjudication queue: claims with leases, holder-only decisions, effects, audit,
and several processes claiming at once. Cases are opened with the same store calls that
``dedup run`` makes (``issue_uin``, ``open_case``) on enrolments submitted for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from dedup.queue.cases import NewCandidate, open_case
from dedup.store.identities import issue_uin
from dedup.uin import is_valid

from conftest import Cli, write_batch

SAMPLES = ["astronaut", "camera", "coffee", "chelsea", "rocket"]


def open_cases(deployment: Cli, database_url: str, tmp_path: Path, photos: dict, n_cases: int) -> tuple[str, list[str], str]:
    """Submit one accepted identity and ``n_cases`` enrolments that each open a case against it.

    Returns (batch_id, enrolment ids of the cases in case order, the identity's UIN).
    """
    rows = [{"enrolment_id": "P0", "centre_id": "C1", "photo": "astronaut"}]
    rows += [{"enrolment_id": f"P{i}", "centre_id": "C1", "photo": SAMPLES[i % len(SAMPLES)]} for i in range(1, n_cases + 1)]
    batch_id = deployment.json("submit", str(write_batch(tmp_path / "batch", rows, photos)), user="c1")["batch_id"]
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        pks = {r["enrolment_id"]: r["enrolment_pk"] for r in conn.execute("SELECT enrolment_id, enrolment_pk FROM enrolments")}
        with conn.transaction():
            uin = issue_uin(conn, pks["P0"], "test")
            for i in range(1, n_cases + 1):
                open_case(conn, pks[f"P{i}"], [NewCandidate(pks["P0"], pks["P0"], 0.97 - i / 100, "gallery"),
                                               NewCandidate(10_000_000 + i, None, 0.91, "gallery")])
    return batch_id, [f"P{i}" for i in range(1, n_cases + 1)], uin


def test_claim_show_decide_and_their_effects(deployment: Cli, database_url: str, tmp_path: Path, photos: dict) -> None:
    batch_id, ids, uin = open_cases(deployment, database_url, tmp_path, photos, 3)
    listed = deployment.json("queue", "list", user="sue")
    assert [c["enrolment_id"] for c in listed] == ids and all(c["claimed_by"] is None for c in listed)

    # duplicate -> the enrolment is linked to the existing UIN
    case = deployment.json("queue", "next", user="alice")
    assert case["enrolment_id"] == "P1" and case["claimed_by"] == "alice"
    top, synthetic = case["candidates"]
    assert top["uin"] == uin and top["score"] > synthetic["score"] and synthetic["synthetic"] and synthetic["uin"] is None
    assert Path(case["photo"]).is_file()
    wrong = "".join(reversed(uin))
    deployment.run("queue", "decide", str(case["case_id"]), "--duplicate-of", wrong, user="alice", code=2)
    deployment.run("queue", "decide", str(case["case_id"]), "--distinct", user="bob", code=5)  # not the holder
    done = deployment.json("queue", "decide", str(case["case_id"]), "--duplicate-of", uin, "--comment", "same face", user="alice")
    assert done["changed"] and done["enrolment_state"] == "duplicate"
    again = deployment.json("queue", "decide", str(case["case_id"]), "--duplicate-of", uin, user="alice")
    assert not again["changed"]
    deployment.run("queue", "decide", str(case["case_id"]), "--distinct", user="alice", code=7)
    [st] = deployment.json("status", "P1", user="c1")
    assert st["state"] == "duplicate" and st["duplicate_of"] == uin

    # distinct -> a fresh UIN is issued
    case2 = deployment.json("queue", "next", user="alice")
    assert case2["enrolment_id"] == "P2"
    res = deployment.json("queue", "decide", str(case2["case_id"]), "--distinct", user="alice")
    assert is_valid(res["uin"]) and res["uin"] != uin
    [st] = deployment.json("status", "P2", user="c1")
    assert st["state"] == "accepted" and st["uin"] == res["uin"]

    # recapture -> the centre sees the request in its report
    case3 = deployment.json("queue", "next", user="bob")
    deployment.run("queue", "decide", str(case3["case_id"]), "--recapture", "--comment", "eyes closed", user="bob")
    report = {r["enrolment_id"]: r for r in deployment.json("report", batch_id, user="c1")["rows"]}
    assert report["P3"]["state"] == "recapture" and report["P3"]["detail"] == "eyes closed"
    assert report["P0"]["state"] == "accepted" and report["P0"]["uin"] == uin
    assert deployment.json("queue", "list", user="alice") == []
    assert deployment.json("queue", "next", user="alice") is None

    trail = [(a["actor"], a["action"]) for a in deployment.json("audit", "--case", str(case["case_id"]), user="sue")]
    assert trail == [("alice", "case.claim"), ("alice", "case.view"), ("alice", "case.decide")]


def test_only_the_holder_acts_and_release_returns_the_case(deployment: Cli, database_url: str, tmp_path: Path, photos: dict) -> None:
    _, ids, _ = open_cases(deployment, database_url, tmp_path, photos, 2)
    first = deployment.json("queue", "next", user="alice")
    assert deployment.json("queue", "next", user="alice")["case_id"] == first["case_id"]  # one case at a time, lease renewed
    second = deployment.json("queue", "next", user="bob")
    assert second["case_id"] != first["case_id"]
    assert deployment.json("queue", "next", user="sue") is None  # both held
    deployment.run("queue", "show", str(first["case_id"]), user="bob", code=5)
    deployment.run("queue", "release", str(first["case_id"]), user="bob", code=5)
    assert deployment.json("queue", "show", str(first["case_id"]), user="sue")["claimed_by"] == "alice"  # supervisors see all
    deployment.run("queue", "release", str(first["case_id"]), user="alice")
    assert deployment.json("queue", "next", user="sue")["case_id"] == first["case_id"]
    deployment.run("queue", "release", str(second["case_id"]), user="sue")  # a supervisor may release anyone's
    actions = [a["action"] for a in deployment.json("audit", "--case", str(first["case_id"]), user="admin")]
    assert actions == ["case.claim", "case.view", "case.claim", "case.view", "case.view", "case.release", "case.claim", "case.view"]


def test_expired_lease_returns_the_case_to_the_queue(deployment: Cli, database_url: str, tmp_path: Path, photos: dict) -> None:
    open_cases(deployment, database_url, tmp_path, photos, 1)
    short = {"DEDUP_STORE_LEASE_SECONDS": "1"}
    case = deployment.json("queue", "next", user="alice", env=short)
    assert deployment.json("queue", "next", user="bob") is None
    time.sleep(1.3)
    taken = deployment.json("queue", "next", user="bob")
    assert taken["case_id"] == case["case_id"]
    r = deployment.run("queue", "decide", str(case["case_id"]), "--distinct", user="alice", code=5)
    assert "held by bob" in r.stderr
    claims = [a["detail"] for a in deployment.json("audit", "--case", str(case["case_id"]), user="sue") if a["action"] == "case.claim"]
    assert claims[-1]["expired_lease_of"] == "alice"


def test_expired_holder_cannot_decide(deployment: Cli, database_url: str, tmp_path: Path, photos: dict) -> None:
    open_cases(deployment, database_url, tmp_path, photos, 1)
    case = deployment.json("queue", "next", user="alice", env={"DEDUP_STORE_LEASE_SECONDS": "1"})
    time.sleep(1.3)
    assert "expired" in deployment.run("queue", "decide", str(case["case_id"]), "--distinct", user="alice", code=7).stderr


def test_concurrent_claims_from_several_processes_never_share_a_case(deployment: Cli, database_url: str, tmp_path: Path,
                                                                      photos: dict) -> None:
    n_cases, n_procs = 5, 7
    open_cases(deployment, database_url, tmp_path, photos, n_cases)
    for i in range(n_procs):
        deployment.run("user", "add", f"adj{i}", "--role", "adjudicator")
    env = {**os.environ, "DEDUP_HOME": str(deployment.home)}
    procs = [subprocess.Popen([sys.executable, "-m", "dedup.cli", "queue", "next", "--json"], env={**env, "DEDUP_USER": f"adj{i}"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(n_procs)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    claimed = [r["case_id"] for r in results if r is not None]
    assert len(claimed) == n_cases and len(set(claimed)) == n_cases
    assert sum(r is None for r in results) == n_procs - n_cases
    holders = {c["case_id"]: c["claimed_by"] for c in deployment.json("queue", "list", user="sue")}
    assert {r["case_id"]: r["claimed_by"] for r in results if r is not None} == holders
