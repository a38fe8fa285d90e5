"""Attacks on logging in, through real HTTP against a running server on the real PostgreSQL:
parallel password guesses released together, guessing across accounts from one address, and
NUL bytes in names, ids and filters.

Clients bind to different loopback addresses (127.0.x.y) so that the server sees several
client addresses, as it would see several machines."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.web import PASSWORD, Site, _hidden, served_site

GUESSERS = 12


@pytest.fixture(scope="module")
def guarded(pg_server: Any, photos: dict[str, bytes]) -> Iterator[Site]:
    """A site whose per-address throttle is small enough to reach in a test."""
    with served_site(pg_server, photos, web={"throttle_free_failures": 2, "throttle_max_failures": 8,
                                             "throttle_max_delay": 1.0}) as s:
        yield s


def _client(site: Site, address: str) -> httpx.Client:
    """A client of the site whose requests come from ``address``."""
    return site.client(transport=httpx.HTTPTransport(local_address=address))


def _attempt(client: httpx.Client, name: str, password: str) -> httpx.Response:
    token = _hidden(client.get("/login").text, "csrf_token")
    return client.post("/login", data={"username": name, "password": password, "csrf_token": token})


def _audit(site: Site, name: str) -> list[dict[str, Any]]:
    with site.conn() as conn:
        return conn.execute("SELECT action, detail FROM audit WHERE object_id = %s AND action LIKE 'login%%' ORDER BY audit_id",
                            (name,)).fetchall()


def test_parallel_guesses_are_each_counted_and_only_the_allowed_few_are_checked(guarded: Site) -> None:
    # Each guesser has its own address (a botnet), so the per-address throttle does not hide the account's count.
    clients = [_client(guarded, f"127.0.1.{i + 1}") for i in range(GUESSERS)]
    tokens = [_hidden(c.get("/login").text, "csrf_token") for c in clients]
    barrier = threading.Barrier(GUESSERS)
    answers: list[int] = []

    def guess(i: int) -> None:
        barrier.wait()
        r = clients[i].post("/login", data={"username": "bob", "password": f"wrong guess {i}", "csrf_token": tokens[i]})
        answers.append(r.status_code)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(GUESSERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert answers == [401] * GUESSERS
    # the right password, sent last from a fresh address, is refused: the account locked after 5 (web.lockout_attempts)
    r = _attempt(_client(guarded, "127.0.2.1"), "bob", PASSWORD)
    assert r.status_code == 401 and "dedup_session" not in r.headers.get("set-cookie", "")
    rows = _audit(guarded, "bob")
    whys = [row["detail"].get("why") for row in rows if row["action"] == "login.failed"]
    assert len(whys) == GUESSERS + 1  # every guess counted and audited
    assert whys.count("wrong password") == 5  # only 5 passwords were ever compared; the rest met the lock
    assert [row["action"] for row in rows].count("login.locked") == 1
    with guarded.conn() as conn:
        conn.execute("UPDATE web_accounts SET locked_until = NULL, failed_logins = 0 WHERE user_name = 'bob'")


def test_one_address_guessing_across_accounts_is_slowed_then_refused(guarded: Site) -> None:
    attacker = _client(guarded, "127.0.3.1")
    names = ["sue", "root", "alice", "nobody"]
    took = []
    for i in range(8):  # web.throttle_max_failures, spread so that no account reaches its own lock-out
        start = time.monotonic()
        assert _attempt(attacker, names[i % 4], f"guess {i}").status_code == 401
        took.append(time.monotonic() - start)
    # past the 2 free failures every attempt waits, doubling from 0.25 s up to 1 s (web.throttle_max_delay)
    assert all(t >= d for t, d in zip(took[2:], [0.25, 0.5, 1.0, 1.0, 1.0, 1.0]))
    before = len(_audit(guarded, "alice"))
    # now even the right password is refused from that address, before it is checked (no audit row, no count)
    r = _attempt(attacker, "alice", PASSWORD)
    assert r.status_code == 429 and "too many failed logins" in r.text and int(r.headers["retry-after"]) > 0
    assert len(_audit(guarded, "alice")) == before
    with guarded.conn() as conn:
        assert conn.execute("SELECT failed_logins FROM web_accounts WHERE user_name = 'alice'").fetchone()["failed_logins"] <= 2
    # the victim, from their own address, is not locked out
    assert _attempt(_client(guarded, "127.0.3.2"), "alice", PASSWORD).status_code == 303


def test_nul_bytes_in_names_ids_and_filters_are_bad_requests_not_a_database_outage(guarded: Site) -> None:
    client = _client(guarded, "127.0.4.1")
    r = _attempt(client, "ali\x00ce", PASSWORD)
    assert r.status_code == 401 and "wrong user name or password" in r.text
    api = guarded.client(headers={"Authorization": f"Bearer {guarded.tokens['C1']}"})
    for path in ("/api/v1/batches/b%00x", "/api/v1/batches/b%00x/outcomes", "/api/v1/enrolments/E%00"):
        r = api.get(path)
        assert r.status_code in (400, 404), (path, r.status_code, r.text)
        assert r.json()["error"] in ("bad_request", "not_found") and "database" not in r.json()["message"]
    assert api.get("/api/v1/batches/b00x").status_code == 404  # the token still works
    sue, _ = guarded.login("sue")
    for field in ("actor", "action", "object_id", "text"):
        r = sue.get("/supervisor/audit", params={field: "a\x00b"})
        assert r.status_code == 400 and "NUL" in r.text, (field, r.status_code)
    assert sue.get("/supervisor/audit", params={"actor": "sue"}).status_code == 200
