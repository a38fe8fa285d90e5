"""Users, roles and the one permission table every command checks.

The CLI acts as the user named by ``--user`` or ``DEDUP_USER``; there is no password on
the command line: whoever can run ``dedup`` on the deployment's machine already holds its
files, so the role check is about keeping each person to their job (an adjudicator does
not submit, a centre does not decide or see another centre's batches). The HTTP API
authenticates its users before it maps them onto the same roles.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from dedup.bidi import check_id
from dedup.errors import Conflict, InvalidParameter, NotFound, PermissionDenied
from dedup.store import audit

ROLES = ("centre", "adjudicator", "supervisor", "admin")

# action -> roles allowed. Object-level checks (a centre's own batches, the holder of a
# case) are made where the object is read.
PERMISSIONS: dict[str, frozenset[str]] = {
    "centre.add": frozenset({"admin"}),
    "centre.list": frozenset({"admin", "supervisor", "centre"}),
    "user.add": frozenset({"admin"}),
    "user.list": frozenset({"admin", "supervisor"}),
    "user.disable": frozenset({"admin"}),
    "batch.submit": frozenset({"centre", "admin"}),
    "enrolment.status": frozenset({"centre", "supervisor", "admin"}),
    "batch.report": frozenset({"centre", "supervisor", "admin"}),
    "pipeline.run": frozenset({"admin"}),
    "threshold.calibrate": frozenset({"admin"}),
    "gallery.coverage": frozenset({"admin"}),
    "queue.list": frozenset({"adjudicator", "supervisor", "admin"}),
    "queue.claim": frozenset({"adjudicator", "supervisor"}),
    "queue.show": frozenset({"adjudicator", "supervisor"}),
    "queue.decide": frozenset({"adjudicator", "supervisor"}),
    "queue.release": frozenset({"adjudicator", "supervisor"}),
    "audit.read": frozenset({"supervisor", "admin"}),
    # the web app (dedup/web): passwords, centre API tokens, supervisor pages, control pairs
    "user.passwd": frozenset({"admin"}),
    "token.create": frozenset({"admin"}),
    "supervise.stats": frozenset({"supervisor", "admin"}),
    "control.manage": frozenset({"supervisor"}),
}


@dataclass(frozen=True)
class Actor:
    """The user a command acts as."""

    name: str
    role: str
    centre_id: str | None = None

    def may(self, action: str) -> bool:
        """Whether this user's role allows ``action``."""
        return self.role in PERMISSIONS[action]


# The pipeline acts as this system actor in the audit log and UIN records.
SYSTEM = Actor("dedup-run", "admin")


@dataclass(frozen=True)
class User:
    """A user account."""

    name: str
    role: str
    centre_id: str | None
    active: bool
    created_at: datetime
    created_by: str


def authorize(actor: Actor, action: str) -> None:
    """Raise PermissionDenied unless the actor's role allows ``action``."""
    if action not in PERMISSIONS:
        raise KeyError(f"unknown action {action!r}")  # a programming error, not user input
    if not actor.may(action):
        allowed = ", ".join(sorted(PERMISSIONS[action]))
        raise PermissionDenied(f"user {actor.name!r} (role {actor.role}) may not {action.replace('.', ' ')}; allowed roles: {allowed}")


def authenticate(conn: psycopg.Connection[Any], name: str | None) -> Actor:
    """The active user called ``name``, as an Actor."""
    if not name:
        raise PermissionDenied("no user given: pass --user NAME or set DEDUP_USER")
    row = conn.execute("SELECT name, role, centre_id, active FROM users WHERE name = %s", (name,)).fetchone()
    if row is None:
        raise PermissionDenied(f"unknown user {name!r}; an admin adds users with `dedup user add`")
    if not row["active"]:
        raise PermissionDenied(f"user {name!r} is disabled")
    return Actor(row["name"], row["role"], row["centre_id"])


