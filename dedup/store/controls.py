"""Control pairs and control cases in SQL (the rules are :mod:`dedup.adjudication`'s).

A control pair is a probe photo and a candidate photo with a known answer; a control case
is one pair put into the queue for one adjudicator, numbered from the cases' own sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from dedup.errors import NotFound


@dataclass(frozen=True)
class ControlPair:
    """A pair with a known answer."""

    pair_id: int
    truth: str  # duplicate | distinct
    score: float
    source_case: int | None
    active: bool
    created_at: datetime
    created_by: str
    shown: int  # control cases made from it
    decided: int
    correct: int


# ---------------------------------------------------------------- pairs


def decided_case(conn: psycopg.Connection[Any], case_id: int) -> dict[str, Any] | None:
    """A real case's status, decision and probe photo (the source of a pair), or None."""
    return conn.execute(
        """SELECT c.status, c.decision, c.duplicate_of, e.photo_sha256
           FROM cases c JOIN enrolments e USING (enrolment_pk) WHERE c.case_id = %s""",
        (case_id,),
    ).fetchone()


def photo_candidates(conn: psycopg.Connection[Any], case_id: int) -> list[dict[str, Any]]:
    """A case's candidates that have a photo, by rank, with the identity each stands for."""
    return conn.execute(
        """SELECT k.rank, k.score, e.photo_sha256, coalesce(e.uin, e.duplicate_of) AS uin
           FROM case_candidates k JOIN enrolments e USING (enrolment_pk)
           WHERE k.case_id = %s AND NOT k.synthetic ORDER BY k.rank""",
        (case_id,),
    ).fetchall()


def insert_pair(conn: psycopg.Connection[Any], probe_sha256: str, candidate_sha256: str, score: float, truth: str,
                source_case: int, created_by: str) -> int | None:
    """A new pair's id, or None when this pair of photos is already a control pair."""
    got = conn.execute(
        """INSERT INTO control_pairs (probe_sha256, candidate_sha256, score, truth, source_case, created_by)
           VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING pair_id""",
        (probe_sha256, candidate_sha256, score, truth, source_case, created_by),
    ).fetchone()
    return None if got is None else int(got["pair_id"])


def set_active(conn: psycopg.Connection[Any], pair_id: int, active: bool) -> None:
    """Stop or resume putting a pair into the queue; NotFound when there is no such pair."""
    row = conn.execute("UPDATE control_pairs SET active = %s WHERE pair_id = %s RETURNING pair_id", (active, pair_id)).fetchone()
    if row is None:
        raise NotFound(f"no control pair {pair_id}")


def pairs(conn: psycopg.Connection[Any]) -> list[ControlPair]:
    """Every pair with how often it was shown, decided and answered right."""
    rows = conn.execute(
        """SELECT p.pair_id, p.truth, p.score, p.source_case, p.active, p.created_at, p.created_by,
                  count(k.case_id) AS shown, count(k.decision) AS decided, count(*) FILTER (WHERE k.correct) AS correct
           FROM control_pairs p LEFT JOIN control_cases k USING (pair_id)
           GROUP BY p.pair_id ORDER BY p.pair_id"""
    ).fetchall()
    return [ControlPair(**r) for r in rows]


def unseen_pairs(conn: psycopg.Connection[Any], user: str) -> list[int]:
    """Active pairs never put before ``user``."""
    rows = conn.execute(
        """SELECT pair_id FROM control_pairs p WHERE active AND NOT EXISTS
               (SELECT 1 FROM control_cases k WHERE k.pair_id = p.pair_id AND k.claimed_by = %s)""",
        (user,),
    ).fetchall()
    return [int(r["pair_id"]) for r in rows]


# ---------------------------------------------------------------- control cases


def open_control(conn: psycopg.Connection[Any], pair_id: int, user: str, lease_seconds: int, next_in_line: int | None) -> int:
    """A new control case of ``pair_id`` leased to ``user``; its case number.

    It takes the set-aside case number nearest to ``next_in_line`` (the real case a claim
    would have taken; a later number first) with that number's time of opening, so it is numbered like a real
    case of its time; with none set aside, a fresh number.
    """
    got = conn.execute(
        """DELETE FROM reserved_case_numbers WHERE case_id =
               (SELECT case_id FROM reserved_case_numbers ORDER BY case_id < %s, abs(case_id - %s), case_id
                LIMIT 1 FOR UPDATE SKIP LOCKED)
           RETURNING case_id, opened_at""",
        (next_in_line or 0, next_in_line or 0),
    ).fetchone()
    if got is None:
        row = conn.execute(
            """INSERT INTO control_cases (pair_id, claimed_by, lease_until) VALUES (%s, %s, now() + make_interval(secs => %s))
               RETURNING case_id""",
            (pair_id, user, lease_seconds),
        ).fetchone()
    else:
        row = conn.execute(
            """INSERT INTO control_cases (case_id, opened_at, pair_id, claimed_by, lease_until)
               VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s)) RETURNING case_id""",
            (got["case_id"], got["opened_at"], pair_id, user, lease_seconds),
        ).fetchone()
    assert row is not None  # INSERT ... RETURNING
    return int(row["case_id"])


