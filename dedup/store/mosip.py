"""MOSIP mode's tables: referenceId -> gallery row, responses by requestId, the consumer's status.

Every write that goes with a response (an INSERT's reference, a DELETE's removal) is made in
the same transaction as the stored response, so after a crash either both happened or
neither did. Schema: ``schemas/sql/0005_mosip.sql``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

# Advisory lock key: one `dedup abis serve` per database ("abis").
SERVE_LOCK = 0x61626973


@dataclass(frozen=True)
class Answer:
    """A response to store with its request's facts."""

    request_id: str
    operation: str
    reference_id: str | None
    response: dict[str, Any]
    detail: str
    message_type: str
    received_at: datetime


def try_serve_lock(conn: psycopg.Connection[Any]) -> bool:
    """Take the one-consumer lock for the life of ``conn``; False when another consumer holds it."""
    return bool(_one(conn, "SELECT pg_try_advisory_lock(%s) AS ok", (SERVE_LOCK,))["ok"])


def serve_lock_held(conn: psycopg.Connection[Any]) -> bool:
    """Whether a consumer holds the one-consumer lock now (taken and released at once if free)."""
    if try_serve_lock(conn):
        conn.execute("SELECT pg_advisory_unlock(%s)", (SERVE_LOCK,))
        return False
    return True


def stored_response(conn: psycopg.Connection[Any], request_id: str) -> tuple[dict[str, Any], str] | None:
    """The response already given to ``request_id`` and its message type, or None."""
    row = conn.execute("SELECT response, message_type FROM mosip_requests WHERE request_id = %s", (request_id,)).fetchone()
    return (_json(row["response"]), row["message_type"]) if row else None


def active_row(conn: psycopg.Connection[Any], reference_id: str) -> int | None:
    """The gallery row of an active referenceId, or None."""
    row = conn.execute("SELECT row_id FROM mosip_references WHERE reference_id = %s AND state = 'active'",
                       (reference_id,)).fetchone()
    return int(row["row_id"]) if row else None


def active_rows(conn: psycopg.Connection[Any], reference_ids: Iterable[str]) -> dict[str, int]:
    """referenceId -> gallery row of those that are active."""
    ids = list(reference_ids)
    if not ids:
        return {}
    rows = conn.execute("SELECT reference_id, row_id FROM mosip_references WHERE reference_id = ANY(%s) AND state = 'active'",
                        (ids,)).fetchall()
    return {r["reference_id"]: int(r["row_id"]) for r in rows}


def references_of_rows(conn: psycopg.Connection[Any], row_ids: Iterable[int]) -> dict[int, str]:
    """gallery row -> active referenceId (rows of no active reference are left out)."""
    ids = [int(r) for r in row_ids]
    if not ids:
        return {}
    rows = conn.execute("SELECT reference_id, row_id FROM mosip_references WHERE row_id = ANY(%s) AND state = 'active'",
                        (ids,)).fetchall()
    return {int(r["row_id"]): r["reference_id"] for r in rows}


def active_count(conn: psycopg.Connection[Any]) -> int:
    """Active referenceIds (REFERENCE_COUNT; the gallery size for thresholds)."""
    return int(_one(conn, "SELECT count(*) AS n FROM mosip_references WHERE state = 'active'")["n"])


def _insert_answer(conn: psycopg.Connection[Any], a: Answer) -> bool:
    resp = a.response
    cur = conn.execute(
        """INSERT INTO mosip_requests (request_id, operation, reference_id, return_value, failure_reason, detail,
                                       message_type, response, received_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (request_id) DO NOTHING""",
        (a.request_id, a.operation, a.reference_id, resp.get("returnValue", ""), resp.get("failureReason"),
         a.detail[:2000], a.message_type, Jsonb(resp), a.received_at))
    return cur.rowcount == 1


def record_answer(conn: psycopg.Connection[Any], answer: Answer) -> dict[str, Any]:
    """Store a response; returns the one stored (an earlier one wins for a repeated requestId)."""
    with conn.transaction():
        if not _insert_answer(conn, answer):
            raise psycopg.Rollback()
        return answer.response
    stored = stored_response(conn, answer.request_id)
    return stored[0] if stored else answer.response


