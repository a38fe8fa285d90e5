"""Batches, their rows (the receipt) and enrolments: writes at submission, reads for
receipts, ``dedup status`` and ``dedup report``.

An enrolment's state as the centre sees it:

- ``received``: stored, waiting for ``dedup run``
- ``rejected``: refused at submission or by the face pipeline (``reason`` says why)
- ``processing``: ``dedup run`` has it
- ``accepted``: a UIN was issued (``uin``)
- ``adjudication``: a case is open for it (``case_id``)
- ``duplicate``: an adjudicator linked it to an existing identity (``duplicate_of``)
- ``recapture``: an adjudicator asked the centre for a new photo (``reason`` has the request)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any, Literal

import psycopg

from dedup.bidi import check_id
from dedup.errors import NotFound, PermissionDenied
from dedup.store import audit
from dedup.store.users import Actor, authorize


@dataclass(frozen=True)
class ReceiptRow:
    """One manifest row as judged at submission."""

    row: int
    enrolment_id: str | None
    centre_id: str | None
    status: Literal["accepted", "rejected"]
    reason: str | None  # stable reason code of a rejected row (see the README)
    detail: str | None


@dataclass(frozen=True)
class Receipt:
    """What a centre gets back for a batch; identical on every resubmission."""

    batch_id: str
    manifest: str
    centre_id: str | None
    submitted_by: str
    submitted_at: dt.datetime
    rows: int
    accepted: int
    rejected: int
    items: list[ReceiptRow]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form with stable keys."""
        d = asdict(self)
        d["submitted_at"] = self.submitted_at.isoformat()
        return d


@dataclass(frozen=True)
class EnrolmentState:
    """An enrolment's (or a rejected row's) current outcome."""

    batch_id: str
    row: int
    enrolment_id: str | None
    centre_id: str | None
    state: Literal["received", "processing", "accepted", "adjudication", "duplicate", "recapture", "rejected"]
    reason: str | None
    detail: str | None
    uin: str | None
    duplicate_of: str | None
    case_id: int | None
    captured_at: dt.datetime | None
    updated_at: dt.datetime | None
    judged_threshold: float | None = None   # the threshold `dedup run` decided it at (its unit's; issue 13)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form with stable keys."""
        d = asdict(self)
        for k in ("captured_at", "updated_at"):
            d[k] = d[k].isoformat() if d[k] is not None else None
        return d


@dataclass(frozen=True)
class BatchOutcomes:
    """Every row of a batch with its current state."""

    batch_id: str
    rows: list[EnrolmentState]


@dataclass(frozen=True)
class EnrolmentOutcomes:
    """The outcome(s) of an enrolment id."""

    enrolment_id: str
    outcomes: list[EnrolmentState]


# ---------------------------------------------------------------- writes (submission)


