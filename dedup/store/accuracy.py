"""What the deployment's own accuracy figures read and write, in SQL (the figures are
computed in :mod:`dedup.evaluation.live`).

- the accepted identities with their optional demographic fields (for per-group FMR; these
  fields are read here for the bias audit only, never for matching);
- the genuine pairs adjudication has established: a case decided *duplicate* gives its probe
  and the candidate it was linked to; a control pair with the answer *duplicate* is one too;
- the refreshes of the impostor tail (``accuracy_refreshes``, statistics only).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb


@dataclass(frozen=True)
class AcceptedIdentity:
    """An accepted enrolment (one identity, its UIN) and the manifest's optional fields."""

    enrolment_pk: int
    uin: str
    sex: str | None
    birth_year: int | None
    region: str | None


@dataclass(frozen=True)
class GenuinePair:
    """Two photos adjudication says are of one person, and their exact score at the time."""

    source: str             # "decided_duplicate" or "control_pair"
    ref: int                # the case number or the control pair's id
    probe_sha256: str
    candidate_sha256: str
    score: float
    source_case: int | None = None   # a control pair: the decided case it was made from


@dataclass(frozen=True)
class Refresh:
    """One stored refresh of the deployment's impostor figures."""

    refresh_id: int
    at: datetime
    made_by: str
    model_id: str
    gallery_size: int
    accepted: int
    impostor_pairs: int
    threshold: float
    figures: dict[str, Any]


def accepted_identities(conn: psycopg.Connection[Any]) -> list[AcceptedIdentity]:
    """Every accepted enrolment with a UIN, in pk order, with sex, birth year and region."""
    rows = conn.execute(
        """SELECT enrolment_pk, uin, sex, birth_year, region FROM enrolments
           WHERE state = 'accepted' AND uin IS NOT NULL ORDER BY enrolment_pk""").fetchall()
    return [AcceptedIdentity(int(r["enrolment_pk"]), r["uin"], r["sex"], r["birth_year"], r["region"]) for r in rows]


def decided_duplicate_pairs(conn: psycopg.Connection[Any]) -> list[GenuinePair]:
    """For each case decided duplicate: its probe and the highest-scoring candidate of the
    identity it was linked to (a candidate stands for its UIN, or for the UIN it duplicates)."""
    rows = conn.execute(
        """SELECT c.case_id, p.photo_sha256 AS probe, k.photo_sha256 AS candidate, k.score
           FROM cases c
           JOIN enrolments p ON p.enrolment_pk = c.enrolment_pk
           JOIN LATERAL (
               SELECT e.photo_sha256, cc.score FROM case_candidates cc
               JOIN enrolments e ON e.enrolment_pk = cc.enrolment_pk
               WHERE cc.case_id = c.case_id AND NOT cc.synthetic
                 AND coalesce(e.uin, e.duplicate_of) = c.duplicate_of
               ORDER BY cc.score DESC, cc.rank LIMIT 1) k ON true
           WHERE c.status = 'decided' AND c.decision = 'duplicate'
           ORDER BY c.case_id""").fetchall()
    return [GenuinePair("decided_duplicate", int(r["case_id"]), r["probe"], r["candidate"], float(r["score"])) for r in rows]


def duplicate_control_pairs(conn: psycopg.Connection[Any]) -> list[GenuinePair]:
    """Every control pair whose known answer is *duplicate* (active or retired)."""
    rows = conn.execute(
        """SELECT pair_id, probe_sha256, candidate_sha256, score, source_case FROM control_pairs
           WHERE truth = 'duplicate' ORDER BY pair_id""").fetchall()
    return [GenuinePair("control_pair", int(r["pair_id"]), r["probe_sha256"], r["candidate_sha256"], float(r["score"]),
                        r["source_case"]) for r in rows]


def insert_refresh(conn: psycopg.Connection[Any], made_by: str, model_id: str, gallery_size: int, accepted: int,
                   impostor_pairs: int, threshold: float, figures: dict[str, Any]) -> int:
    """Store one refresh (inside the caller's transaction); its id."""
    row = conn.execute(
        """INSERT INTO accuracy_refreshes (made_by, model_id, gallery_size, accepted, impostor_pairs, threshold, figures)
           VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING refresh_id""",
        (made_by, model_id, gallery_size, accepted, impostor_pairs, threshold, Jsonb(figures))).fetchone()
    assert row is not None
    return int(row["refresh_id"])


def _refresh(r: dict[str, Any]) -> Refresh:
    return Refresh(int(r["refresh_id"]), r["at"], r["made_by"], r["model_id"], int(r["gallery_size"]), int(r["accepted"]),
                   int(r["impostor_pairs"]), float(r["threshold"]), dict(r["figures"]))


def latest_refresh(conn: psycopg.Connection[Any]) -> Refresh | None:
    """The newest refresh, or None before the first."""
    row = conn.execute("SELECT * FROM accuracy_refreshes ORDER BY refresh_id DESC LIMIT 1").fetchone()
    return _refresh(row) if row is not None else None


def refresh_history(conn: psycopg.Connection[Any], limit: int = 50) -> list[dict[str, Any]]:
    """The newest refreshes' sizes and thresholds (newest first), without their figures."""
    rows = conn.execute(
        """SELECT refresh_id, at, gallery_size, accepted, impostor_pairs, threshold,
                  (figures -> 'impostor' ->> 'fmr_at_threshold')::double precision AS fmr
           FROM accuracy_refreshes ORDER BY refresh_id DESC LIMIT %s""", (limit,)).fetchall()
    return [dict(r) for r in rows]
