"""Which enrolments stand in the gallery: reads for the pipeline's candidates and for
calibration's impostor pairs."""

from __future__ import annotations

from typing import Any

import psycopg

# An enrolment in these states stands in the gallery: its template is a candidate for others.
GALLERY_STATES = ("accepted", "adjudication")


def standing_enrolments(conn: psycopg.Connection[Any], pks: list[int]) -> set[int]:
    """Which of these enrolments still stand in the gallery (accepted or in adjudication)."""
    if not pks:
        return set()
    rows = conn.execute("SELECT enrolment_pk FROM enrolments WHERE enrolment_pk = ANY(%s) AND state = ANY(%s)",
                        (pks, list(GALLERY_STATES))).fetchall()
    return {int(r["enrolment_pk"]) for r in rows}


def accepted_enrolment_pks(conn: psycopg.Connection[Any]) -> list[int]:
    """Every accepted enrolment with a UIN, in pk order."""
    rows = conn.execute(
        "SELECT enrolment_pk FROM enrolments WHERE state = 'accepted' AND uin IS NOT NULL ORDER BY enrolment_pk")
    return [int(r["enrolment_pk"]) for r in rows]


def uins_of(conn: psycopg.Connection[Any], pks: list[int]) -> dict[int, str]:
    """The UIN of each of these enrolments that has one."""
    rows = conn.execute("SELECT enrolment_pk, uin FROM enrolments WHERE enrolment_pk = ANY(%s)", (pks,))
    return {int(r["enrolment_pk"]): r["uin"] for r in rows}
