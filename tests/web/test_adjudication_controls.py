"""Control pairs cannot be told from real cases (issue 12, Broken 4), over real HTTP.

An adjudicator who could recognise a control would answer it carefully and the rest
carelessly, and their measured accuracy would mean nothing. So a control claim moves the
queue's counters as a real claim does, a control shows as many candidates as a real case
(its source case's), carries a case number from among the real ones, and every answer it
gives (pages, errors, conflicts, their status codes and words) is a real case's answer
with only the case number changed.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dedup.store import cases as store_cases
from dedup.store.auth import set_password
from dedup.store.users import add_user, authenticate
from tests.support.web import PASSWORD, Server, Site

MINUTE = 60


def _make_pair(site: Site, case_id: int, decision: str) -> None:
    """The supervisor decides ``case_id`` and makes it a control pair."""
    sue, s_csrf = site.login("sue")
    with site.conn() as conn:
        conn.execute("UPDATE cases SET claimed_by = 'sue', lease_until = now() + interval '1 hour' WHERE case_id = %s", (case_id,))
    data = {"csrf_token": s_csrf, "decision": decision, "candidate": "1" if decision == "duplicate" else ""}
    assert sue.post(f"/cases/{case_id}/decide", data=data).status_code == 303
    assert sue.post("/supervisor/controls", data={"csrf_token": s_csrf, "case_id": str(case_id)}).status_code == 303


@pytest.fixture(scope="module")
def world(site: Site) -> Iterator[dict[str, Any]]:
    """A control pair from a case with two candidates (a real and a synthetic one), three more
    adjudicators, and a second server on the same deployment at control_rate 1."""
    site.clear_queue()
    with site.conn() as conn:
        admin = authenticate(conn, "root")
        for name in ("carol", "dave", "erin"):
            add_user(conn, admin, name, "adjudicator")
            set_password(conn, admin, name, PASSWORD)
    [two] = site.open_cases([("astronaut-2", "astronaut-1")], synthetic=True)
    _make_pair(site, two, "duplicate")
    controls = Server(dataclasses.replace(site.dep, settings=site.dep.settings.replace("web", control_rate=1.0)))
    try:
        yield {"two": two, "controls_url": controls.url}
    finally:
        controls.stop()
        site.clear_queue()


def _counters(client: httpx.Client) -> tuple[int, int, str]:
    page = client.get("/queue").text
    found = {k: re.search(rf'id="{k}">([^<]*)<', page) for k in ("waiting", "held", "oldest")}
    assert all(found.values()), page
    return int(found["waiting"].group(1)), int(found["held"].group(1)), found["oldest"].group(1)  # type: ignore[union-attr]


def _claim(client: httpx.Client, csrf: str) -> int:
    r = client.post("/queue/next", data={"csrf_token": csrf})
    assert r.status_code == 303, r.text
    return int(r.headers["location"].rsplit("/", 1)[1])


def _is_control(site: Site, case_id: int) -> bool:
    with site.conn() as conn:
        return conn.execute("SELECT 1 FROM control_cases WHERE case_id = %s", (case_id,)).fetchone() is not None


def _open_spaced(site: Site, n: int, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """``n`` real cases with two candidates each, opened 10, 20, ... minutes ago (oldest first);
    a case number is set aside after each one (so a control's number can be checked)."""
    monkeypatch.setattr(store_cases, "RESERVE_SHARE", 1.0)
    ids = site.open_cases([("astronaut-2", "astronaut-1")] * n, synthetic=True)
    with site.conn() as conn:
        for i, case_id in enumerate(ids):
            conn.execute("UPDATE cases SET opened_at = now() - make_interval(mins => %s) WHERE case_id = %s", (10 * (n - i), case_id))
    return ids


def _minutes(text: str) -> int:
    m = re.fullmatch(r"(\d+) min", text)
    assert m, text
    return int(m.group(1))


def test_a_control_claim_moves_the_counters_as_a_real_claim_does(site: Site, world: dict[str, Any],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    site.clear_queue()
    real_ids = _open_spaced(site, 4, monkeypatch)  # 40, 30, 20, 10 minutes old
    watcher, _ = site.login("carol")
    before = _counters(watcher)
    assert before[:2] == (4, 0) and abs(_minutes(before[2]) - 40) <= 1

    bob, b_csrf = site.login("bob", world["controls_url"])
    control = _claim(bob, b_csrf)
    assert _is_control(site, control)
    after_control = _counters(watcher)
    alice, a_csrf = site.login("alice")
    real = _claim(alice, a_csrf)
    assert not _is_control(site, real) and real == real_ids[0]
    after_real = _counters(watcher)

    # each claim: one fewer waiting, one more being worked on, the oldest waiting is the next in line
    assert (before[0] - after_control[0], after_control[1] - before[1]) == (1, 1)
    assert (after_control[0] - after_real[0], after_real[1] - after_control[1]) == (1, 1)
    assert abs(_minutes(after_control[2]) - 30) <= 1 and abs(_minutes(after_real[2]) - 20) <= 1
    # the holder's own queue page points back to their case in both cases
    assert f'href="/cases/{control}"' in bob.get("/queue").text and f'href="/cases/{real}"' in alice.get("/queue").text
    # numbered from among the real cases waiting, not the newest number of all
    assert min(real_ids) < control < max(real_ids)
    # giving them back moves the counters back alike
    for client, csrf, case_id in ((bob, b_csrf, control), (alice, a_csrf, real)):
        assert client.post(f"/cases/{case_id}/release", data={"csrf_token": csrf}).status_code == 303
    assert _counters(watcher)[:2] == (4, 0)


def _normalise(text: str, case_id: int) -> str:
    """A response body with what legitimately differs between two cases taken out: the case
    number, the CSRF token, times and scores (digits)."""
    text = text.replace(f"/cases/{case_id}", "/cases/N").replace(f"case {case_id}", "case N").replace(f"Case {case_id}", "Case N")
    text = re.sub(r'name="csrf_token" value="[^"]*"', 'name="csrf_token" value=""', text)
    return re.sub(r"\d[\d,.]*", "0", text)


def _answers(client: httpx.Client, csrf: str, case_id: int) -> list[tuple[str, int, str]]:
    """What ``client`` is told for every request on a case: (request, status, normalised body)."""
    got = []
    for path in ("", "/photos/probe/full", "/photos/1/crop", "/photos/2/full", "/photos/9/full"):
        r = client.get(f"/cases/{case_id}{path}")
        got.append((f"GET {path or '/'}", r.status_code, _normalise(r.text, case_id)))
    for data in ({"decision": "distinct"}, {"decision": "duplicate", "candidate": "2"}, {"decision": "recapture"}):
        r = client.post(f"/cases/{case_id}/decide", data={"csrf_token": csrf, **data})
        got.append((f"decide {data}", r.status_code, _normalise(r.text, case_id)))
    r = client.post(f"/cases/{case_id}/release", data={"csrf_token": csrf})
    got.append(("release", r.status_code, _normalise(r.text, case_id)))
    return got


def test_every_answer_about_a_control_is_a_real_cases_answer(site: Site, world: dict[str, Any],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    site.clear_queue()
    _open_spaced(site, 3, monkeypatch)
    bob, b_csrf = site.login("dave", world["controls_url"])  # dave has not seen the pair
    alice, a_csrf = site.login("alice")
    control, real = _claim(bob, b_csrf), _claim(alice, a_csrf)
    assert _is_control(site, control) and not _is_control(site, real)
    carol, c_csrf = site.login("carol")

    # someone else asking: the same refusals, codes and words (and so for a case number that does not exist)
    on_control, on_real, on_nothing = _answers(carol, c_csrf, control), _answers(carol, c_csrf, real), _answers(carol, c_csrf, 987654)
    assert on_control == on_real == on_nothing
    assert {status for _, status, _ in on_real} == {403}
    assert all("dave" not in body and "alice" not in body for _, _, body in on_control + on_real)

    # the holder's case pages: the same page with two candidates, the same answers to a candidate that is not there
    page_c, page_r = bob.get(f"/cases/{control}"), alice.get(f"/cases/{real}")
    assert page_c.status_code == page_r.status_code == 200
    assert _normalise(page_c.text.replace("dave", "X"), control) == _normalise(page_r.text.replace("alice", "X"), real)
    assert page_c.text.count('class="pair"') == 2
    for client, case_id in ((bob, control), (alice, real)):
        assert client.get(f"/cases/{case_id}/photos/1/full").status_code == 200
    missing = [(c.get(f"/cases/{n}/photos/9/full"), n) for c, n in ((bob, control), (alice, real))]
    assert {r.status_code for r, _ in missing} == {404} and len({_normalise(r.text, n) for r, n in missing}) == 1
    bad = [(c.post(f"/cases/{n}/decide", data={"csrf_token": t, "decision": "duplicate", "candidate": "9"}), n)
           for c, t, n in ((bob, b_csrf, control), (alice, a_csrf, real))]
    assert {r.status_code for r, _ in bad} == {400} and len({_normalise(r.text, n) for r, n in bad}) == 1

    # a lease that ran out: the same conflict, with the time, for both
    with site.conn() as conn:
        conn.execute("UPDATE control_cases SET lease_until = now() - interval '1 minute' WHERE case_id = %s", (control,))
        conn.execute("UPDATE cases SET lease_until = now() - interval '1 minute' WHERE case_id = %s", (real,))
    expired = [(c.post(f"/cases/{n}/decide", data={"csrf_token": t, "decision": "distinct"}), n)
               for c, t, n in ((bob, b_csrf, control), (alice, a_csrf, real))]
    assert {r.status_code for r, _ in expired} == {409} and len({_normalise(r.text, n) for r, n in expired}) == 1
    assert re.search(r"expired at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", expired[0][0].text)
    with site.conn() as conn:  # alice's real case went back to the queue; give both leases back
        conn.execute("UPDATE control_cases SET lease_until = now() + interval '1 hour' WHERE case_id = %s", (control,))
        conn.execute("UPDATE cases SET lease_until = now() + interval '1 hour' WHERE case_id = %s", (real,))

    # decided (duplicate of candidate 1): the same decided page; deciding again otherwise, the same conflict
    for client, csrf, case_id in ((bob, b_csrf, control), (alice, a_csrf, real)):
        r = client.post(f"/cases/{case_id}/decide", data={"csrf_token": csrf, "decision": "duplicate", "candidate": "1"})
        assert r.status_code == 303 and r.headers["location"] == f"/cases/{case_id}"
    done_c, done_r = bob.get(f"/cases/{control}"), alice.get(f"/cases/{real}")
    assert _normalise(done_c.text.replace("dave", "X"), control) == _normalise(done_r.text.replace("alice", "X"), real)
    assert "Duplicate of candidate 1" in done_c.text
    again = [(c.post(f"/cases/{n}/decide", data={"csrf_token": t, "decision": "distinct"}), n)
             for c, t, n in ((bob, b_csrf, control), (alice, a_csrf, real))]
    assert {r.status_code for r, _ in again} == {409} and len({_normalise(r.text, n) for r, n in again}) == 1
    assert "by you at" in again[0][0].text
    # and to anyone else a decided control is what a decided real case is: not theirs
    assert _answers(carol, c_csrf, control) == _answers(carol, c_csrf, real) == on_nothing


def test_a_control_shows_its_source_cases_candidates_and_is_scored_on_the_identity(site: Site, world: dict[str, Any]) -> None:
    site.clear_queue()
    [one] = site.open_cases([("hopper-2", "hopper-1")])  # a second source, with one candidate
    _make_pair(site, one, "distinct")
    [waiting] = site.open_cases([("astronaut-2", "astronaut-1")])  # controls are served only while real cases wait
    shown = {}
    for name in ("alice", "erin"):  # neither has seen a pair
        client, csrf = site.login(name, world["controls_url"])
        for _ in range(2):
            case_id = _claim(client, csrf)
            assert _is_control(site, case_id)
            with site.conn() as conn:
                source = conn.execute("""SELECT p.source_case, p.truth FROM control_cases k JOIN control_pairs p USING (pair_id)
                                         WHERE k.case_id = %s""", (case_id,)).fetchone()
            page = client.get(f"/cases/{case_id}").text
            shown[source["source_case"]] = page.count('class="pair"')
            # alice answers right; erin says "distinct" to the duplicate and "recapture" to the distinct one
            if name == "alice":
                answer = {"decision": "duplicate", "candidate": "1"} if source["truth"] == "duplicate" else {"decision": "distinct"}
            else:
                answer = {"decision": "distinct"} if source["truth"] == "duplicate" else {"decision": "recapture"}
            assert client.post(f"/cases/{case_id}/decide", data={"csrf_token": csrf, **answer}).status_code == 303
        assert _claim(client, csrf) == waiting  # both pairs seen: the real case
        assert client.post(f"/cases/{waiting}/release", data={"csrf_token": csrf}).status_code == 303
    # as many candidates as the real case each pair came from
    assert shown == {world["two"]: 2, one: 1}
    with site.conn() as conn:
        scored = conn.execute("SELECT claimed_by, correct, duplicate_of FROM control_cases WHERE status = 'decided'"
                              " AND claimed_by IN ('alice', 'erin')").fetchall()
        truth = conn.execute("SELECT duplicate_of FROM cases WHERE case_id = %s", (world["two"],)).fetchone()["duplicate_of"]
    assert sorted((r["claimed_by"], r["correct"]) for r in scored) == [("alice", True), ("alice", True), ("erin", False), ("erin", False)]
    assert truth is not None and [r["duplicate_of"] for r in scored if r["duplicate_of"]] == [truth]