def add_user(conn: psycopg.Connection[Any], actor: Actor, name: str, role: str, centre_id: str | None = None) -> User:
    """Create a user (admin only). Centre accounts name their centre; others must not."""
    authorize(actor, "user.add")
    check_id(name, "the user name")
    if role not in ROLES:
        raise InvalidParameter(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    if role == "centre" and not centre_id:
        raise InvalidParameter("a centre user needs --centre ID")
    if role != "centre" and centre_id:
        raise InvalidParameter(f"only centre users belong to a centre; drop --centre for role {role}")
    with conn.transaction():
        if centre_id and conn.execute("SELECT 1 FROM centres WHERE centre_id = %s", (centre_id,)).fetchone() is None:
            raise NotFound(f"unknown centre {centre_id!r}; add it first with `dedup centre add`")
        try:
            with conn.transaction():
                row = conn.execute(
                    "INSERT INTO users (name, role, centre_id, created_by) VALUES (%s, %s, %s, %s) RETURNING *",
                    (name, role, centre_id, actor.name),
                ).fetchone()
        except psycopg.errors.UniqueViolation:
            raise Conflict(f"user {name!r} already exists") from None
        except psycopg.errors.CheckViolation:
            raise InvalidParameter(f"user name {name!r} is not valid: 1-64 letters, digits, '.', '_', '@' or '-'") from None
        audit.record(conn, actor.name, "user.add", "user", name, {"role": role, "centre_id": centre_id})
    assert row is not None  # INSERT ... RETURNING gives a row
    return User(**row)


def list_users(conn: psycopg.Connection[Any], actor: Actor) -> list[User]:
    """Every user (admin, supervisor)."""
    authorize(actor, "user.list")
    return [User(**r) for r in conn.execute("SELECT * FROM users ORDER BY name").fetchall()]


def disable_user(conn: psycopg.Connection[Any], actor: Actor, name: str) -> User:
    """Disable a user (admin only); their open claims return to the queue. The last active admin stays."""
    authorize(actor, "user.disable")
    with conn.transaction():
        row = conn.execute("SELECT * FROM users WHERE name = %s FOR UPDATE", (name,)).fetchone()
        if row is None:
            raise NotFound(f"unknown user {name!r}")
        if row["role"] == "admin" and row["active"]:
            conn.execute("SELECT name FROM users WHERE role = 'admin' AND active FOR UPDATE").fetchall()
            counted = conn.execute(
                "SELECT count(*) AS n FROM users WHERE role = 'admin' AND active AND name <> %s", (name,)
            ).fetchone()
            others = counted["n"] if counted is not None else 0
            if others == 0:
                raise Conflict(f"{name!r} is the last active admin; add another admin first")
        row = conn.execute("UPDATE users SET active = false WHERE name = %s RETURNING *", (name,)).fetchone()
        released = conn.execute(
            "UPDATE cases SET claimed_by = NULL, lease_until = NULL WHERE status = 'open' AND claimed_by = %s RETURNING case_id",
            (name,),
        ).fetchall()
        audit.record(conn, actor.name, "user.disable", "user", name, {"released_cases": [r["case_id"] for r in released]})
    assert row is not None  # the row was locked above
    return User(**row)


def ensure_first_admin(conn: psycopg.Connection[Any], name: str) -> bool:
    """Create admin ``name`` when the deployment has no user yet; True when created."""
    with conn.transaction():
        conn.execute("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")  # two concurrent inits make one admin
        if conn.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None:
            return False
        try:
            with conn.transaction():
                conn.execute(
                    "INSERT INTO users (name, role, created_by) VALUES (%s, 'admin', 'dedup init')", (name,)
                )
        except psycopg.errors.CheckViolation:
            raise InvalidParameter(f"admin name {name!r} is not valid: 1-64 letters, digits, '.', '_', '@' or '-'") from None
        audit.record(conn, "dedup init", "user.add", "user", name, {"role": "admin"})
    return True
