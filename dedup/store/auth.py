"""Who is asking, in the store: web passwords with lock-out, browser sessions, and centres' API tokens.

- Passwords are argon2id hashes (argon2-cffi). A login for an unknown user still verifies
  against a dummy hash, so timing does not tell which names exist. Failures are counted
  per (account, address) for the addresses the account has logged in from, and per account
  for all other addresses together; ``web.lockout_attempts`` failures in a row lock that
  count's lane for ``web.lockout_seconds`` (the account's lane doubling with each lock in a
  row), so strangers cannot lock the owner out of their own address and guesses stay bounded
  however many addresses send them (``check_login`` argues it). The counts are kept under a
  row lock, so parallel guesses are all counted. Every success, failure and lock is audited.
  (Per-address throttling is the web app's: ``dedup.web.limits``.)
- A session is a random id: the browser holds it in a signed cookie, the database only its
  SHA-256 with the session's CSRF token and expiry. Logging out, a password change and a
  disabled account end it.
- An API token is ``dk_<id>_<secret>``; the database keeps the secret's SHA-256 only. It acts
  as one centre user, so it reaches that centre's batches and no others.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from dedup.config import WebSettings
from dedup.errors import InvalidParameter, NotFound, Unauthenticated
from dedup.store import audit
from dedup.store.users import Actor, authorize

MIN_PASSWORD_LENGTH = 10
# Roles that use the web pages (centres use the JSON API with a token).
WEB_ROLES = frozenset({"adjudicator", "supervisor", "admin"})
LOGIN_FAILED = "wrong user name or password (or the account is locked for a while after repeated failures)"

_HASHER = PasswordHasher()
_DUMMY_HASH = _HASHER.hash("not a password of anyone: equalises the time of unknown-user logins")
_TOKEN = re.compile(r"^dk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")
# An address is the account's own (known) for this long after a login from it with the
# password; an account keeps this many at most, the most recent.
KNOWN_ADDRESS_DAYS = 90
MAX_KNOWN_ADDRESSES = 10
# Locks of an account in a row last twice the one before, up to 2**this times web.lockout_seconds.
MAX_LOCK_DOUBLINGS = 4


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- passwords


def set_password(conn: psycopg.Connection[Any], actor: Actor, name: str, password: str) -> None:
    """Set ``name``'s web password (an admin for anyone, a user for themselves); ends their sessions."""
    if actor.name != name:
        authorize(actor, "user.passwd")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidParameter(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > 1024:
        raise InvalidParameter("a password has at most 1024 characters")
    hashed = _HASHER.hash(password)
    with conn.transaction():
        if conn.execute("SELECT 1 FROM users WHERE name = %s", (name,)).fetchone() is None:
            raise NotFound(f"unknown user {name!r}")
        conn.execute(
            """INSERT INTO web_accounts (user_name, password_hash) VALUES (%s, %s)
               ON CONFLICT (user_name) DO UPDATE SET password_hash = excluded.password_hash, failed_logins = 0,
                                                     locked_until = NULL, locks = 0, changed_at = now()""",
            (name, hashed),
        )
        conn.execute("DELETE FROM web_sessions WHERE user_name = %s", (name,))
        conn.execute("DELETE FROM login_pairs WHERE user_name = %s", (name,))  # a new password: no address is known yet
        audit.record(conn, actor.name, "user.passwd", "user", name, {})


def check_login(conn: psycopg.Connection[Any], name: str, password: str, web: WebSettings, address: str) -> Actor:
    """The user, when ``name`` and ``password`` match an active, unlocked web account.

    Raises Unauthenticated with one message for every failure (unknown name, wrong
    password, locked, disabled, no password set), so the page tells an attacker nothing.

    Why the lock is kept per (account, address) for known addresses and per account for the
    rest: a lock per account lets anyone who can name a user lock them out; a lock per
    (account, address) alone lets a guesser with N addresses make N x ``web.lockout_attempts``
    guesses. So ``address`` (the client's) is looked up among the addresses this account has
    logged in from with its password (``login_pairs``, at most ``MAX_KNOWN_ADDRESSES``,
    for ``KNOWN_ADDRESS_DAYS``):

    - from a known address, attempts are counted and locked for that pair only, and the
      account's lock does not apply: strangers locking the account do not keep its owner out;
    - from every other address together, attempts share the account's one count: after
      ``web.lockout_attempts`` failures the account is locked to all unknown addresses, for
      ``web.lockout_seconds``, doubling with each lock in a row (up to
      ``2**MAX_LOCK_DOUBLINGS`` times), so a persistent guesser is slowed ever more.

    An attacker who does not know the password cannot make an address known, so across any
    number of addresses they get at most ``web.lockout_attempts`` password checks per lock
    period. Attempts are serialised by a lock on the row that counts them (the pair's, or the
    account's for unknown addresses), taken before the count and the lock are read, so
    parallel guesses are each counted. The price: under attack, the owner logging in from a
    new address waits for the lock like the attacker does (fail closed).
    """
    name = name.strip()[:64]
    if "\x00" in name:  # PostgreSQL text cannot hold NUL: no such user, answered like any other
        name = ""
    address = address.replace("\x00", "")[:100]
    failed: str | None = None
    actor: Actor | None = None
    checked = False  # whether the real hash was verified (else a dummy one is, after the lock is let go)
    with conn.transaction():
        conn.execute("SET LOCAL lock_timeout = '10s'")
        user = conn.execute("SELECT name, role, centre_id, active FROM users WHERE name = %s", (name,)).fetchone() if name else None
        # FOR UPDATE re-reads the row once the lock is ours: the count and lock of every attempt before this one.
        pair = conn.execute(
            """SELECT failed_logins, coalesce(locked_until > now(), false) AS locked FROM login_pairs
               WHERE user_name = %s AND address = %s AND last_login > now() - make_interval(days => %s) FOR UPDATE""",
            (name, address, KNOWN_ADDRESS_DAYS),
        ).fetchone() if user else None
        account = conn.execute(
            """SELECT password_hash, failed_logins, locks, coalesce(locked_until > now(), false) AS locked,
                      coalesce(locked_until > now() - make_interval(secs => %s), false) AS recently_locked
               FROM web_accounts WHERE user_name = %s""" + ("" if pair else " FOR UPDATE"),
            (web.lockout_seconds * 2 ** MAX_LOCK_DOUBLINGS, name),
        ).fetchone() if user else None
        locked = (pair or account or {}).get("locked", False)
        if user is None or account is None:
            failed = "unknown user" if user is None else "no password set"
        elif locked:
            failed = "locked for this address" if pair else "account locked"
        elif not (checked := True) or not _verify(account["password_hash"], password):
            failed = "wrong password"
            lock = _count_failure(conn, name, address, known=pair is not None, account=account, web=web)
            if lock:
                audit.record(conn, name, "login.locked", "user", name, lock)
        elif not user["active"]:
            failed = "account disabled"
        elif user["role"] not in WEB_ROLES:
            failed = f"role {user['role']} does not use the web pages"
        else:
            _count_success(conn, name, address, known=pair is not None)
            if _HASHER.check_needs_rehash(account["password_hash"]):
                conn.execute("UPDATE web_accounts SET password_hash = %s WHERE user_name = %s", (_HASHER.hash(password), name))
            actor = Actor(user["name"], user["role"], user["centre_id"])
        # The audit row names the account tried; only known names, so typed passwords
        # pasted into the name field do not land in the log.
        if user is not None:
            detail = {"address": address} if actor else {"why": failed, "address": address}
            audit.record(conn, name, "login" if actor else "login.failed", "user", name, detail)
    if not checked:
        _verify(_DUMMY_HASH, password)  # the same time as a real check, without holding the account's lock
    if actor is None:
        raise Unauthenticated(LOGIN_FAILED)
    return actor


def _count_failure(conn: psycopg.Connection[Any], name: str, address: str, *, known: bool, account: dict[str, Any],
                   web: WebSettings) -> dict[str, Any] | None:
    """Count a wrong password against the pair (known address) or the account (every other
    address); the audit detail of the lock when this failure locks it, else None."""
    if known:
        attempts = conn.execute(
            """UPDATE login_pairs SET failed_logins = failed_logins + 1 WHERE user_name = %s AND address = %s
               RETURNING failed_logins""", (name, address)).fetchone()["failed_logins"]  # type: ignore[index]
        if attempts < web.lockout_attempts:
            return None
        conn.execute(
            """UPDATE login_pairs SET failed_logins = 0, locked_until = now() + make_interval(secs => %s)
               WHERE user_name = %s AND address = %s""", (web.lockout_seconds, name, address))
        return {"attempts": attempts, "seconds": web.lockout_seconds, "scope": "address", "address": address}
    attempts = conn.execute(
        "UPDATE web_accounts SET failed_logins = failed_logins + 1 WHERE user_name = %s RETURNING failed_logins", (name,)
    ).fetchone()["failed_logins"]  # type: ignore[index]
    if attempts < web.lockout_attempts:
        return None
    # A lock soon after the last one ended is one more in a row: twice as long, up to the cap.
    locks = account["locks"] + 1 if account["recently_locked"] else 1
    seconds = web.lockout_seconds * 2 ** min(locks - 1, MAX_LOCK_DOUBLINGS)
    conn.execute(
        """UPDATE web_accounts SET failed_logins = 0, locks = %s, locked_until = now() + make_interval(secs => %s)
           WHERE user_name = %s""", (locks, seconds, name))
    return {"attempts": attempts, "seconds": seconds, "scope": "unknown addresses", "locks_in_a_row": locks, "address": address}


def _count_success(conn: psycopg.Connection[Any], name: str, address: str, *, known: bool) -> None:
    """Clear the count that this login went through, and remember ``address`` as the account's own."""
    if known:  # the account's count (strangers' guesses) stays: the owner's login does not reset it
        conn.execute("""UPDATE login_pairs SET failed_logins = 0, locked_until = NULL, last_login = now()
                        WHERE user_name = %s AND address = %s""", (name, address))
        return
    conn.execute("UPDATE web_accounts SET failed_logins = 0, locked_until = NULL, locks = 0 WHERE user_name = %s", (name,))
    conn.execute(
        """INSERT INTO login_pairs (user_name, address) VALUES (%s, %s)
           ON CONFLICT (user_name, address) DO UPDATE SET last_login = now(), failed_logins = 0, locked_until = NULL""",
        (name, address))
    conn.execute(
        """DELETE FROM login_pairs WHERE user_name = %s AND (last_login <= now() - make_interval(days => %s) OR address NOT IN
             (SELECT address FROM login_pairs WHERE user_name = %s ORDER BY last_login DESC LIMIT %s))""",
        (name, KNOWN_ADDRESS_DAYS, name, MAX_KNOWN_ADDRESSES))


def _verify(hashed: str, password: str) -> bool:
    try:
        return _HASHER.verify(hashed, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


# ---------------------------------------------------------------- sessions


@dataclass(frozen=True)
class Session:
    """A logged-in browser: the user and the session's CSRF token."""

    actor: Actor
    csrf_token: str
    expires_at: datetime


def create_session(conn: psycopg.Connection[Any], actor: Actor, seconds: int) -> tuple[str, str]:
    """A new session for ``actor``: (session id for the cookie, CSRF token)."""
    session_id = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    with conn.transaction():
        conn.execute("DELETE FROM web_sessions WHERE expires_at <= now()")
        conn.execute(
            """INSERT INTO web_sessions (session_sha256, user_name, csrf_token, expires_at)
               VALUES (%s, %s, %s, now() + make_interval(secs => %s))""",
            (_sha256(session_id), actor.name, csrf, seconds),
        )
    return session_id, csrf


def load_session(conn: psycopg.Connection[Any], session_id: str) -> Session | None:
    """The live session with this id (its user still active), or None."""
    row = conn.execute(
        """SELECT u.name, u.role, u.centre_id, s.csrf_token, s.expires_at
           FROM web_sessions s JOIN users u ON u.name = s.user_name
           WHERE s.session_sha256 = %s AND s.expires_at > now() AND u.active""",
        (_sha256(session_id),),
    ).fetchone()
    if row is None or row["role"] not in WEB_ROLES:
        return None
    return Session(Actor(row["name"], row["role"], row["centre_id"]), row["csrf_token"], row["expires_at"])


def end_session(conn: psycopg.Connection[Any], session_id: str, actor: Actor) -> None:
    """Log out: the session id stops working."""
    with conn.transaction():
        conn.execute("DELETE FROM web_sessions WHERE session_sha256 = %s", (_sha256(session_id),))
        audit.record(conn, actor.name, "logout", "user", actor.name, {})


def csrf_ok(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a form's CSRF token with the session's."""
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


# ---------------------------------------------------------------- API tokens


@dataclass(frozen=True)
class NewToken:
    """A freshly created token: the text is shown once and never stored."""

    token_id: str
    centre_id: str
    user_name: str
    text: str


def create_token(conn: psycopg.Connection[Any], actor: Actor, centre_id: str, user_name: str | None = None,
                 label: str = "") -> NewToken:
    """A new API token for a centre (admin), acting as one of the centre's users.

    ``user_name`` defaults to the centre's only active centre account.
    """
    authorize(actor, "token.create")
    with conn.transaction():
        if conn.execute("SELECT 1 FROM centres WHERE centre_id = %s", (centre_id,)).fetchone() is None:
            raise NotFound(f"unknown centre {centre_id!r}")
        users = conn.execute(
            "SELECT name FROM users WHERE role = 'centre' AND centre_id = %s AND active ORDER BY name", (centre_id,)
        ).fetchall()
        names = [u["name"] for u in users]
        if user_name is None:
            if len(names) != 1:
                have = ", ".join(names) or "none"
                raise InvalidParameter(f"centre {centre_id} has {len(names)} active centre users ({have}); name one with --user-name "
                                       "(add one with `dedup user add NAME --role centre --centre ID`)")
            user_name = names[0]
        elif user_name not in names:
            raise InvalidParameter(f"{user_name!r} is not an active centre user of {centre_id}")
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        conn.execute(
            "INSERT INTO api_tokens (token_id, centre_id, user_name, secret_sha256, label, created_by) VALUES (%s, %s, %s, %s, %s, %s)",
            (token_id, centre_id, user_name, _sha256(secret), label[:200], actor.name),
        )
        audit.record(conn, actor.name, "token.create", "centre", centre_id, {"token_id": token_id, "user": user_name})
    return NewToken(token_id, centre_id, user_name, f"dk_{token_id}_{secret}")


def token_actor(conn: psycopg.Connection[Any], text: str) -> Actor:
    """The centre user an API token acts as; Unauthenticated when it is unknown, revoked or malformed."""
    m = _TOKEN.match(text.strip())
    if not m:
        raise Unauthenticated("not a dedup API token (expected Authorization: Bearer dk_...)")
    row = conn.execute(
        """SELECT t.secret_sha256, t.revoked_at, u.name, u.role, u.centre_id, u.active
           FROM api_tokens t JOIN users u ON u.name = t.user_name WHERE t.token_id = %s""",
        (m.group(1),),
    ).fetchone()
    ok = row is not None and hmac.compare_digest(row["secret_sha256"], _sha256(m.group(2)))
    if row is None or not ok or row["revoked_at"] is not None or not row["active"]:
        raise Unauthenticated("unknown, revoked or disabled API token")
    conn.execute("UPDATE api_tokens SET last_used_at = now() WHERE token_id = %s", (m.group(1),))
    return Actor(row["name"], row["role"], row["centre_id"])


def revoke_token(conn: psycopg.Connection[Any], actor: Actor, token_id: str) -> None:
    """Revoke a token (admin)."""
    authorize(actor, "token.create")
    with conn.transaction():
        row = conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE token_id = %s AND revoked_at IS NULL RETURNING centre_id",
                           (token_id,)).fetchone()
        if row is None:
            raise NotFound(f"no active token {token_id!r}")
        audit.record(conn, actor.name, "token.revoke", "centre", row["centre_id"], {"token_id": token_id})

