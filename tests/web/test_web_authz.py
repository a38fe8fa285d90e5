"""The authorization matrix: every route x (no session, each role, another adjudicator's claim,
a missing CSRF token) gets the right status, and no denied response leaks a photo, a UIN,
an enrolment id or a photo's hash."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.web import Site

OK = (200, 201, 303)


@pytest.fixture(scope="module")
def world(site: Site) -> dict[str, Any]:
    """Case A held by alice (bob holds none), a decided case D, a control pair, a batch of each centre."""
    site.clear_queue()
    a, d = site.open_cases([("astronaut-2", "astronaut-1"), ("hopper-2", "hopper-1")])
    sessions = {name: site.login(name) for name in ("alice", "bob", "sue", "root")}
    sue, s_csrf = sessions["sue"]
    assert sue.post("/queue/next", data={"csrf_token": s_csrf}).headers["location"] == f"/cases/{a}"
    assert sue.post(f"/cases/{a}/release", data={"csrf_token": s_csrf}).status_code == 303
    alice, a_csrf = sessions["alice"]
    assert alice.post("/queue/next", data={"csrf_token": a_csrf}).headers["location"] == f"/cases/{a}"
    # D: decided by the supervisor, then made a control pair
    with site.conn() as conn:
        conn.execute("UPDATE cases SET claimed_by = 'sue', lease_until = now() + interval '1 hour' WHERE case_id = %s", (d,))
    assert sue.post(f"/cases/{d}/decide", data={"csrf_token": s_csrf, "decision": "distinct"}).status_code == 303
    assert sue.post("/supervisor/controls", data={"csrf_token": s_csrf, "case_id": str(d)}).status_code == 303
    with site.conn() as conn:
        pair = conn.execute("SELECT pair_id FROM control_pairs").fetchone()["pair_id"]
        secrets = [r["v"] for r in conn.execute(
            """SELECT e.enrolment_id AS v FROM enrolments e UNION SELECT uin FROM uins
               UNION SELECT photo_sha256 FROM enrolments""")]
    batch_c1 = _submit(site, "C1", "M1", "cat")
    return {"a": a, "d": d, "pair": pair, "sessions": sessions, "secrets": secrets, "batch_c1": batch_c1}


def _submit(site: Site, centre: str, enrolment: str, photo: str) -> str:
    from tests.support.web import manifest_bytes

    body = manifest_bytes([(enrolment, centre, site.photos[photo])])
    r = site.client().post("/api/v1/batches", content=body, headers={
        "Authorization": f"Bearer {site.tokens[centre]}", "Content-Type": "application/vnd.apache.parquet"})
    assert r.status_code == 201, r.text
    return str(r.json()["batch_id"])


# route -> expected status per subject: none, alice (holds A), bob (another adjudicator), sue, root (admin)
PAGES: list[tuple[str, str, dict[str, int]]] = [
    ("GET", "/", {"none": 401, "alice": 303, "bob": 303, "sue": 303, "root": 303}),
    ("GET", "/queue", {"none": 401, "alice": 200, "bob": 200, "sue": 200, "root": 200}),
    ("GET", "/cases/{a}", {"none": 401, "alice": 200, "bob": 403, "sue": 200, "root": 403}),
    ("GET", "/cases/{a}/photos/probe/full", {"none": 401, "alice": 200, "bob": 403, "sue": 200, "root": 403}),
    ("GET", "/cases/{a}/photos/1/crop", {"none": 401, "alice": 200, "bob": 403, "sue": 200, "root": 403}),
    ("GET", "/cases/{d}", {"none": 401, "alice": 403, "bob": 403, "sue": 200, "root": 403}),
    ("GET", "/cases/{d}/photos/probe/full", {"none": 401, "alice": 403, "bob": 403, "sue": 200, "root": 403}),
    ("GET", "/cases/999999", {"none": 401, "alice": 403, "bob": 403, "sue": 404, "root": 403}),  # one answer for "not yours"
    ("GET", "/supervisor", {"none": 401, "alice": 403, "bob": 403, "sue": 200, "root": 200}),
    ("GET", "/supervisor/controls", {"none": 401, "alice": 403, "bob": 403, "sue": 200, "root": 403}),
    ("GET", "/supervisor/audit", {"none": 401, "alice": 403, "bob": 403, "sue": 200, "root": 200}),
    ("GET", "/supervisor/accuracy", {"none": 401, "alice": 403, "bob": 403, "sue": 200, "root": 200}),
]
# form posts, with the session's CSRF token; each is also tried without it (403)
FORMS: list[tuple[str, dict[str, str], dict[str, int]]] = [
    ("/cases/{a}/decide", {"decision": "nonsense"}, {"none": 401, "alice": 400, "bob": 403, "sue": 403, "root": 403}),
    ("/cases/{a}/decide", {"decision": "recapture"}, {"none": 401, "bob": 403, "root": 403}),
    ("/cases/{a}/release", {}, {"none": 401, "bob": 403, "root": 403}),
    ("/cases/{d}/decide", {"decision": "recapture"}, {"none": 401, "alice": 403, "bob": 403, "sue": 409, "root": 403}),
    ("/cases/{d}/release", {}, {"none": 401, "alice": 403, "bob": 403, "sue": 409, "root": 403}),
    ("/queue/next", {}, {"none": 401, "root": 403}),
    ("/supervisor/controls", {"case_id": "{d}"}, {"none": 401, "alice": 403, "bob": 403, "sue": 409, "root": 403}),
    ("/supervisor/controls/{pair}/active", {"active": "1"}, {"none": 401, "alice": 403, "bob": 403, "root": 403}),
]


def _fill(text: str, world: dict[str, Any]) -> str:
    return text.format(a=world["a"], d=world["d"], pair=world["pair"])


def _client(site: Site, world: dict[str, Any], who: str) -> tuple[httpx.Client, str]:
    if who == "none":
        return site.client(), ""
    client, csrf = world["sessions"][who]
    return client, csrf


def _no_leak(r: httpx.Response, world: dict[str, Any]) -> None:
    assert not r.headers.get("content-type", "").startswith("image/"), "a denied request got a photo"
    assert "no-store" in r.headers.get("cache-control", "")
    for secret in world["secrets"]:
        assert secret not in r.text, f"a denied response shows {secret!r}"
    assert "Traceback" not in r.text


def test_pages_by_subject(site: Site, world: dict[str, Any]) -> None:
    failures = []
    for method, route, expected in PAGES:
        for who, status in expected.items():
            client, _ = _client(site, world, who)
            r = client.request(method, _fill(route, world))
            if r.status_code != status:
                failures.append(f"{who} {method} {route}: {r.status_code}, expected {status}")
            if r.status_code >= 400:
                _no_leak(r, world)
    assert not failures, "\n".join(failures)


def test_forms_by_subject_and_without_csrf(site: Site, world: dict[str, Any]) -> None:
    failures = []
    for route, data, expected in FORMS:
        path = _fill(route, world)
        filled = {k: _fill(v, world) for k, v in data.items()}
        for who, status in expected.items():
            client, csrf = _client(site, world, who)
            if who != "none":  # without the token first: refused whatever the role
                r = client.post(path, data=filled)
                if r.status_code != 403:
                    failures.append(f"{who} POST {route} without CSRF: {r.status_code}, expected 403")
                _no_leak(r, world)
            r = client.post(path, data={**filled, "csrf_token": csrf})
            if r.status_code != status:
                failures.append(f"{who} POST {route}: {r.status_code}, expected {status}")
            if r.status_code >= 400:
                _no_leak(r, world)
    assert not failures, "\n".join(failures)
    # a wrong (not just missing) token, and another user's token, are refused too
    alice, _ = world["sessions"]["alice"]
    _, bob_csrf = world["sessions"]["bob"]
    assert alice.post(_fill("/cases/{a}/release", world), data={"csrf_token": bob_csrf}).status_code == 403
    assert alice.post("/logout", data={}).status_code == 403


def test_the_api_by_subject(site: Site, world: dict[str, Any]) -> None:
    batch = world["batch_c1"]
    routes = [("GET", f"/api/v1/batches/{batch}"), ("GET", f"/api/v1/batches/{batch}/outcomes"), ("GET", "/api/v1/enrolments/M1")]
    c1 = {"Authorization": f"Bearer {site.tokens['C1']}"}
    c2 = {"Authorization": f"Bearer {site.tokens['C2']}"}
    forged = {"Authorization": f"Bearer {site.tokens['C1'][:-4]}AAAA"}
    alice, _ = world["sessions"]["alice"]
    for method, path in routes:
        assert site.client().request(method, path).status_code == 401
        assert site.client().request(method, path, headers=forged).status_code == 401
        assert alice.request(method, path).status_code == 401  # a web session is no API token
        assert site.client().request(method, path, headers=c1).status_code == 200
        other = site.client().request(method, path, headers=c2)
        assert other.status_code in (403, 404) and "M1" not in other.text.replace("'M1'", "")
        assert other.json()["error"] in ("forbidden", "not_found")
    r = site.client().post("/api/v1/batches", content=b"x", headers={"Content-Type": "application/vnd.apache.parquet"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    # a centre's token submits for its own centre only: another centre's rows are rejected row by row
    from tests.support.web import manifest_bytes

    body = manifest_bytes([("X1", "C1", site.photos["cat"])])
    r = site.client().post("/api/v1/batches", content=body, headers={**c2, "Content-Type": "application/vnd.apache.parquet"})
    assert r.status_code == 201 and r.json()["items"][0]["reason"] == "centre_not_permitted"
