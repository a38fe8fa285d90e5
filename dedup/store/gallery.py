"""The deployment's record of its galleries (table ``galleries``, ``schemas/sql/0004_gallery.sql``),
and which enrolments should be in the main gallery (for ``dedup gallery verify``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

# A unit's templates enter the gallery after it is decided; once it is done they are in it.
# Its enrolments that gave a template are then in one of these states, whatever was decided.
IN_GALLERY_STATES = ("accepted", "adjudication", "duplicate", "recapture")


@dataclass(frozen=True)
class GalleryRecord:
    """What the database says a gallery folder holds."""

    gallery_key: str
    gallery_id: str
    model_id: str
    dim: int
    generation: int
    row_count: int
    manifest_sha256: str | None
    manifest: str | None
    pending_generation: int | None
    pending_row_count: int | None
    pending_manifest_sha256: str | None
    pending_manifest: str | None
    verified_at: datetime | None
    verify_ok: bool | None
    verify_summary: dict[str, Any] | None
    updated_at: datetime | None = None


_COLUMNS = ("gallery_key, gallery_id, model_id, dim, generation, row_count, manifest_sha256, manifest, pending_generation, "
            "pending_row_count, pending_manifest_sha256, pending_manifest, verified_at, verify_ok, verify_summary, updated_at")


def _record(row: dict[str, Any]) -> GalleryRecord:
    return GalleryRecord(**row)


def get_record(conn: psycopg.Connection[Any], key: str) -> GalleryRecord | None:
    """The record of the gallery folder ``key``, or None when the deployment has none."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM galleries WHERE gallery_key = %s", (key,)).fetchone()
    return None if row is None else _record(row)


def all_records(conn: psycopg.Connection[Any]) -> list[GalleryRecord]:
    """Every gallery of the deployment, by folder."""
    return [_record(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM galleries ORDER BY gallery_key").fetchall()]


def insert_record(conn: psycopg.Connection[Any], key: str, gallery_id: str, model_id: str, dim: int) -> GalleryRecord:
    """Record a gallery about to be created (generation -1 until its first switch)."""
    conn.execute("INSERT INTO galleries (gallery_key, gallery_id, model_id, dim) VALUES (%s, %s, %s, %s)",
                 (key, gallery_id, model_id, dim))
    record = get_record(conn, key)
    assert record is not None
    return record


def adopt(conn: psycopg.Connection[Any], key: str, gallery_id: str, model_id: str, dim: int, generation: int,
          row_count: int, manifest: str, manifest_sha256: str) -> None:
    """Record an existing, verified gallery (one made before the database kept records)."""
    conn.execute(
        """INSERT INTO galleries (gallery_key, gallery_id, model_id, dim, generation, row_count, manifest_sha256, manifest)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
        (key, gallery_id, model_id, dim, generation, row_count, manifest_sha256, manifest))


def set_pending(conn: psycopg.Connection[Any], key: str, gallery_id: str, generation: int, row_count: int,
                manifest: str, manifest_sha256: str) -> bool:
    """Phase one of a switch: the generation the files are about to switch to. False when
    the record is not this gallery's."""
    cur = conn.execute(
        """UPDATE galleries SET pending_generation = %s, pending_row_count = %s, pending_manifest = %s,
                  pending_manifest_sha256 = %s, updated_at = now()
           WHERE gallery_key = %s AND gallery_id = %s""",
        (generation, row_count, manifest, manifest_sha256, key, gallery_id))
    return cur.rowcount == 1


def commit_generation(conn: psycopg.Connection[Any], key: str, gallery_id: str, generation: int, row_count: int,
                      manifest: str, manifest_sha256: str) -> bool:
    """Phase two: the files now hold this generation. False when the record is not this gallery's."""
    cur = conn.execute(
        """UPDATE galleries SET generation = %s, row_count = %s, manifest = %s, manifest_sha256 = %s,
                  pending_generation = NULL, pending_row_count = NULL, pending_manifest = NULL,
                  pending_manifest_sha256 = NULL, updated_at = now()
           WHERE gallery_key = %s AND gallery_id = %s""",
        (generation, row_count, manifest, manifest_sha256, key, gallery_id))
    return cur.rowcount == 1


def record_verification(conn: psycopg.Connection[Any], key: str, ok: bool, summary: dict[str, Any]) -> None:
    """Keep the outcome of the last ``dedup gallery verify`` (counts only: no template, no id)."""
    conn.execute("UPDATE galleries SET verified_at = now(), verify_ok = %s, verify_summary = %s WHERE gallery_key = %s",
                 (ok, Jsonb(summary), key))


def gallery_enrolments(conn: psycopg.Connection[Any]) -> tuple[set[int], set[int]]:
    """(enrolments that must be in the gallery, enrolments that may be): the first are of done
    units in a state that gave a template; the second adds those of decided units (their
    templates may have entered the gallery before the run stopped)."""
    rows = conn.execute(
        """SELECT e.enrolment_pk, u.state FROM enrolments e JOIN run_units u ON u.unit_id = e.unit_id
           WHERE e.state = ANY(%s) AND u.state IN ('decided', 'done')""",
        (list(IN_GALLERY_STATES),)).fetchall()
    must = {int(r["enrolment_pk"]) for r in rows if r["state"] == "done"}
    may = {int(r["enrolment_pk"]) for r in rows}
    return must, may


def gallery_health(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Each gallery's health for the supervisor page: generation, templates, and the last
    ``dedup gallery verify`` (when, ok, shards, files hashed, mismatches)."""
    out = []
    for r in all_records(conn):
        summary = r.verify_summary or {}
        out.append({"gallery": r.gallery_key, "generation": r.generation, "templates": r.row_count,
                    "pending": r.pending_generation is not None, "verified_at": r.verified_at, "ok": r.verify_ok,
                    "shards": summary.get("shards"), "files_checked": summary.get("files_checked"),
                    "mismatches": summary.get("mismatches"), "problems": ", ".join(summary.get("problems", []))})
    return out
