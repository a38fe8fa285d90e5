"""Run units: the SQL of ``dedup run`` (``dedup.pipeline``).

A unit is a set of received enrolments that one runner claims, embeds, decides and adds to
the gallery; its state (``claimed`` -> ``decided`` -> ``done``) is what makes a run resumable
after a crash. One runner per database (``store.locks.try_run_lock``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from dedup.errors import StoreError


def unfinished_unit(conn: psycopg.Connection[Any]) -> tuple[int, str] | None:
    """The oldest unit not yet done, with its state; None when every unit is done."""
    row = conn.execute("SELECT unit_id, state FROM run_units WHERE state <> 'done' ORDER BY unit_id LIMIT 1").fetchone()
    return None if row is None else (int(row["unit_id"]), row["state"])


def claim_unit(conn: psycopg.Connection[Any], limit: int) -> tuple[int, int] | None:
    """Claim up to ``limit`` received enrolments, oldest first, as a new unit: (unit id, size).

    None, and no unit, when nothing is waiting. Enrolments locked by another transaction
    are skipped, not waited for.
    """
    with conn.transaction():
        row = conn.execute("INSERT INTO run_units (size) VALUES (0) RETURNING unit_id").fetchone()
        assert row is not None  # INSERT ... RETURNING returns the inserted row
        unit_id = row["unit_id"]
        taken = conn.execute(
            """UPDATE enrolments SET state = 'processing', unit_id = %s, updated_at = now()
               WHERE enrolment_pk IN (SELECT enrolment_pk FROM enrolments WHERE state = 'received'
                                      ORDER BY enrolment_pk LIMIT %s FOR UPDATE SKIP LOCKED)""",
            (unit_id, limit),
        ).rowcount
        if taken == 0:
            raise psycopg.Rollback()
        conn.execute("UPDATE run_units SET size = %s WHERE unit_id = %s", (taken, unit_id))
    return None if taken == 0 else (int(unit_id), int(taken))


def unit_photos(conn: psycopg.Connection[Any], unit_id: int) -> list[tuple[int, str]]:
    """The unit's enrolments in order: (enrolment pk, photo sha256)."""
    rows = conn.execute("SELECT enrolment_pk, photo_sha256 FROM enrolments WHERE unit_id = %s ORDER BY enrolment_pk",
                        (unit_id,)).fetchall()
    return [(int(r["enrolment_pk"]), r["photo_sha256"]) for r in rows]


def other_claimed_units(conn: psycopg.Connection[Any], unit_id: int) -> list[int]:
    """Units claimed (embedded, not yet decided) other than ``unit_id``."""
    rows = conn.execute("SELECT unit_id FROM run_units WHERE state = 'claimed' AND unit_id <> %s", (unit_id,)).fetchall()
    return [int(r["unit_id"]) for r in rows]


def lock_unit(conn: psycopg.Connection[Any], unit_id: int) -> str:
    """Lock a unit's row for the caller's transaction and return its state."""
    row = conn.execute("SELECT state FROM run_units WHERE unit_id = %s FOR UPDATE", (unit_id,)).fetchone()
    if row is None:
        raise StoreError(f"run unit {unit_id} is gone from the database")
    return str(row["state"])


def reject_enrolment(conn: psycopg.Connection[Any], enrolment_pk: int, reason: str, detail: str) -> None:
    """Mark an enrolment rejected by the face pipeline, with the reason the centre sees."""
    conn.execute("UPDATE enrolments SET state = 'rejected', reason = %s, detail = %s, updated_at = now() WHERE enrolment_pk = %s",
                 (reason, detail, enrolment_pk))


@dataclass(frozen=True)
class UnitThreshold:
    """The threshold a unit's enrolments were judged at, and what it rested on."""

    value: float
    source: str
    basis: str
    gallery_size: int
    fpir: float | None


def mark_unit_decided(conn: psycopg.Connection[Any], unit_id: int, model_id: str,
                      threshold: UnitThreshold | None = None) -> None:
    """Record that every enrolment of the unit was decided, and at which threshold (in the caller's transaction)."""
    t = threshold
    conn.execute(
        """UPDATE run_units SET state = 'decided', model_id = %s, threshold = %s, threshold_source = %s,
               threshold_basis = %s, threshold_gallery_size = %s, threshold_fpir = %s, updated_at = now()
           WHERE unit_id = %s""",
        (model_id, None if t is None else t.value, None if t is None else t.source, None if t is None else t.basis,
         None if t is None else t.gallery_size, None if t is None else t.fpir, unit_id))


def last_threshold(conn: psycopg.Connection[Any], model_id: str) -> UnitThreshold | None:
    """The threshold of the most recently decided unit of ``model_id`` (None before the first)."""
    row = conn.execute(
        """SELECT threshold, threshold_source, threshold_basis, threshold_gallery_size, threshold_fpir FROM run_units
           WHERE state <> 'claimed' AND model_id = %s AND threshold IS NOT NULL ORDER BY unit_id DESC LIMIT 1""",
        (model_id,)).fetchone()
    if row is None:
        return None
    return UnitThreshold(float(row["threshold"]), str(row["threshold_source"]), str(row["threshold_basis"]),
                         int(row["threshold_gallery_size"]), None if row["threshold_fpir"] is None else float(row["threshold_fpir"]))


def mark_unit_done(conn: psycopg.Connection[Any], unit_id: int) -> None:
    """Record that the unit's templates are in the gallery."""
    with conn.transaction():
        conn.execute("UPDATE run_units SET state = 'done', updated_at = now() WHERE unit_id = %s", (unit_id,))