def held_by(conn: psycopg.Connection[Any], user: str) -> int | None:
    """The open control case ``user`` holds with a live lease, if any."""
    row = conn.execute(
        "SELECT case_id FROM control_cases WHERE claimed_by = %s AND status = 'open' AND lease_until > now() ORDER BY case_id LIMIT 1",
        (user,),
    ).fetchone()
    return None if row is None else int(row["case_id"])


def renew_lease(conn: psycopg.Connection[Any], case_id: int, lease_seconds: int) -> None:
    """Extend a control case's lease to ``lease_seconds`` from now."""
    conn.execute("UPDATE control_cases SET lease_until = now() + make_interval(secs => %s) WHERE case_id = %s",
                 (lease_seconds, case_id))


def is_control(conn: psycopg.Connection[Any], case_id: int) -> bool:
    """Whether this case number belongs to a control case."""
    return conn.execute("SELECT 1 FROM control_cases WHERE case_id = %s", (case_id,)).fetchone() is not None


def control_row(conn: psycopg.Connection[Any], case_id: int, lock: bool = False) -> dict[str, Any]:
    """A control case with its pair and the enrolment its probe photo came from (NotFound when there is none).

    ``probe_*`` is the source case's enrolment and ``truth_uin`` the identity a right
    duplicate decision names (the source case's decision). A pair without a source case
    falls back on the first enrolments with its photos (``cand_*`` is the candidate's); only
    then are enrolments searched by photo, which no index serves.
    """
    row = conn.execute(
        f"""SELECT k.*, (k.status = 'open' AND k.lease_until > now()) AS held, p.probe_sha256, p.candidate_sha256,
                   p.score, p.truth, p.source_case,
                   coalesce(se.enrolment_pk, pe.enrolment_pk) AS probe_pk, coalesce(se.centre_id, pe.centre_id) AS probe_centre_id,
                   coalesce(se.enrolment_id, pe.enrolment_id) AS probe_enrolment_id,
                   coalesce(se.captured_at, pe.captured_at) AS probe_captured_at,
                   ce.centre_id AS cand_centre_id, ce.enrolment_id AS cand_enrolment_id, ce.state AS cand_state,
                   ce.uin AS cand_uin, CASE WHEN sc.case_id IS NULL THEN ce.uin ELSE sc.duplicate_of END AS truth_uin
            FROM control_cases k JOIN control_pairs p USING (pair_id)
            LEFT JOIN cases sc ON sc.case_id = p.source_case
            LEFT JOIN enrolments se ON se.enrolment_pk = sc.enrolment_pk
            LEFT JOIN LATERAL (SELECT enrolment_pk, centre_id, enrolment_id, captured_at FROM enrolments
                               WHERE sc.case_id IS NULL AND photo_sha256 = p.probe_sha256 ORDER BY enrolment_pk LIMIT 1) pe ON true
            LEFT JOIN LATERAL (SELECT centre_id, enrolment_id, state, coalesce(uin, duplicate_of) AS uin FROM enrolments
                               WHERE sc.case_id IS NULL AND photo_sha256 = p.candidate_sha256 ORDER BY enrolment_pk LIMIT 1) ce ON true
            WHERE k.case_id = %s {"FOR UPDATE OF k" if lock else ""}""",
        (case_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"no case {case_id}")
    return row


def close_control(conn: psycopg.Connection[Any], case_id: int, decision: str, duplicate_of: str | None, correct: bool,
                  comment: str | None) -> None:
    """Record a control decision (scored against the pair's answer)."""
    conn.execute(
        """UPDATE control_cases SET status = 'decided', decision = %s, duplicate_of = %s, correct = %s, decided_at = now(),
                                    comment = %s, lease_until = NULL WHERE case_id = %s""",
        (decision, duplicate_of, correct, comment, case_id),
    )


def withdraw(conn: psycopg.Connection[Any], case_id: int) -> None:
    """Take a control case out of the queue (it is never handed to someone else)."""
    conn.execute("UPDATE control_cases SET status = 'withdrawn', lease_until = NULL WHERE case_id = %s", (case_id,))
