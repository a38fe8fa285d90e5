"""The web app over real HTTP: login (CSRF, lock-out, cookie flags), the queue, a case with
its photos and crops, decisions with their effects and audit rows, release, control pairs and
the supervisor pages."""

from __future__ import annotations

import re

from PIL import Image

from dedup.store.users import authenticate
from tests.support.web import PASSWORD, Site, _hidden


def test_login_sets_a_signed_httponly_samesite_cookie_and_needs_the_form_token(site: Site) -> None:
    c = site.client()
    page = c.get("/login")
    assert page.status_code == 200 and page.headers["cache-control"].startswith("no-store")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    token = _hidden(page.text, "csrf_token")
    # without the login form's token: refused before the password is even looked at
    r = site.client().post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 403
    r = c.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": "forged"})
    assert r.status_code == 403
    r = c.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token, "next": "//evil.example/x"})
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("dedup_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and "Path=/" in cookie
    session_id = cookie.split(";")[0].split("=", 1)[1]
    with site.conn() as conn:  # the database keeps a hash only: the cookie's id is nowhere in it
        stored = conn.execute("SELECT session_sha256 FROM web_sessions WHERE user_name = 'alice'").fetchall()
    assert stored and all(session_id.split(".")[0] not in row["session_sha256"] for row in stored)
    assert c.get("/queue").status_code == 200
    # a tampered cookie is no session
    bad = site.client(cookies={"dedup_session": session_id[:-2] + "xx"})
    assert bad.get("/queue").status_code == 401
    # log out: the old cookie stops working even when replayed
    csrf = _hidden(c.get("/queue").text, "csrf_token")
    assert c.post("/logout", data={"csrf_token": csrf}).status_code == 303
    assert site.client(cookies={"dedup_session": session_id}).get("/queue").status_code == 401


def test_repeated_failures_lock_the_account_and_every_attempt_is_audited(site: Site) -> None:
    c = site.client()
    token = _hidden(c.get("/login").text, "csrf_token")
    for _ in range(5):  # web.lockout_attempts
        r = c.post("/login", data={"username": "bob", "password": "wrong password!", "csrf_token": token})
        assert r.status_code == 401 and "wrong user name or password" in r.text
        token = _hidden(r.text, "csrf_token")  # every login form carries a fresh token
    # now even the right password is refused, with the same words
    r = c.post("/login", data={"username": "bob", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 401 and "wrong user name or password" in r.text and "dedup_session" not in r.headers.get("set-cookie", "")
    token = _hidden(r.text, "csrf_token")
    unknown = c.post("/login", data={"username": "nobody", "password": PASSWORD, "csrf_token": token})
    assert unknown.status_code == 401 and unknown.text.count("wrong user name or password") == 1
    token = _hidden(unknown.text, "csrf_token")
    with site.conn() as conn:
        actions = [r["action"] for r in conn.execute("SELECT action FROM audit WHERE object_id = 'bob' AND action LIKE 'login%' ORDER BY audit_id")]
        assert actions.count("login.failed") == 6 and "login.locked" in actions
        assert conn.execute("SELECT count(*) AS n FROM audit WHERE detail::text LIKE %s", ("%wrong password!%",)).fetchone()["n"] == 0
        conn.execute("UPDATE web_accounts SET locked_until = NULL, failed_logins = 0 WHERE user_name = 'bob'")  # for the next tests
    # centres use the API with a token: they have no web login
    r = c.post("/login", data={"username": "c1", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 401


def test_take_a_case_see_photos_and_crops_decide_and_the_queue_shrinks(site: Site) -> None:
    site.clear_queue()
    ids = site.open_cases([("astronaut-2", "astronaut-1"), ("hopper-2", "hopper-1")], synthetic=True)
    alice, csrf = site.login("alice")
    page = alice.get("/queue")
    assert _count(page.text, "waiting") == 2
    r = alice.post("/queue/next", data={"csrf_token": csrf})
    assert r.status_code == 303 and r.headers["location"] == f"/cases/{ids[0]}"
    assert _count(alice.get("/queue").text, "waiting") == 1
    case = alice.get(f"/cases/{ids[0]}")
    assert case.status_code == 200
    assert "synthetic template, no photo" in case.text  # the synthetic candidate, clearly
    assert "about 1 in" in case.text and "Source:" in case.text and "face-like" in case.text
    for needle in ("1970", "north", "W1-0-P", "W1-0-C"):  # no demographics, no enrolment ids on the page
        assert needle not in case.text
    # the new photo beside the candidate's: full photos and aligned crops, never cached
    full = alice.get(f"/cases/{ids[0]}/photos/probe/full")
    assert full.status_code == 200 and full.headers["content-type"] == "image/jpeg" and full.content == site.photos["astronaut-2"]
    assert "no-store" in full.headers["cache-control"]
    crop = alice.get(f"/cases/{ids[0]}/photos/1/crop")
    assert crop.headers["content-type"] == "image/png" and "no-store" in crop.headers["cache-control"]
    import io

    assert Image.open(io.BytesIO(crop.content)).size == (150, 150)
    assert alice.get(f"/cases/{ids[0]}/photos/2/full").status_code == 404  # synthetic: nothing to show
    assert alice.get(f"/cases/{ids[0]}/photos/9/full").status_code == 404
    # a duplicate of the synthetic candidate is refused; of the real one, recorded
    r = alice.post(f"/cases/{ids[0]}/decide", data={"csrf_token": csrf, "decision": "duplicate", "candidate": "2"})
    assert r.status_code == 400 and "no identity" in r.text
    r = alice.post(f"/cases/{ids[0]}/decide", data={"csrf_token": csrf, "decision": "duplicate", "candidate": "1", "comment": "same ears"})
    assert r.status_code == 303
    done = alice.get(f"/cases/{ids[0]}")
    assert "Duplicate of candidate 1" in done.text and "same ears" in done.text
    assert alice.get(f"/cases/{ids[0]}/photos/probe/full").status_code == 403  # no longer holding it: no photos
    with site.conn() as conn:
        e = conn.execute("""SELECT e.state, e.duplicate_of, k.uin FROM cases c JOIN enrolments e USING (enrolment_pk),
                            LATERAL (SELECT coalesce(x.uin, x.duplicate_of) AS uin FROM case_candidates kk JOIN enrolments x
                                     USING (enrolment_pk) WHERE kk.case_id = c.case_id AND kk.rank = 0) k
                            WHERE c.case_id = %s""", (ids[0],)).fetchone()
        assert e["state"] == "duplicate" and e["duplicate_of"] == e["uin"]
        views = conn.execute("SELECT action, detail FROM audit WHERE object_type = 'case' AND object_id = %s ORDER BY audit_id",
                             (str(ids[0]),)).fetchall()
        actions = [v["action"] for v in views]
        assert actions[0] == "case.claim" and "case.view" in actions and "case.decide" in actions
        photo_reads = [v["detail"] for v in views if v["action"] == "case.photo"]
        assert {"photo": "probe", "kind": "full"} in photo_reads and {"photo": "candidate 1", "kind": "crop"} in photo_reads
        note = conn.execute("SELECT * FROM web_decisions WHERE case_id = %s", (ids[0],)).fetchone()
        assert note["decision"] == "duplicate" and note["candidate"] == 0 and not note["blind"] and note["seconds"] >= 0
    # distinct issues a UIN; the queue is empty afterwards
    r = alice.post("/queue/next", data={"csrf_token": csrf})
    assert r.headers["location"] == f"/cases/{ids[1]}"
    assert alice.post(f"/cases/{ids[1]}/decide", data={"csrf_token": csrf, "decision": "distinct"}).status_code == 303
    assert _count(alice.get("/queue").text, "waiting") == 0
    assert alice.post("/queue/next", data={"csrf_token": csrf}).headers["location"] == "/queue?empty=1"


def test_release_returns_the_case_and_holders_only_act(site: Site) -> None:
    site.clear_queue()
    [case_id] = site.open_cases([("astronaut-2", "astronaut-1")])
    alice, a_csrf = site.login("alice")
    bob, b_csrf = site.login("bob")
    alice.post("/queue/next", data={"csrf_token": a_csrf})
    assert bob.get(f"/cases/{case_id}").status_code == 403
    assert bob.get(f"/cases/{case_id}/photos/probe/full").status_code == 403
    assert bob.post(f"/cases/{case_id}/decide", data={"csrf_token": b_csrf, "decision": "distinct"}).status_code == 403
    assert bob.post("/queue/next", data={"csrf_token": b_csrf}).headers["location"] == "/queue?empty=1"
    assert alice.post(f"/cases/{case_id}/release", data={"csrf_token": a_csrf}).status_code == 303
    assert bob.post("/queue/next", data={"csrf_token": b_csrf}).headers["location"] == f"/cases/{case_id}"
    # an expired lease: 409, and the case can be claimed again
    with site.conn() as conn:
        conn.execute("UPDATE cases SET lease_until = now() - interval '1 second' WHERE case_id = %s", (case_id,))
    assert bob.post(f"/cases/{case_id}/decide", data={"csrf_token": b_csrf, "decision": "recapture"}).status_code == 409
    site.clear_queue()


def test_control_pairs_look_like_cases_are_scored_and_change_nothing(site: Site, pg_server: object) -> None:
    import dataclasses

    from tests.support.web import Server

    site.clear_queue()
    known_dup, known_distinct = site.open_cases([("astronaut-2", "astronaut-1"), ("hopper-2", "astronaut-1")])
    sue, s_csrf = site.login("sue")
    for case_id, decision in ((known_dup, "duplicate"), (known_distinct, "distinct")):
        assert sue.post("/queue/next", data={"csrf_token": s_csrf}).headers["location"] == f"/cases/{case_id}"
        data = {"csrf_token": s_csrf, "decision": decision, "candidate": "1" if decision == "duplicate" else ""}
        assert sue.post(f"/cases/{case_id}/decide", data=data).status_code == 303
    for case_id in (known_dup, known_distinct):
        assert sue.post("/supervisor/controls", data={"csrf_token": s_csrf, "case_id": str(case_id)}).status_code == 303
    assert sue.post("/supervisor/controls", data={"csrf_token": s_csrf, "case_id": str(known_dup)}).status_code == 409
    controls_page = sue.get("/supervisor/controls").text
    assert controls_page.count("<td>duplicate</td>") == 1 and controls_page.count("<td>distinct</td>") == 1

    # every claim is a control while real cases wait (control_rate 1)
    server = Server(dataclasses.replace(site.dep, settings=site.dep.settings.replace("web", control_rate=1.0)))
    try:
        [real] = site.open_cases([("hopper-2", "hopper-1")])
        with site.conn() as conn:
            before = conn.execute("SELECT count(*) AS n FROM uins").fetchone()["n"]
        answers = {}
        for name, wrong in (("alice", False), ("bob", True)):
            c, csrf = site.login(name, server.url)
            seen = []
            for _ in range(2):
                loc = c.post("/queue/next", data={"csrf_token": csrf}).headers["location"]
                case_id = int(loc.rsplit("/", 1)[1])
                assert case_id not in (known_dup, known_distinct, real)  # a number of its own, from the cases' numbers
                page = c.get(loc).text
                assert "Candidate 1" in page and "Record decision" in page and "control" not in page.lower()
                assert c.get(f"{loc}/photos/probe/full").status_code == 200
                assert c.get(f"{loc}/photos/1/crop").status_code == 200
                is_dup = c.get(f"{loc}/photos/1/full").content == site.photos["astronaut-1"] and \
                    c.get(f"{loc}/photos/probe/full").content == site.photos["astronaut-2"]
                right = "duplicate" if is_dup else "distinct"
                decision = ("distinct" if right == "duplicate" else "duplicate") if wrong else right
                data = {"csrf_token": csrf, "decision": decision, "candidate": "1" if decision == "duplicate" else ""}
                assert c.post(f"{loc}/decide", data=data).status_code == 303
                seen.append(case_id)
            answers[name] = seen
            # both pairs seen: the next claim is the real case
            assert c.post("/queue/next", data={"csrf_token": csrf}).headers["location"] == f"/cases/{real}"
            assert c.post(f"/cases/{real}/release", data={"csrf_token": csrf}).status_code == 303
        with site.conn() as conn:
            assert conn.execute("SELECT count(*) AS n FROM uins").fetchone()["n"] == before  # nothing issued
            rows = conn.execute("SELECT claimed_by, correct FROM control_cases WHERE status = 'decided'").fetchall()
            assert sorted((r["claimed_by"], r["correct"]) for r in rows) == [("alice", True), ("alice", True), ("bob", False), ("bob", False)]
        stats = sue.get("/supervisor").text
        assert re.search(r'data-name="alice">.*?2 of 2.*?100%.*?0% of 2', stats, re.S), stats
        assert re.search(r'data-name="bob">.*?0 of 2.*?0%', stats, re.S)
        assert re.search(r'data-name="sue"><td>sue</td><td>\d+</td><td>1</td><td>1</td>', stats)  # 1 duplicate, 1 distinct
    finally:
        server.stop()
        site.clear_queue()


def test_audit_log_is_searchable(site: Site) -> None:
    sue, _ = site.login("sue")
    page = sue.get("/supervisor/audit", params={"actor": "alice", "action": "case.de"})
    assert page.status_code == 200
    rows = re.findall(r"<tr><td>\d+</td>", page.text)
    assert rows and "case.decide" in page.text and "case.claim" not in page.text
    assert "login.failed" in sue.get("/supervisor/audit", params={"action": "login", "object_id": "bob"}).text
    assert sue.get("/supervisor/audit", params={"text": "same ears"}).text.count("case.decide") == 1
    assert sue.get("/supervisor/audit", params={"since": "not a date"}).status_code == 400
    none = sue.get("/supervisor/audit", params={"until": "2000-01-01"})
    assert "0 entries" in none.text


def _count(html: str, element: str) -> int:
    m = re.search(rf'id="{element}">(\d+)<', html)
    assert m, f"no #{element} on the page"
    return int(m.group(1))


def test_store_user_lookup_still_works_for_cli(site: Site) -> None:
    # the web's columns (password hash, lock-out) leave the CLI's view of users as it was
    with site.conn() as conn:
        assert authenticate(conn, "alice").role == "adjudicator"
