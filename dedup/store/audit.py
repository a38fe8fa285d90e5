"""The append-only audit log: who did what, when, to which object.

Rows are written in the same transaction as the change they record, so a change without
its audit row (or the reverse) cannot exist. The table refuses updates, deletes and
truncation (a trigger, see ``schemas/sql/0001_core.sql``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb


@dataclass(frozen=True)
class AuditRow:
    """One audit entry."""

    audit_id: int
    at: datetime
    actor: str
    action: str
    object_type: str
    object_id: str
    detail: dict[str, Any]


def record(conn: psycopg.Connection[Any], actor: str, action: str, object_type: str, object_id: str | int,
           detail: dict[str, Any] | None = None) -> None:
    """Append one audit row (inside the caller's transaction)."""
    conn.execute(
        "INSERT INTO audit (actor, action, object_type, object_id, detail) VALUES (%s, %s, %s, %s, %s)",
        (actor, action, object_type, str(object_id), Jsonb(detail or {})),
    )


def entries(conn: psycopg.Connection[Any], object_type: str | None = None, object_id: str | int | None = None,
            limit: int = 1000) -> list[AuditRow]:
    """Audit rows, oldest first, optionally for one object."""
    where, params = [], []
    if object_type is not None:
        where.append("object_type = %s")
        params.append(object_type)
    if object_id is not None:
        where.append("object_id = %s")
        params.append(str(object_id))
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    rows = conn.execute(
        f"SELECT audit_id, at, actor, action, object_type, object_id, detail FROM audit {clause} ORDER BY audit_id LIMIT %s",
        (*params, limit),
    ).fetchall()
    return [AuditRow(**r) for r in rows]
