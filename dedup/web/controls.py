"""Control pairs: known-duplicate and known-distinct pairs mixed into the adjudication queue.

A supervisor turns a decided case into a control pair (its probe photo with the candidate
it was linked to, or with its top candidate when it was decided distinct). At ``web.control_rate``
a "next case" claim then gets a *control case* instead of a real one, while real cases wait:
numbered from the cases' own sequence and shown exactly like a real case, so the adjudicator
cannot tell. A control decision is scored against the known answer and changes nothing
else: no UIN, no enrolment state. Each adjudicator sees each pair at most once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from dedup.errors import Conflict, InvalidParameter, NotFound, PermissionDenied
from dedup.store import audit
from dedup.store.users import Actor, authorize

_RANDOM = random.SystemRandom()


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


def add_from_case(conn: psycopg.Connection[Any], actor: Actor, case_id: int) -> int:
    """Make a control pair from a decided case (supervisor); return its id."""
    authorize(actor, "control.manage")
    with conn.transaction():
        case = conn.execute(
            """SELECT c.status, c.decision, c.duplicate_of, e.photo_sha256
               FROM cases c JOIN enrolments e USING (enrolment_pk) WHERE c.case_id = %s""",
            (case_id,),
        ).fetchone()
        if case is None:
            raise NotFound(f"no case {case_id}")
        if case["status"] != "decided" or case["decision"] not in ("duplicate", "distinct"):
            raise InvalidParameter(f"case {case_id} is not decided duplicate or distinct; only those give a known answer")
        cands = conn.execute(
            """SELECT k.rank, k.score, e.photo_sha256, coalesce(e.uin, e.duplicate_of) AS uin
               FROM case_candidates k JOIN enrolments e USING (enrolment_pk)
               WHERE k.case_id = %s AND NOT k.synthetic ORDER BY k.rank""",
            (case_id,),
        ).fetchall()
        if case["decision"] == "duplicate":
            chosen = next((c for c in cands if c["uin"] == case["duplicate_of"]), None)
        else:
            chosen = cands[0] if cands else None
        if chosen is None:
            raise InvalidParameter(f"case {case_id} has no candidate with a photo to pair")
        got = conn.execute(
            """INSERT INTO control_pairs (probe_sha256, candidate_sha256, score, truth, source_case, created_by)
               VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING pair_id""",
            (case["photo_sha256"], chosen["photo_sha256"], chosen["score"], case["decision"], case_id, actor.name),
        ).fetchone()
        if got is None:
            raise Conflict(f"case {case_id}'s pair is already a control pair")
        audit.record(conn, actor.name, "control.add", "control_pair", got["pair_id"], {"source_case": case_id, "truth": case["decision"]})
    return int(got["pair_id"])


def set_active(conn: psycopg.Connection[Any], actor: Actor, pair_id: int, active: bool) -> None:
    """Stop (or resume) putting a pair into the queue (supervisor)."""
    authorize(actor, "control.manage")
    with conn.transaction():
        row = conn.execute("UPDATE control_pairs SET active = %s WHERE pair_id = %s RETURNING pair_id", (active, pair_id)).fetchone()
        if row is None:
            raise NotFound(f"no control pair {pair_id}")
        audit.record(conn, actor.name, "control.activate" if active else "control.deactivate", "control_pair", pair_id, {})


def list_pairs(conn: psycopg.Connection[Any], actor: Actor) -> list[ControlPair]:
    """Every control pair with how often it was shown and answered right (supervisor)."""
    authorize(actor, "control.manage")
    rows = conn.execute(
        """SELECT p.pair_id, p.truth, p.score, p.source_case, p.active, p.created_at, p.created_by,
                  count(k.case_id) AS shown, count(k.decision) AS decided, count(*) FILTER (WHERE k.correct) AS correct
           FROM control_pairs p LEFT JOIN control_cases k USING (pair_id)
           GROUP BY p.pair_id ORDER BY p.pair_id"""
    ).fetchall()
    return [ControlPair(**r) for r in rows]


# ---------------------------------------------------------------- the queue side


def held_control(conn: psycopg.Connection[Any], actor: Actor) -> int | None:
    """The open control case this user holds with a live lease, if any."""
    row = conn.execute(
        "SELECT case_id FROM control_cases WHERE claimed_by = %s AND status = 'open' AND lease_until > now() ORDER BY case_id LIMIT 1",
        (actor.name,),
    ).fetchone()
    return None if row is None else int(row["case_id"])


def maybe_claim_control(conn: psycopg.Connection[Any], actor: Actor, rate: float, lease_seconds: int) -> int | None:
    """With probability ``rate``, and only while real cases wait, open a control case for ``actor``.

    Returns its case id, or None (no draw, no pair this adjudicator has not seen, empty queue,
    or the adjudicator already holds a real case).
    """
    authorize(actor, "queue.claim")
    if rate <= 0.0 or _RANDOM.random() >= rate:
        return None
    with conn.transaction():
        holds_real = conn.execute(
            "SELECT 1 FROM cases WHERE status = 'open' AND claimed_by = %s AND lease_until > now() LIMIT 1", (actor.name,)
        ).fetchone()
        waiting = conn.execute(
            "SELECT 1 FROM cases WHERE status = 'open' AND (claimed_by IS NULL OR lease_until <= now()) LIMIT 1"
        ).fetchone()
        if holds_real is not None or waiting is None:
            return None
        unseen = conn.execute(
            """SELECT pair_id FROM control_pairs p WHERE active AND NOT EXISTS
                   (SELECT 1 FROM control_cases k WHERE k.pair_id = p.pair_id AND k.claimed_by = %s)""",
            (actor.name,),
        ).fetchall()
        if not unseen:
            return None
        pair_id = _RANDOM.choice(unseen)["pair_id"]
        row = conn.execute(
            """INSERT INTO control_cases (pair_id, claimed_by, lease_until) VALUES (%s, %s, now() + make_interval(secs => %s))
               RETURNING case_id""",
            (pair_id, actor.name, lease_seconds),
        ).fetchone()
        # The claim is audited as any claim; the control flag is for supervisors reading the log.
        audit.record(conn, actor.name, "case.claim", "case", row["case_id"], {"lease_seconds": lease_seconds, "control": True})
    return int(row["case_id"])


def renew(conn: psycopg.Connection[Any], actor: Actor, case_id: int, lease_seconds: int) -> None:
    """Renew the lease of a held control case (a repeated "next case")."""
    with conn.transaction():
        conn.execute("UPDATE control_cases SET lease_until = now() + make_interval(secs => %s) WHERE case_id = %s",
                     (lease_seconds, case_id))
        audit.record(conn, actor.name, "case.claim", "case", case_id, {"renewed": True, "lease_seconds": lease_seconds, "control": True})


def is_control(conn: psycopg.Connection[Any], case_id: int) -> bool:
    """Whether this case number belongs to a control case."""
    return conn.execute("SELECT 1 FROM control_cases WHERE case_id = %s", (case_id,)).fetchone() is not None


def control_row(conn: psycopg.Connection[Any], case_id: int, lock: bool = False) -> dict[str, Any]:
    """A control case with its pair (NotFound when there is none)."""
    row = conn.execute(
        f"""SELECT k.*, (k.status = 'open' AND k.lease_until > now()) AS held, p.probe_sha256, p.candidate_sha256,
                   p.score, p.truth
            FROM control_cases k JOIN control_pairs p USING (pair_id) WHERE k.case_id = %s {"FOR UPDATE OF k" if lock else ""}""",
        (case_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"no case {case_id}")
    return row


def check_holder(row: dict[str, Any], actor: Actor, case_id: int) -> None:
    """The same rule (and messages) as real cases: only the holder of a live lease acts."""
    if row["claimed_by"] != actor.name:
        raise PermissionDenied(f"case {case_id} is not claimed by you; only its holder can act on it")
    if row["status"] != "open":
        raise Conflict(f"case {case_id} is no longer open")
    if not row["held"]:
        raise Conflict(f"your lease on case {case_id} expired; claim a case again")


def decide(conn: psycopg.Connection[Any], actor: Actor, case_id: int, decision: str, comment: str | None) -> bool:
    """Record a control decision (scored against the known answer; nothing else changes). Returns correct."""
    authorize(actor, "queue.decide")
    with conn.transaction():
        row = control_row(conn, case_id, lock=True)
        if row["status"] == "decided" and row["claimed_by"] == actor.name:
            if row["decision"] == decision:
                return bool(row["correct"])
            raise Conflict(f"case {case_id} was already decided {row['decision']} by {actor.name}")
        check_holder(row, actor, case_id)
        correct = decision == row["truth"]
        conn.execute(
            """UPDATE control_cases SET status = 'decided', decision = %s, correct = %s, decided_at = now(), comment = %s,
                                        lease_until = NULL WHERE case_id = %s""",
            (decision, correct, comment, case_id),
        )
        audit.record(conn, actor.name, "case.decide", "case", case_id,
                     {"decision": decision, "control": True, "correct": correct, "comment": comment})
    return correct


def release(conn: psycopg.Connection[Any], actor: Actor, case_id: int) -> None:
    """Give a control case back: it is withdrawn (never handed to someone else)."""
    authorize(actor, "queue.release")
    with conn.transaction():
        row = control_row(conn, case_id, lock=True)
        if actor.role != "supervisor" or row["claimed_by"] == actor.name:
            check_holder(row, actor, case_id)
        elif row["status"] != "open":
            raise Conflict(f"case {case_id} is already decided")
        conn.execute("UPDATE control_cases SET status = 'withdrawn', lease_until = NULL WHERE case_id = %s", (case_id,))
        audit.record(conn, actor.name, "case.release", "case", case_id, {"holder": row["claimed_by"], "control": True})
