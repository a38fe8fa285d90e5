"""Cases of the adjudication queue in SQL: opening (``dedup run``), listing, claiming with a
lease (``SELECT ... FOR UPDATE SKIP LOCKED``), reading, closing, and the web's note of a decision.

Only queries live here; who may claim, see or decide is :mod:`dedup.adjudication`'s. Times
are the database's (``now()``), so leases do not depend on the clocks of the adjudicators'
machines. Every function runs inside the caller's transaction when there is one.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from dedup.errors import NotFound

# Share of opened cases after which one case number is set aside for a control case (see
# schemas/sql/0007_controls.sql); random, so the gaps follow no pattern.
RESERVE_SHARE = 0.25
_RANDOM = random.SystemRandom()


@dataclass(frozen=True)
class NewCandidate:
    """A candidate found by ``dedup run`` for a probe (before the case exists)."""

    gallery_row: int | None  # None: found in the same unit or in flight (not yet in the gallery)
    enrolment_pk: int | None  # None: a synthetic gallery row
    score: float
    found_in: str  # gallery | batch | in_flight


@dataclass(frozen=True)
class CaseSummary:
    """A line of ``dedup queue list``."""

    case_id: int
    centre_id: str
    enrolment_id: str
    opened_at: dt.datetime
    status: str  # open | decided
    claimed_by: str | None
    lease_until: dt.datetime | None
    candidates: int
    top_score: float | None
    decision: str | None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("opened_at", "lease_until"):
            d[k] = d[k].isoformat() if d[k] is not None else None
        return d


# ---------------------------------------------------------------- opening (dedup run)


def open_case(conn: psycopg.Connection[Any], enrolment_pk: int, candidates: list[NewCandidate]) -> int:
    """Open the case of an enrolment with its candidates (highest score first); idempotent.

    Runs inside the caller's transaction. A case that already exists for the enrolment is
    returned as it is, so a rerun of ``dedup run`` opens nothing twice.
    """
    if not candidates:
        raise ValueError("a case needs at least one candidate")
    got = conn.execute(
        "INSERT INTO cases (enrolment_pk) VALUES (%s) ON CONFLICT (enrolment_pk) DO NOTHING RETURNING case_id",
        (enrolment_pk,),
    ).fetchone()
    if got is None:
        existing = conn.execute("SELECT case_id FROM cases WHERE enrolment_pk = %s", (enrolment_pk,)).fetchone()
        assert existing is not None  # the insert conflicted on it
        return int(existing["case_id"])
    case_id = int(got["case_id"])
    ordered = sorted(candidates, key=lambda c: (-c.score, c.enrolment_pk or 0, c.gallery_row or 0))
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO case_candidates (case_id, rank, gallery_row, enrolment_pk, synthetic, score, found_in)
               VALUES (%s, %s, %s, %s, %s, %s, %s)""",
            [(case_id, i, c.gallery_row, c.enrolment_pk, c.enrolment_pk is None, float(c.score), c.found_in)
             for i, c in enumerate(ordered)],
        )
    conn.execute(
        "UPDATE enrolments SET state = 'adjudication', reason = NULL, detail = NULL, updated_at = now() WHERE enrolment_pk = %s",
        (enrolment_pk,),
    )
    if _RANDOM.random() < RESERVE_SHARE:
        conn.execute("INSERT INTO reserved_case_numbers (case_id) VALUES (nextval('cases_case_id_seq'))")
    return case_id


# ---------------------------------------------------------------- the queue


def summaries(conn: psycopg.Connection[Any], include_decided: bool, limit: int) -> list[CaseSummary]:
    """Open cases, oldest first (and decided ones with ``include_decided``)."""
    where = "" if include_decided else "WHERE c.status = 'open'"
    rows = conn.execute(
        f"""SELECT c.case_id, e.centre_id, e.enrolment_id, c.opened_at, c.status,
                   CASE WHEN c.lease_until > now() THEN c.claimed_by END AS claimed_by,
                   CASE WHEN c.lease_until > now() THEN c.lease_until END AS lease_until,
                   (SELECT count(*) FROM case_candidates k WHERE k.case_id = c.case_id) AS candidates,
                   (SELECT max(score) FROM case_candidates k WHERE k.case_id = c.case_id) AS top_score,
                   c.decision
            FROM cases c JOIN enrolments e USING (enrolment_pk) {where}
            ORDER BY c.status DESC, c.opened_at, c.case_id LIMIT %s""",
        (limit,),
    ).fetchall()
    return [CaseSummary(**r) for r in rows]


