"""Every command checks the acting user's role, and centres see only their own batches."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import Cli
from tests.support.manifests import write_batch


def test_users_and_centres_need_an_admin(deployment: Cli) -> None:
    assert "may not user add" in deployment.run("user", "add", "x", "--role", "admin", user="sue", code=5).stderr
    deployment.run("centre", "add", "C3", user="c1", code=5)
    deployment.run("user", "add", "x", "--role", "centre", code=2)  # a centre user needs --centre
    deployment.run("user", "add", "x", "--role", "centre", "--centre", "C404", code=6)
    deployment.run("user", "add", "x", "--role", "adjudicator", "--centre", "C1", code=2)
    deployment.run("user", "add", "x", "--role", "wizard", code=2)
    deployment.run("user", "add", "alice", "--role", "adjudicator", code=7)
    deployment.run("centre", "add", "C1", code=7)
    deployment.run("centre", "add", "bad id!", code=2)
    assert [u["name"] for u in deployment.json("user", "list", user="sue")] == ["admin", "alice", "bob", "c1", "c2", "sue"]


def test_unknown_missing_or_disabled_user_is_refused(deployment: Cli) -> None:
    assert "unknown user" in deployment.run("queue", "list", user="mallory", code=5).stderr
    assert "DEDUP_USER" in deployment.run("queue", "list", user=None, code=5).stderr
    deployment.run("user", "disable", "bob")
    assert "disabled" in deployment.run("queue", "list", user="bob", code=5).stderr
    deployment.run("user", "disable", "admin", code=7)  # the last admin stays


def test_adjudicator_cannot_submit_and_centre_cannot_adjudicate(deployment: Cli, tmp_path: Path, photos: dict) -> None:
    path = write_batch(tmp_path / "b", [{"enrolment_id": "E1", "centre_id": "C1", "photo": "astronaut"}], photos)
    deployment.run("submit", str(path), user="alice", code=5)
    deployment.run("submit", str(path), user="sue", code=5)
    for args in (["queue", "list"], ["queue", "next"], ["queue", "show", "1"], ["queue", "decide", "1", "--distinct"],
                 ["queue", "release", "1"], ["audit"]):
        deployment.run(*args, user="c1", code=5)
    deployment.run("status", "E1", user="alice", code=5)
    deployment.run("queue", "next", user="admin", code=5)  # admins run the system, adjudicators decide


def test_centre_sees_only_its_own_batches(deployment: Cli, tmp_path: Path, photos: dict) -> None:
    path = write_batch(tmp_path / "b", [{"enrolment_id": "E1", "centre_id": "C1", "photo": "astronaut"},
                                        {"enrolment_id": "E2", "centre_id": "C2", "photo": "camera"}], photos)
    receipt = deployment.json("submit", str(path), user="c1")
    assert [(i["status"], i["reason"]) for i in receipt["items"]] == [("accepted", None), ("rejected", "centre_not_permitted")]
    # another centre's batch answers as one that does not exist
    assert "no batch" in deployment.run("report", receipt["batch_id"], user="c2", code=6).stderr
    deployment.run("status", "E2", user="c2", code=6)  # c1's row naming C2 is c1's, not C2's
    assert [s["reason"] for s in deployment.json("status", "E2", user="c1")] == ["centre_not_permitted"]
    deployment.run("status", "E1", user="c2", code=6)  # not visible as theirs
    deployment.run("status", "E1", "--centre", "C1", user="c2", code=5)
    deployment.run("submit", str(path), user="c2", code=5)  # resubmitting someone else's batch does not reveal its receipt
    assert len(deployment.json("report", receipt["batch_id"], user="c1")["rows"]) == 2
    assert len(deployment.json("report", receipt["batch_id"], user="sue")["rows"]) == 2
