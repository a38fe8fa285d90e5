"""Someone who does not hold a case learns nothing about it, and every attempt is audited
(issue 12: Broken 5, enumeration, audit gap, bidirectional text), over real HTTP.

Before: re-posting a decision on another adjudicator's decided case answered 303 for the
same decision and "already decided distinct by alice at 14:01:22" for another; a case that
does not exist answered 404 and another's 403; a photo of candidate 9 answered 404 where
candidate 1 answered 403; none of it left an audit row.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.support.web import Site


def _post(client: httpx.Client, path: str, csrf: str, **data: str) -> httpx.Response:
    return client.post(path, data={"csrf_token": csrf, **data})


def _refusal(r: httpx.Response, case_id: int) -> tuple[int, str]:
    m = re.search(r'<p class="error" role="alert">([^<]*)</p>', r.text)
    assert m, r.text
    return r.status_code, m.group(1).replace(str(case_id), "N")


def _refused(site: Site, actor: str, case_id: int) -> list[dict[str, Any]]:
    with site.conn() as conn:
        return [r["detail"] for r in conn.execute(
            "SELECT detail FROM audit WHERE action = 'case.refused' AND actor = %s AND object_id = %s ORDER BY audit_id",
            (actor, str(case_id)))]


def test_a_decided_case_tells_nothing_to_someone_who_did_not_decide_it(site: Site) -> None:
    site.clear_queue()
    decided, held, waiting = site.open_cases([("astronaut-2", "astronaut-1"), ("hopper-2", "hopper-1"), ("hopper-2", "astronaut-1")])
    alice, a_csrf = site.login("alice")
    bob, b_csrf = site.login("bob")
    assert alice.post("/queue/next", data={"csrf_token": a_csrf}).headers["location"] == f"/cases/{decided}"
    assert _post(alice, f"/cases/{decided}/decide", a_csrf, decision="distinct").status_code == 303
    assert alice.post("/queue/next", data={"csrf_token": a_csrf}).headers["location"] == f"/cases/{held}"

    # bob re-posts alice's decision, and another one: neither tells him the outcome, nor who decided, nor when
    same = _post(bob, f"/cases/{decided}/decide", b_csrf, decision="distinct")
    other = _post(bob, f"/cases/{decided}/decide", b_csrf, decision="recapture")
    for r in (same, other):
        assert r.status_code == 403
        assert "alice" not in r.text and "distinct" not in r.text and "decided" not in r.text
        assert not re.search(r"\d\d:\d\d:\d\d", r.text)
    # the one answer for "not yours": a decided case, a held one, a waiting one and one that does not exist
    answers = {_refusal(r, n) for r, n in (
        (same, decided), (other, decided),
        (_post(bob, f"/cases/{held}/decide", b_csrf, decision="distinct"), held),
        (_post(bob, f"/cases/{waiting}/decide", b_csrf, decision="distinct"), waiting),
        (_post(bob, "/cases/424242/decide", b_csrf, decision="distinct"), 424242),
        (bob.get(f"/cases/{decided}"), decided), (bob.get(f"/cases/{held}"), held), (bob.get("/cases/424242"), 424242),
        (_post(bob, f"/cases/{decided}/release", b_csrf), decided), (_post(bob, f"/cases/{held}/release", b_csrf), held),
        (_post(bob, "/cases/424242/release", b_csrf), 424242),
    )}
    assert len(answers) == 1, answers
    [(status, words)] = answers
    assert status == 403 and "not yours" in words
    # nothing changed: alice's decision stands and she still holds her case
    with site.conn() as conn:
        rows = {r["case_id"]: r for r in conn.execute("SELECT case_id, status, decision, claimed_by FROM cases")}
    assert (rows[decided]["status"], rows[decided]["decision"]) == ("decided", "distinct")
    assert rows[held]["claimed_by"] == "alice"
    # the one who decided still gets her own answers
    assert _post(alice, f"/cases/{decided}/decide", a_csrf, decision="distinct").status_code == 303
    mine = _post(alice, f"/cases/{decided}/decide", a_csrf, decision="recapture")
    assert mine.status_code == 409 and "already decided distinct by you at" in mine.text
    # every refused attempt is in the audit log, with the real reason for supervisors
    refused = _refused(site, "bob", decided)
    assert [(d["action"], d["reason"]) for d in refused] == [("decide", "decided by alice")] * 2 + [("view", "decided by alice"),
                                                                                                   ("release", "decided by alice")]
    assert [d["reason"] for d in _refused(site, "bob", 424242)] == ["no such case"] * 3
    assert {d["reason"] for d in _refused(site, "bob", held)} == {"held by alice"}
    sue, _ = site.login("sue")
    log = sue.get("/supervisor/audit", params={"action": "case.refused", "actor": "bob"}).text
    assert log.count("case.refused") >= 9 and "decided by alice" in log
    site.clear_queue()


def test_photos_of_a_case_not_yours_do_not_reveal_how_many_candidates_it_has(site: Site) -> None:
    site.clear_queue()
    [case] = site.open_cases([("astronaut-2", "astronaut-1")], synthetic=True)  # candidates 1 (photo) and 2 (synthetic)
    alice, a_csrf = site.login("alice")
    bob, _ = site.login("bob")
    assert alice.post("/queue/next", data={"csrf_token": a_csrf}).headers["location"] == f"/cases/{case}"
    asked = ["probe/full", "1/full", "1/crop", "2/full", "3/full", "9/crop", "0/full", "x/full"]
    answers = {which: _refusal(bob.get(f"/cases/{case}/photos/{which}"), case) for which in asked}
    assert len(set(answers.values())) == 1 and next(iter(answers.values()))[0] == 403, answers
    assert [d["action"] for d in _refused(site, "bob", case)] == ["photo"] * len(asked)
    # the holder is told what is there: a photo, a synthetic candidate, no such candidate
    assert alice.get(f"/cases/{case}/photos/1/full").headers["content-type"].startswith("image/")
    assert alice.get(f"/cases/{case}/photos/2/full").status_code == 404
    assert alice.get(f"/cases/{case}/photos/3/full").status_code == 404
    with site.conn() as conn:
        photo_rows = [r["detail"] for r in conn.execute(
            "SELECT detail FROM audit WHERE action = 'case.photo' AND actor = 'alice' AND object_id = %s", (str(case),))]
    assert photo_rows == [{"photo": "candidate 1", "kind": "full"}]
    assert [d["action"] for d in _refused(site, "alice", case)] == ["photo", "photo"]  # refused reads of her own case, too
    site.clear_queue()


def test_decisions_and_releases_leave_audit_rows(site: Site) -> None:
    site.clear_queue()
    first, second = site.open_cases([("astronaut-2", "astronaut-1"), ("hopper-2", "hopper-1")])
    alice, a_csrf = site.login("alice")
    assert alice.post("/queue/next", data={"csrf_token": a_csrf}).headers["location"] == f"/cases/{first}"
    assert _post(alice, f"/cases/{first}/release", a_csrf).status_code == 303
    assert alice.post("/queue/next", data={"csrf_token": a_csrf}).headers["location"] == f"/cases/{first}"
    assert _post(alice, f"/cases/{first}/decide", a_csrf, decision="recapture", comment="eyes closed").status_code == 303
    assert _post(alice, f"/cases/{first}/release", a_csrf).status_code == 409  # decided: her own conflict, audited too
    with site.conn() as conn:
        trail = [(r["action"], r["detail"].get("action")) for r in conn.execute(
            "SELECT action, detail FROM audit WHERE object_type = 'case' AND object_id = %s ORDER BY audit_id", (str(first),))]
    assert trail == [("case.claim", None), ("case.release", None), ("case.claim", None), ("case.decide", None),
                     ("case.refused", "release")]
    site.clear_queue()


def test_direction_overrides_in_comments_are_written_out_where_shown(site: Site) -> None:
    site.clear_queue()
    [case] = site.open_cases([("astronaut-2", "astronaut-1")])
    alice, a_csrf = site.login("alice")
    assert alice.post("/queue/next", data={"csrf_token": a_csrf}).headers["location"] == f"/cases/{case}"
    typed = "see photo \u202egnp.exe\u202c and \u2067isolate\u2069"
    assert _post(alice, f"/cases/{case}/decide", a_csrf, decision="recapture", comment=typed).status_code == 303
    page = alice.get(f"/cases/{case}").text
    assert "see photo [U+202E]gnp.exe[U+202C] and [U+2067]isolate[U+2069]" in page
    assert not any(c in page for c in "\u202e\u202c\u2067\u2069")
    sue, _ = site.login("sue")
    log = sue.get("/supervisor/audit", params={"object_id": str(case)}).text
    assert "case.decide" in log and not any(c in log for c in "\u202e\u202c\u2067\u2069")
    # the audit keeps what was typed; the centre is sent the request written out
    with site.conn() as conn:
        kept = conn.execute("SELECT comment FROM cases WHERE case_id = %s", (case,)).fetchone()["comment"]
        enrolment = conn.execute("SELECT e.enrolment_id FROM cases c JOIN enrolments e USING (enrolment_pk) WHERE c.case_id = %s",
                                 (case,)).fetchone()["enrolment_id"]
    assert kept == typed
    r = site.client().get(f"/api/v1/enrolments/{enrolment}", headers={"Authorization": f"Bearer {site.tokens['C1']}"})
    [outcome] = r.json()["outcomes"]
    assert outcome["state"] == "recapture" and outcome["detail"] == "see photo [U+202E]gnp.exe[U+202C] and [U+2067]isolate[U+2069]"
    site.clear_queue()
