"""Attacks on logging in, through real HTTP against a running server on the real PostgreSQL:
parallel password guesses released together, guessing across accounts from one address,
lock-out as a weapon (strangers from several addresses cannot keep the owner out, and their
guesses stay bounded), and NUL bytes in names, ids and filters.

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


def _guess_from(site: Site, addresses: list[str], name: str, total: int) -> list[int]:
    """``total`` wrong passwords for ``name``, shared out over ``addresses``, one thread per address."""
    answers: list[int] = []

    def run(k: int) -> None:
        client = _client(site, addresses[k])
        for i in range(k, total, len(addresses)):
            answers.append(_attempt(client, name, f"wrong guess {i}").status_code)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(addresses))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return answers


def test_strangers_cannot_lock_the_owner_out_and_their_guesses_stay_bounded(guarded: Site) -> None:
    with guarded.conn() as conn:
        conn.execute("UPDATE web_accounts SET locked_until = NULL, failed_logins = 0, locks = 0 WHERE user_name = 'bob'")
        conn.execute("DELETE FROM login_pairs WHERE user_name = 'bob'")
    home, desk = _client(guarded, "127.0.5.1"), _client(guarded, "127.0.5.2")
    assert _attempt(home, "bob", PASSWORD).status_code == 303  # bob's own addresses: he has logged in from them
    assert _attempt(desk, "bob", PASSWORD).status_code == 303
    before = len(_audit(guarded, "bob"))
    # (a) an attacker from 3 addresses sends 20 wrong passwords for bob
    answers = _guess_from(guarded, ["127.0.6.1", "127.0.6.2", "127.0.6.3"], "bob", 20)
    assert answers == [401] * 20
    # bob, from his own address, still logs in with the right password
    assert _attempt(home, "bob", PASSWORD).status_code == 303
    # (b) the attacker's guesses were bounded: 5 passwords compared (web.lockout_attempts), the other 15 met the lock
    attack = [r for r in _audit(guarded, "bob")[before:] if r["detail"].get("address", "").startswith("127.0.6.")]
    whys = [r["detail"]["why"] for r in attack if r["action"] == "login.failed"]
    assert len(whys) == 20 and whys.count("wrong password") == 5 and whys.count("account locked") == 15
    locks = [r["detail"] for r in attack if r["action"] == "login.locked"]
    assert [{k: v for k, v in d.items() if k != "address"} for d in locks] == \
        [{"attempts": 5, "seconds": 900, "scope": "unknown addresses", "locks_in_a_row": 1}]
    # an address bob has never used gets no password check while the account is locked (fail closed), not even the right one
    r = _attempt(_client(guarded, "127.0.6.9"), "bob", PASSWORD)
    assert r.status_code == 401 and "dedup_session" not in r.headers.get("set-cookie", "")
    assert _audit(guarded, "bob")[-1]["detail"] == {"why": "account locked", "address": "127.0.6.9"}
    # the attacker waits out the lock and comes back: 5 more checks at most, and the next lock lasts twice as long
    with guarded.conn() as conn:
        conn.execute("UPDATE web_accounts SET locked_until = now() - interval '1 second' WHERE user_name = 'bob'")
    before = len(_audit(guarded, "bob"))
    assert _guess_from(guarded, ["127.0.7.1", "127.0.7.2", "127.0.7.3"], "bob", 9) == [401] * 9
    again = _audit(guarded, "bob")[before:]
    assert [r["detail"]["why"] for r in again if r["action"] == "login.failed"].count("wrong password") == 5
    assert [(r["detail"]["seconds"], r["detail"]["locks_in_a_row"]) for r in again if r["action"] == "login.locked"] == [(1800, 2)]
    with guarded.conn() as conn:
        left = conn.execute("SELECT extract(epoch FROM locked_until - now()) AS s FROM web_accounts WHERE user_name = 'bob'").fetchone()
        assert 1700 < left["s"] <= 1800
    # bob's own addresses were never locked: both still work
    assert _attempt(desk, "bob", PASSWORD).status_code == 303
    assert _attempt(home, "bob", PASSWORD).status_code == 303


def test_guessing_from_the_owners_own_address_locks_that_address_only(guarded: Site) -> None:
    with guarded.conn() as conn:
        conn.execute("UPDATE web_accounts SET locked_until = NULL, failed_logins = 0, locks = 0 WHERE user_name = 'sue'")
        conn.execute("DELETE FROM login_pairs WHERE user_name = 'sue'")
    shared, other = _client(guarded, "127.0.8.1"), _client(guarded, "127.0.8.2")
    assert _attempt(shared, "sue", PASSWORD).status_code == 303
    assert _attempt(other, "sue", PASSWORD).status_code == 303
    # someone at sue's own address (a shared office) guesses: that pair locks after 5 (web.lockout_attempts)
    for i in range(6):
        assert _attempt(shared, "sue", f"wrong guess {i}").status_code == 401
    r = _attempt(shared, "sue", PASSWORD)
    assert r.status_code == 401
    rows = _audit(guarded, "sue")
    assert [r["detail"]["why"] for r in rows if r["action"] == "login.failed"][-7:] == ["wrong password"] * 5 + \
        ["locked for this address"] * 2
    assert [r["detail"]["scope"] for r in rows if r["action"] == "login.locked"] == ["address"]
    with guarded.conn() as conn:  # the account's lane for unknown addresses was not touched
        assert conn.execute("SELECT failed_logins, locked_until FROM web_accounts WHERE user_name = 'sue'").fetchone() == \
            {"failed_logins": 0, "locked_until": None}
    # her other address, and a new one, still log in
    assert _attempt(other, "sue", PASSWORD).status_code == 303
    assert _attempt(_client(guarded, "127.0.8.3"), "sue", PASSWORD).status_code == 303