def insert_batch(conn: psycopg.Connection[Any], batch_id: str, sha256: str, name: str, centre_id: str | None,
                 submitted_by: str, n_rows: int, n_accepted: int) -> None:
    """Record a batch (inside the submission's transaction)."""
    conn.execute(
        """INSERT INTO batches (batch_id, manifest_sha256, manifest_name, centre_id, submitted_by, n_rows, n_accepted, n_rejected)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
        (batch_id, sha256, name, centre_id, submitted_by, n_rows, n_accepted, n_rows - n_accepted),
    )


def insert_enrolment(conn: psycopg.Connection[Any], batch_id: str, row: int, centre_id: str | None, enrolment_id: str | None,
                     captured_at: dt.datetime | None, photo_sha256: str, sex: str | None, birth_year: int | None,
                     region: str | None) -> int:
    """Record an accepted row as an enrolment in state ``received``; return its key."""
    got = conn.execute(
        """INSERT INTO enrolments (centre_id, enrolment_id, batch_id, row_index, captured_at, photo_sha256, sex, birth_year, region)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING enrolment_pk""",
        (centre_id, enrolment_id, batch_id, row, captured_at, photo_sha256, sex, birth_year, region),
    ).fetchone()
    assert got is not None  # INSERT ... RETURNING
    return int(got["enrolment_pk"])


def insert_row(conn: psycopg.Connection[Any], batch_id: str, row: int, enrolment_id: str | None, centre_id: str | None,
               reason: str | None, detail: str | None, enrolment_pk: int | None) -> None:
    """Record one manifest row's judgement (the receipt line)."""
    conn.execute(
        """INSERT INTO batch_rows (batch_id, row_index, enrolment_id, centre_id, accepted, reason, detail, enrolment_pk)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
        (batch_id, row, enrolment_id, centre_id, enrolment_pk is not None, reason, detail, enrolment_pk),
    )


def existing_enrolments(conn: psycopg.Connection[Any], keys: list[tuple[Any, Any]]) -> dict[tuple[str, str], str]:
    """(centre_id, enrolment_id) -> batch_id for the keys already received."""
    if not keys:
        return {}
    rows = conn.execute(
        """SELECT e.centre_id, e.enrolment_id, e.batch_id
           FROM enrolments e JOIN unnest(%s::text[], %s::text[]) AS k(c, i) ON e.centre_id = k.c AND e.enrolment_id = k.i""",
        ([k[0] for k in keys], [k[1] for k in keys]),
    ).fetchall()
    return {(r["centre_id"], r["enrolment_id"]): r["batch_id"] for r in rows}


# ---------------------------------------------------------------- reads


def check_batch_access(actor: Actor, owner_centre: str | None, batch_id: str) -> None:
    """A centre account submits to its own centre's batches only (a resubmission of another centre's manifest)."""
    if actor.role == "centre" and owner_centre != actor.centre_id:
        raise PermissionDenied(f"batch {batch_id} does not belong to centre {actor.centre_id!r}")


def check_batch_readable(conn: psycopg.Connection[Any], actor: Actor, owner_centre: str | None, batch_id: str,
                         exists: bool) -> None:
    """NotFound, with the same words, for a batch that does not exist and for another centre's
    (a centre cannot learn which batch ids exist elsewhere); the refusal is audited."""
    if exists and not (actor.role == "centre" and owner_centre != actor.centre_id):
        return
    if exists:
        with conn.transaction():
            audit.record(conn, actor.name, "batch.refused", "batch", batch_id, {"owner": owner_centre})
    raise NotFound(f"no batch {batch_id!r}")


def get_receipt(conn: psycopg.Connection[Any], batch_id: str) -> Receipt | None:
    """The stored receipt of a batch, or None."""
    b = conn.execute("SELECT * FROM batches WHERE batch_id = %s", (batch_id,)).fetchone()
    if b is None:
        return None
    rows = conn.execute(
        "SELECT row_index, enrolment_id, centre_id, accepted, reason, detail FROM batch_rows WHERE batch_id = %s ORDER BY row_index",
        (batch_id,),
    ).fetchall()
    items = [ReceiptRow(r["row_index"], r["enrolment_id"], r["centre_id"], "accepted" if r["accepted"] else "rejected",
                        r["reason"], r["detail"]) for r in rows]
    return Receipt(b["batch_id"], b["manifest_name"], b["centre_id"], b["submitted_by"], b["submitted_at"],
                   b["n_rows"], b["n_accepted"], b["n_rejected"], items)


_STATE_SQL = """
SELECT r.batch_id, r.row_index, r.enrolment_id, r.centre_id, r.accepted, r.reason AS row_reason, r.detail AS row_detail,
       e.state, e.reason, e.detail, e.uin, e.duplicate_of, e.captured_at, e.updated_at, c.case_id,
       CASE WHEN e.state <> 'rejected' THEN u.threshold END AS judged_threshold
FROM batch_rows r
JOIN batches b ON b.batch_id = r.batch_id
LEFT JOIN enrolments e ON e.enrolment_pk = r.enrolment_pk
LEFT JOIN run_units u ON u.unit_id = e.unit_id AND u.state <> 'claimed'
LEFT JOIN cases c ON c.enrolment_pk = e.enrolment_pk
"""


def _state(r: dict[str, Any]) -> EnrolmentState:
    if not r["accepted"]:
        return EnrolmentState(r["batch_id"], r["row_index"], r["enrolment_id"], r["centre_id"], "rejected",
                              r["row_reason"], r["row_detail"], None, None, None, None, None)
    return EnrolmentState(r["batch_id"], r["row_index"], r["enrolment_id"], r["centre_id"], r["state"], r["reason"],
                          r["detail"], r["uin"], r["duplicate_of"], r["case_id"], r["captured_at"], r["updated_at"],
                          r["judged_threshold"])


def batch_report(conn: psycopg.Connection[Any], actor: Actor, batch_id: str) -> list[EnrolmentState]:
    """Every row of a batch with its current state (centre: own batches only)."""
    authorize(actor, "batch.report")
    b = conn.execute("SELECT centre_id FROM batches WHERE batch_id = %s", (batch_id,)).fetchone()
    check_batch_readable(conn, actor, None if b is None else b["centre_id"], batch_id, b is not None)
    rows = conn.execute(_STATE_SQL + " WHERE r.batch_id = %s ORDER BY r.row_index", (batch_id,)).fetchall()
    with conn.transaction():
        audit.record(conn, actor.name, "batch.report", "batch", batch_id, {"rows": len(rows)})
    return [_state(r) for r in rows]


def enrolment_status(conn: psycopg.Connection[Any], actor: Actor, enrolment_id: str, centre_id: str | None = None) -> list[EnrolmentState]:
    """The outcome(s) of an enrolment id: the accepted one, else every rejected row that carried it.

    A centre account sees its own centre's enrolments only, and whose a row is comes from who
    submitted it, never from the ``centre_id`` a manifest typed: an accepted row is an
    enrolment of the centre it was accepted for (a centre's token submits for its own centre
    only), a rejected row is the submitting centre's. Others may narrow with ``centre_id``.
    """
    authorize(actor, "enrolment.status")
    check_id(enrolment_id, "the enrolment id")
    params: list[Any] = [enrolment_id]
    clause = " WHERE r.enrolment_id = %s"
    if actor.role == "centre":
        if centre_id is not None and centre_id != actor.centre_id:
            raise PermissionDenied(f"user {actor.name!r} sees centre {actor.centre_id!r} only")
        centre_id = actor.centre_id
        clause += " AND ((r.accepted AND e.centre_id = %s) OR (NOT r.accepted AND b.centre_id = %s))"
        params += [centre_id, centre_id]
    elif centre_id is not None:
        clause += " AND r.centre_id = %s"
        params.append(centre_id)
    rows = conn.execute(_STATE_SQL + clause + " ORDER BY r.accepted DESC, r.batch_id, r.row_index", params).fetchall()
    with conn.transaction():  # a lookup that finds nothing is audited too (someone probing ids)
        audit.record(conn, actor.name, "enrolment.status", "enrolment", enrolment_id, {"centre_id": centre_id, "found": bool(rows)})
    if not rows:
        where = f" at centre {centre_id!r}" if centre_id else ""
        raise NotFound(f"no enrolment {enrolment_id!r}{where}")
    # The accepted row is the enrolment; rejected rows with the same id are only shown when
    # nothing was accepted (they explain why there is no enrolment).
    kept = [r for r in rows if r["accepted"]] or rows
    return [_state(r) for r in kept]
