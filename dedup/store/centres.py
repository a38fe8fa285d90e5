"""Enrolment centres: the known senders of batches ("unknown centre" is checked here)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from dedup.bidi import check_id
from dedup.errors import Conflict, InvalidParameter
from dedup.store import audit
from dedup.store.users import Actor, authorize

CENTRE_ID_RULE = "1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"


@dataclass(frozen=True)
class Centre:
    """A registered enrolment centre."""

    centre_id: str
    name: str
    created_at: datetime
    created_by: str


def add_centre(conn: psycopg.Connection[Any], actor: Actor, centre_id: str, name: str = "") -> Centre:
    """Register a centre (admin only)."""
    authorize(actor, "centre.add")
    check_id(centre_id, "the centre id")
    with conn.transaction():
        try:
            with conn.transaction():
                row = conn.execute(
                    "INSERT INTO centres (centre_id, name, created_by) VALUES (%s, %s, %s) RETURNING *",
                    (centre_id, name, actor.name),
                ).fetchone()
        except psycopg.errors.UniqueViolation:
            raise Conflict(f"centre {centre_id!r} already exists") from None
        except psycopg.errors.CheckViolation:
            raise InvalidParameter(f"centre id {centre_id!r} is not valid: {CENTRE_ID_RULE}") from None
        audit.record(conn, actor.name, "centre.add", "centre", centre_id, {"name": name})
    assert row is not None  # INSERT ... RETURNING gives a row
    return Centre(**row)


def list_centres(conn: psycopg.Connection[Any], actor: Actor) -> list[Centre]:
    """Every centre (admin, supervisor); a centre account sees only its own."""
    authorize(actor, "centre.list")
    if actor.role == "centre":
        rows = conn.execute("SELECT * FROM centres WHERE centre_id = %s", (actor.centre_id,)).fetchall()
    else:
        rows = conn.execute("SELECT * FROM centres ORDER BY centre_id").fetchall()
    return [Centre(**r) for r in rows]


def known_centres(conn: psycopg.Connection[Any]) -> set[str]:
    """Ids of every registered centre (for manifest validation)."""
    return {r["centre_id"] for r in conn.execute("SELECT centre_id FROM centres").fetchall()}
