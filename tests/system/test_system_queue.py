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

from dedup.store.cases import NewCandidate, open_case
from dedup.store.identities import issue_uin
from dedup.uin import is_valid
from tests.support.cli import Cli
from tests.support.manifests import write_batch

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
    # bob's attempt and alice's contradicting decision were refused, and audited as such
    assert trail == [("alice", "case.claim"), ("alice", "case.view"), ("bob", "case.refused"), ("alice", "case.decide"),
                     ("alice", "case.refused")]
    # someone who did not decide a case learns nothing by re-posting its decision: the same answer as for any case not theirs
    same = deployment.run("queue", "decide", str(case["case_id"]), "--duplicate-of", uin, user="bob", code=5).stderr
    other = deployment.run("queue", "decide", str(case["case_id"]), "--distinct", user="bob", code=5).stderr
    nothing = deployment.run("queue", "decide", "999999", "--distinct", user="bob", code=5).stderr
    assert same == other == nothing.replace("999999", str(case["case_id"]))
    assert "alice" not in same and "duplicate" not in same and "decided" not in same


def test_only_the_holder_acts_and_release_returns_the_case(deployment: Cli, database_url: str, tmp_path: Path, photos: dict) -> None:
    _, ids, _ = open_cases(deployment, database_url, tmp_path, photos, 2)
    first = deployment.json("queue", "next", user="alice")
    assert deployment.json("queue", "next", user="alice")["case_id"] == first["case_id"]  # one case at a time, lease renewed
    second = deployment.json("queue", "next", user="bob")
    assert second["case_id"] != first["case_id"]
    assert deployment.json("queue", "next", user="sue") is None  # both held
    shown = deployment.run("queue", "show", str(first["case_id"]), user="bob", code=5).stderr
    released = deployment.run("queue", "release", str(first["case_id"]), user="bob", code=5).stderr
    assert "alice" not in shown + released  # who holds it is not told
    assert deployment.json("queue", "show", str(first["case_id"]), user="sue")["claimed_by"] == "alice"  # supervisors see all
    deployment.run("queue", "release", str(first["case_id"]), user="alice")
    assert deployment.json("queue", "next", user="sue")["case_id"] == first["case_id"]
    deployment.run("queue", "release", str(second["case_id"]), user="sue")  # a supervisor may release anyone's
    rows = deployment.json("audit", "--case", str(first["case_id"]), user="admin")
    actions = [a["action"] for a in rows]
    assert actions == ["case.claim", "case.view", "case.claim", "case.view", "case.refused", "case.refused", "case.view",
                       "case.release", "case.claim", "case.view"]
    refused = [(a["actor"], a["detail"]["action"], a["detail"]["reason"]) for a in rows if a["action"] == "case.refused"]
    assert refused == [("bob", "view", "held by alice"), ("bob", "release", "held by alice")]


def test_expired_lease_returns_the_case_to_the_queue(deployment: Cli, database_url: str, tmp_path: Path, photos: dict) -> None:
    open_cases(deployment, database_url, tmp_path, photos, 1)
    short = {"DEDUP_STORE_LEASE_SECONDS": "1"}
    case = deployment.json("queue", "next", user="alice", env=short)
    assert deployment.json("queue", "next", user="bob") is None
    time.sleep(1.3)
    taken = deployment.json("queue", "next", user="bob")
    assert taken["case_id"] == case["case_id"]
    r = deployment.run("queue", "decide", str(case["case_id"]), "--distinct", user="alice", code=5)
    assert "not yours" in r.stderr and "bob" not in r.stderr  # who took it over is not told
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


def test_queue_next_serves_control_pairs_as_the_web_does(deployment: Cli, database_url: str, tmp_path: Path, photos: dict) -> None:
    """At web.control_rate 1 the CLI's next case is a control pair while real cases wait, decided like any case and scored."""
    from dedup.adjudication.controls import add_from_case
    from dedup.store.users import authenticate

    _, ids, uin = open_cases(deployment, database_url, tmp_path, photos, 2)
    known = deployment.json("queue", "next", user="sue")
    deployment.json("queue", "decide", str(known["case_id"]), "--duplicate-of", uin, user="sue")
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        add_from_case(conn, authenticate(conn, "sue"), known["case_id"])
    waiting = deployment.json("queue", "list", user="sue")
    assert [c["enrolment_id"] for c in waiting] == [ids[1]]

    always = {"DEDUP_WEB_CONTROL_RATE": "1"}
    control = deployment.json("queue", "next", user="alice", env=always)
    assert control["case_id"] not in {c["case_id"] for c in waiting} and control["claimed_by"] == "alice"
    assert control["status"] == "open" and control["decision"] is None and Path(control["photo"]).is_file()
    # the control shows its source case's candidates: as many, with the same scores, as a real case has
    source = deployment.json("queue", "show", str(known["case_id"]), user="sue")
    assert [(c["rank"], c["score"], c["synthetic"]) for c in control["candidates"]] == \
        [(c["rank"], c["score"], c["synthetic"]) for c in source["candidates"]]
    candidate = control["candidates"][0]
    assert candidate["uin"] == uin and not candidate["synthetic"] and Path(candidate["photo"]).is_file()
    assert deployment.json("queue", "next", user="alice", env=always)["case_id"] == control["case_id"]  # held: renewed
    deployment.run("queue", "decide", str(control["case_id"]), "--distinct", user="bob", code=5)  # not the holder
    done = deployment.json("queue", "decide", str(control["case_id"]), "--duplicate-of", uin, user="alice")
    assert done["changed"] and done["decision"] == "duplicate"
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        scored = conn.execute("SELECT claimed_by, decision, correct FROM control_cases").fetchall()
        untouched = conn.execute("SELECT count(*) AS n FROM enrolments WHERE state = 'duplicate'").fetchone()["n"]
    assert scored == [{"claimed_by": "alice", "decision": "duplicate", "correct": True}]
    assert untouched == 1  # only the supervisor's real decision changed an enrolment
    # the real case kept waiting; alice has seen the only pair, so her next claim is the real case
    assert deployment.json("queue", "list", user="sue") == waiting
    assert deployment.json("queue", "next", user="alice", env=always)["enrolment_id"] == ids[1]
    trail = [(a["actor"], a["action"], a["detail"].get("control"))
             for a in deployment.json("audit", "--case", str(control["case_id"]), user="sue")]
    assert trail[0] == ("alice", "case.claim", True) and trail[-1] == ("alice", "case.decide", True)