def record_inserts(conn: psycopg.Connection[Any], done: list[tuple[Answer, str, int]]) -> list[dict[str, Any]]:
    """A batch of INSERTs done, (answer, referenceId, gallery row) each, in one transaction.

    Returns the stored responses in order (an earlier one wins for a repeated requestId,
    and its reference is left as it is).
    """
    out: list[dict[str, Any]] = []
    with conn.transaction():
        for answer, reference_id, row_id in done:
            if not _insert_answer(conn, answer):
                stored = stored_response(conn, answer.request_id)
                out.append(stored[0] if stored else answer.response)
                continue
            conn.execute(
                """INSERT INTO mosip_references (reference_id, row_id, state, request_id) VALUES (%s, %s, 'active', %s)
                   ON CONFLICT (reference_id) DO UPDATE SET row_id = EXCLUDED.row_id, state = 'active',
                       request_id = EXCLUDED.request_id, inserted_at = now(), deleted_at = NULL""",
                (reference_id, row_id, answer.request_id))
            out.append(answer.response)
    return out


def record_delete(conn: psycopg.Connection[Any], answer: Answer, reference_id: str) -> dict[str, Any]:
    """A DELETE done: the reference deleted and its response, in one transaction."""
    with conn.transaction():
        if not _insert_answer(conn, answer):
            raise psycopg.Rollback()
        conn.execute("UPDATE mosip_references SET state = 'deleted', deleted_at = now() WHERE reference_id = %s",
                     (reference_id,))
        return answer.response
    stored = stored_response(conn, answer.request_id)
    return stored[0] if stored else answer.response


def mark_sent(conn: psycopg.Connection[Any], request_id: str) -> None:
    """The broker has taken the response (its transaction with the request's ack committed)."""
    conn.execute("UPDATE mosip_requests SET sent_at = now() WHERE request_id = %s AND sent_at IS NULL", (request_id,))


def unsent_count(conn: psycopg.Connection[Any]) -> int:
    """Responses stored but not yet confirmed sent (the consumer stopped between the two)."""
    return int(_one(conn, "SELECT count(*) AS n FROM mosip_requests WHERE sent_at IS NULL")["n"])


# ---------------------------------------------------------------------------- status

def set_started(conn: psycopg.Connection[Any], pid: int) -> None:
    conn.execute("UPDATE mosip_status SET pid = %s, started_at = now(), heartbeat_at = now(), working_on = NULL WHERE id = 1",
                 (pid,))


def heartbeat(conn: psycopg.Connection[Any], working_on: str | None, pending: int) -> None:
    conn.execute("UPDATE mosip_status SET heartbeat_at = now(), working_on = %s, pending = %s WHERE id = 1",
                 (working_on, pending))


def set_last_error(conn: psycopg.Connection[Any], message: str) -> None:
    conn.execute("UPDATE mosip_status SET last_error = %s, last_error_at = now() WHERE id = 1", (message[:2000],))


def status(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Counts and the consumer's last heartbeat and error, for ``dedup abis status``."""
    st = conn.execute("""SELECT pid, started_at, heartbeat_at, working_on, pending, last_error, last_error_at
                         FROM mosip_status WHERE id = 1""").fetchone() or {}
    ops = conn.execute("""SELECT operation, return_value, count(*) AS n FROM mosip_requests
                          GROUP BY operation, return_value ORDER BY operation, return_value""").fetchall()
    failures = conn.execute("""SELECT failure_reason, count(*) AS n FROM mosip_requests WHERE failure_reason IS NOT NULL
                               GROUP BY failure_reason ORDER BY failure_reason""").fetchall()
    last = _one(conn, "SELECT max(answered_at) AS t, count(*) AS n FROM mosip_requests")
    return {
        "references": active_count(conn),
        "requests_answered": int(last["n"]),
        "last_answer_at": last["t"],
        "unsent_responses": unsent_count(conn),
        "by_operation": [{"operation": r["operation"], "return_value": r["return_value"], "count": int(r["n"])} for r in ops],
        "failures": {str(r["failure_reason"]): int(r["n"]) for r in failures},
        "consumer": {k: st.get(k) for k in ("pid", "started_at", "heartbeat_at", "working_on", "pending")},
        "last_error": st.get("last_error"),
        "last_error_at": st.get("last_error_at"),
    }


def _one(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()) -> dict[str, Any]:
    """The one row an aggregate query returns."""
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return dict(row)


def _json(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else json.loads(value)


def add_references_bulk(conn: psycopg.Connection[Any], pairs: Iterable[tuple[str, int]], request_id: str) -> int:
    """Register many (referenceId, gallery row) pairs at once with COPY (benchmarks' synthetic galleries)."""
    n = 0
    with conn.transaction():
        with conn.cursor().copy("COPY mosip_references (reference_id, row_id, state, request_id) FROM STDIN") as copy:
            for ref, row in pairs:
                copy.write_row((ref, int(row), "active", request_id))
                n += 1
    return n