def counts(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """What the queue shows: cases waiting, cases being worked on, the oldest waiting one's age in seconds.

    A control case held with a live lease counts as a real claim would: one more held, one
    fewer waiting, and the oldest waiting case is the next one in line. So a control claim
    moves the counters exactly as a real claim does.
    """
    row = conn.execute(
        """WITH waiting AS (SELECT opened_at, case_id FROM cases
                            WHERE status = 'open' AND (claimed_by IS NULL OR lease_until <= now())),
                controls AS (SELECT count(*) AS n FROM control_cases WHERE status = 'open' AND lease_until > now())
           SELECT (SELECT count(*) FROM waiting) AS waiting,
                  (SELECT count(*) FROM cases WHERE status = 'open' AND claimed_by IS NOT NULL AND lease_until > now()) AS held,
                  (SELECT n FROM controls) AS controls,
                  extract(epoch FROM now() - (SELECT opened_at FROM waiting ORDER BY opened_at, case_id
                                              OFFSET (SELECT n FROM controls) LIMIT 1)) AS oldest_seconds"""
    ).fetchone()
    assert row is not None  # an aggregate query has one row
    controls = int(row["controls"])
    return {"waiting": max(0, int(row["waiting"]) - controls), "held": int(row["held"]) + controls,
            "oldest_seconds": None if row["oldest_seconds"] is None else float(row["oldest_seconds"])}


def held_by(conn: psycopg.Connection[Any], user: str, lock: bool = False) -> int | None:
    """The oldest open case ``user`` holds with a live lease (row-locked with ``lock``), if any."""
    row = conn.execute(
        f"""SELECT case_id FROM cases WHERE status = 'open' AND claimed_by = %s AND lease_until > now()
            ORDER BY opened_at, case_id LIMIT 1 {"FOR UPDATE" if lock else ""}""",
        (user,),
    ).fetchone()
    return None if row is None else int(row["case_id"])


def oldest_waiting(conn: psycopg.Connection[Any]) -> int | None:
    """The number of the open case next in line (the one a real claim would take), if any."""
    row = conn.execute(
        """SELECT case_id FROM cases WHERE status = 'open' AND (claimed_by IS NULL OR lease_until <= now())
           ORDER BY opened_at, case_id LIMIT 1"""
    ).fetchone()
    return None if row is None else int(row["case_id"])


def renew_lease(conn: psycopg.Connection[Any], case_id: int, lease_seconds: int) -> None:
    """Extend the lease of a held case to ``lease_seconds`` from now."""
    conn.execute("UPDATE cases SET lease_until = now() + make_interval(secs => %s) WHERE case_id = %s", (lease_seconds, case_id))


def claim_oldest(conn: psycopg.Connection[Any], user: str, lease_seconds: int) -> tuple[int, str | None] | None:
    """Lease the oldest case nobody holds to ``user``: (case_id, whose lease ran out) or None.

    SKIP LOCKED makes two concurrent claims take different cases, never the same one.
    """
    got = conn.execute(
        """WITH pick AS (
               SELECT case_id, claimed_by AS previous FROM cases
               WHERE status = 'open' AND (claimed_by IS NULL OR lease_until <= now())
               ORDER BY opened_at, case_id LIMIT 1
               FOR UPDATE SKIP LOCKED)
           UPDATE cases c SET claimed_by = %s, lease_until = now() + make_interval(secs => %s)
           FROM pick WHERE c.case_id = pick.case_id
           RETURNING c.case_id, pick.previous""",
        (user, lease_seconds),
    ).fetchone()
    return None if got is None else (int(got["case_id"]), got["previous"])


def clear_claim(conn: psycopg.Connection[Any], case_id: int) -> None:
    """Give a case back to the queue."""
    conn.execute("UPDATE cases SET claimed_by = NULL, lease_until = NULL WHERE case_id = %s", (case_id,))


# ---------------------------------------------------------------- one case


def is_case(conn: psycopg.Connection[Any], case_id: int) -> bool:
    """Whether a real case has this number."""
    return conn.execute("SELECT 1 FROM cases WHERE case_id = %s", (case_id,)).fetchone() is not None


def case_row(conn: psycopg.Connection[Any], case_id: int, lock: bool = False) -> dict[str, Any]:
    """A case with its probe enrolment (row-locked with ``lock``); NotFound when there is none."""
    row = conn.execute(
        f"""SELECT c.*, (c.lease_until IS NOT NULL AND c.lease_until > now()) AS held,
                   e.centre_id, e.enrolment_id, e.captured_at, e.photo_sha256, e.state, e.uin
            FROM cases c JOIN enrolments e USING (enrolment_pk) WHERE c.case_id = %s
            {"FOR UPDATE OF c" if lock else ""}""",
        (case_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"no case {case_id}")
    return row


def candidate_rows(conn: psycopg.Connection[Any], case_id: int) -> list[dict[str, Any]]:
    """A case's candidates by rank, with the enrolment and identity each stands for (none when synthetic)."""
    return conn.execute(
        """SELECT k.rank, k.score, k.found_in, k.synthetic, k.gallery_row, e.centre_id, e.enrolment_id, e.state,
                  coalesce(e.uin, e.duplicate_of) AS uin, e.photo_sha256
           FROM case_candidates k LEFT JOIN enrolments e USING (enrolment_pk)
           WHERE k.case_id = %s ORDER BY k.rank""",
        (case_id,),
    ).fetchall()


def candidate_uins(conn: psycopg.Connection[Any], case_id: int) -> set[str]:
    """The identities (UINs) among a case's candidates."""
    rows = conn.execute(
        """SELECT coalesce(e.uin, e.duplicate_of) AS uin FROM case_candidates k JOIN enrolments e USING (enrolment_pk)
           WHERE k.case_id = %s AND coalesce(e.uin, e.duplicate_of) IS NOT NULL""",
        (case_id,),
    ).fetchall()
    return {r["uin"] for r in rows}


def link_duplicate(conn: psycopg.Connection[Any], enrolment_pk: int, uin: str) -> None:
    """Mark an enrolment as the same person as an existing identity."""
    conn.execute(
        """UPDATE enrolments SET state = 'duplicate', duplicate_of = %s, reason = 'duplicate', detail = %s, updated_at = now()
           WHERE enrolment_pk = %s""",
        (uin, f"same person as UIN {uin}", enrolment_pk),
    )


def request_recapture(conn: psycopg.Connection[Any], enrolment_pk: int, detail: str) -> None:
    """Mark an enrolment as needing a new photo (``detail`` is shown to the centre)."""
    conn.execute(
        """UPDATE enrolments SET state = 'recapture', reason = 'recapture_requested', detail = %s, updated_at = now()
           WHERE enrolment_pk = %s""",
        (detail, enrolment_pk),
    )


def close_case(conn: psycopg.Connection[Any], case_id: int, decision: str, duplicate_of: str | None, decided_by: str,
               comment: str | None) -> None:
    """Record a case's decision and end its claim."""
    conn.execute(
        """UPDATE cases SET status = 'decided', decision = %s, duplicate_of = %s, decided_by = %s, decided_at = now(),
                           comment = %s, claimed_by = NULL, lease_until = NULL
           WHERE case_id = %s""",
        (decision, duplicate_of, decided_by, comment, case_id),
    )


def last_claimed_at(conn: psycopg.Connection[Any], case_id: int, user: str) -> dt.datetime | None:
    """When ``user`` last claimed the case afresh (renewals do not count), from the audit log."""
    row = conn.execute(
        """SELECT max(at) AS at FROM audit WHERE object_type = 'case' AND object_id = %s AND actor = %s
           AND action = 'case.claim' AND NOT (detail ? 'renewed')""",
        (str(case_id), user),
    ).fetchone()
    return None if row is None else row["at"]


def seconds_since(conn: psycopg.Connection[Any], since: dt.datetime | None) -> float | None:
    """Seconds from ``since`` to the database's now."""
    if since is None:
        return None
    row = conn.execute("SELECT extract(epoch FROM now() - %s::timestamptz) AS s", (since,)).fetchone()
    assert row is not None
    return float(row["s"])


# ---------------------------------------------------------------- the web's note of a decision


def note_web_decision(conn: psycopg.Connection[Any], case_id: int, control: bool, decided_by: str, decision: str,
                      candidate: int | None, blind: bool, top_score: float | None, seconds: float | None) -> None:
    """Keep how the web decision was made (blind, top score, seconds from the claim); once per case."""
    conn.execute(
        """INSERT INTO web_decisions (case_id, control, decided_by, decision, candidate, blind, top_score, seconds)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (case_id) DO NOTHING""",
        (case_id, control, decided_by, decision, candidate, blind, top_score, seconds),
    )


def web_decision(conn: psycopg.Connection[Any], case_id: int) -> dict[str, Any] | None:
    """The web's note of a decision, if the web made it."""
    return conn.execute("SELECT * FROM web_decisions WHERE case_id = %s", (case_id,)).fetchone()
