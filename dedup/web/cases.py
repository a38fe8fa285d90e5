"""The case page's data, for real cases and control cases alike.

Real cases go through :mod:`dedup.queue.cases` (claim, show, decide, release: the same
rules and audit rows as ``dedup queue``); control cases through :mod:`dedup.web.controls`.
Both become one :class:`CaseView`, so the page cannot show which is which. Photos are read
here, after the access check, and every read is audited.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from dedup.errors import InvalidParameter, NotFound, PermissionDenied
from dedup.ingest.photos import PhotoStore
from dedup.queue import cases as realcases
from dedup.store import audit
from dedup.store.users import Actor, authorize
from dedup.web import controls

DECISIONS = realcases.DECISIONS


@dataclass(frozen=True)
class Candidate:
    """One candidate as the page shows it (no UIN, no enrolment id: the photos decide)."""

    rank: int
    score: float
    found_in: str
    synthetic: bool
    has_photo: bool
    identity: str | None  # the UIN a duplicate decision links to (None: pending or synthetic)

    @property
    def number(self) -> int:
        """1-based, as shown and as the keyboard shortcut."""
        return self.rank + 1


@dataclass(frozen=True)
class CaseView:
    """A case as the web app shows it."""

    case_id: int
    control: bool  # never rendered on the case page
    status: str  # open | decided | withdrawn
    holder: str | None
    held_by_me: bool
    lease_until: dt.datetime | None
    decision: str | None
    decided_by: str | None
    decided_at: dt.datetime | None
    comment: str | None
    duplicate_rank: int | None
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def top_score(self) -> float | None:
        return max((c.score for c in self.candidates), default=None)


# ---------------------------------------------------------------- claiming


def queue_counts(conn: psycopg.Connection[Any], actor: Actor) -> dict[str, Any]:
    """How many real cases wait (not held), how many are held, and the oldest waiting one's age."""
    authorize(actor, "queue.list")
    row = conn.execute(
        """SELECT count(*) FILTER (WHERE claimed_by IS NULL OR lease_until <= now()) AS waiting,
                  count(*) FILTER (WHERE claimed_by IS NOT NULL AND lease_until > now()) AS held,
                  extract(epoch FROM now() - min(opened_at) FILTER (WHERE claimed_by IS NULL OR lease_until <= now())) AS oldest_seconds
           FROM cases WHERE status = 'open'"""
    ).fetchone()
    mine = controls.held_control(conn, actor)
    if mine is None:
        held = conn.execute("SELECT case_id FROM cases WHERE status = 'open' AND claimed_by = %s AND lease_until > now() LIMIT 1",
                            (actor.name,)).fetchone()
        mine = None if held is None else int(held["case_id"])
    return {"waiting": int(row["waiting"]), "held": int(row["held"]),
            "oldest_seconds": None if row["oldest_seconds"] is None else float(row["oldest_seconds"]), "mine": mine}


def next_case(conn: psycopg.Connection[Any], actor: Actor, lease_seconds: int, control_rate: float) -> int | None:
    """Claim the next case (a held one comes back with a renewed lease); None when the queue is empty."""
    authorize(actor, "queue.claim")
    held = controls.held_control(conn, actor)
    if held is not None:
        controls.renew(conn, actor, held, lease_seconds)
        return held
    control = controls.maybe_claim_control(conn, actor, control_rate, lease_seconds)
    if control is not None:
        return control
    got = realcases.claim_next(conn, actor, lease_seconds)
    return None if got is None else got[0]


# ---------------------------------------------------------------- showing


def show(conn: psycopg.Connection[Any], actor: Actor, case_id: int) -> CaseView:
    """The case (audited as a view): its holder, a supervisor, or who decided it."""
    authorize(actor, "queue.show")
    if controls.is_control(conn, case_id):
        return _show_control(conn, actor, case_id)
    d = realcases.show_case(conn, actor, case_id, "")
    cands = [Candidate(c.rank, c.score, c.found_in, c.synthetic, c.photo is not None and not c.synthetic,
                       c.uin if c.state in ("accepted", "duplicate") else None) for c in d.candidates]
    rank = next((c.rank for c in cands if d.duplicate_of is not None and c.identity == d.duplicate_of), None)
    return CaseView(d.case_id, False, d.status, d.claimed_by, d.claimed_by == actor.name, d.lease_until, d.decision,
                    d.decided_by, d.decided_at, d.comment, rank, cands)


def _show_control(conn: psycopg.Connection[Any], actor: Actor, case_id: int) -> CaseView:
    with conn.transaction():
        row = controls.control_row(conn, case_id)
        mine = row["claimed_by"] == actor.name
        if actor.role != "supervisor" and not ((mine and row["held"]) or (mine and row["status"] == "decided")):
            raise PermissionDenied(f"case {case_id} is not held by {actor.name!r}; claim one with `next case`")
        audit.record(conn, actor.name, "case.view", "case", case_id, {"candidates": 1, "control": True})
    decided = row["status"] == "decided"
    cand = Candidate(0, float(row["score"]), "gallery", False, True, "known pair")  # identity: never shown
    return CaseView(case_id, True, row["status"], row["claimed_by"] if row["held"] else None, mine and row["held"],
                    row["lease_until"] if row["held"] else None, row["decision"], row["claimed_by"] if decided else None,
                    row["decided_at"], row["comment"], 0 if row["decision"] == "duplicate" else None, [cand])


def photo(conn: psycopg.Connection[Any], actor: Actor, store: Path, case_id: int, which: str, kind: str) -> bytes:
    """The bytes of one photo of a case (``which``: ``probe`` or a candidate number, 1-based).

    Only the holder of a live claim, or a supervisor, gets them; each read is audited.
    """
    authorize(actor, "queue.show")
    if which == "probe":
        rank = None
    else:
        try:
            rank = int(which) - 1
        except ValueError:
            raise NotFound(f"case {case_id} has no photo {which!r}") from None
        if rank < 0:
            raise NotFound(f"case {case_id} has no candidate {which}")
    with conn.transaction():
        if controls.is_control(conn, case_id):
            row = controls.control_row(conn, case_id)
            allowed = actor.role == "supervisor" or (row["claimed_by"] == actor.name and row["held"])
            if rank is not None and rank != 0:
                raise NotFound(f"case {case_id} has no candidate {which}")
            sha = row["probe_sha256"] if rank is None else row["candidate_sha256"]
        else:
            row = conn.execute(
                """SELECT c.claimed_by, c.status, (c.lease_until > now()) AS held, e.photo_sha256
                   FROM cases c JOIN enrolments e USING (enrolment_pk) WHERE c.case_id = %s""",
                (case_id,),
            ).fetchone()
            if row is None:
                raise NotFound(f"no case {case_id}")
            allowed = actor.role == "supervisor" or (row["claimed_by"] == actor.name and bool(row["held"]) and row["status"] == "open")
            sha = row["photo_sha256"]
            if rank is not None:
                cand = conn.execute(
                    """SELECT k.synthetic, e.photo_sha256 FROM case_candidates k LEFT JOIN enrolments e USING (enrolment_pk)
                       WHERE k.case_id = %s AND k.rank = %s""",
                    (case_id, rank),
                ).fetchone()
                if cand is None:
                    raise NotFound(f"case {case_id} has no candidate {which}")
                sha = cand["photo_sha256"]
        if not allowed:
            raise PermissionDenied(f"the photos of case {case_id} are shown only to the adjudicator holding it (or a supervisor)")
        if sha is None:
            raise NotFound(f"candidate {which} of case {case_id} is a synthetic template, no photo")
        audit.record(conn, actor.name, "case.photo", "case", case_id,
                     {"photo": "probe" if rank is None else f"candidate {rank + 1}", "kind": kind})
    return PhotoStore(store).read(sha)


# ---------------------------------------------------------------- deciding


@dataclass(frozen=True)
class Decided:
    """What a web decision did, for the page shown after it."""

    case_id: int
    decision: str
    candidate: int | None  # rank
    changed: bool


def decide(conn: psycopg.Connection[Any], actor: Actor, case_id: int, decision: str, candidate: str | None,
           comment: str | None, blind: bool) -> Decided:
    """Decide a held case (real or control) and record the web's note of it (blind, score, time)."""
    authorize(actor, "queue.decide")
    _check_may_act(conn, actor, case_id)  # who may act comes before what they sent
    if decision not in DECISIONS:
        raise InvalidParameter(f"decision must be one of {', '.join(DECISIONS)}")
    comment = (comment or "").strip() or None
    rank: int | None = None
    if decision == "duplicate":
        try:
            rank = int(candidate or "") - 1
        except ValueError:
            raise InvalidParameter("a duplicate decision names the candidate it duplicates") from None
    elif candidate:
        raise InvalidParameter("only a duplicate decision names a candidate")
    with conn.transaction():
        if controls.is_control(conn, case_id):
            row = controls.control_row(conn, case_id)
            if rank is not None and rank != 0:
                raise InvalidParameter(f"case {case_id} has no candidate {rank + 1}")
            changed = row["status"] == "open"
            controls.decide(conn, actor, case_id, decision, comment)
            top = float(row["score"])
            seconds = _seconds(conn, row["opened_at"])
            control = True
        else:
            uin = None
            cands = conn.execute(
                """SELECT k.rank, k.score, e.state, coalesce(e.uin, e.duplicate_of) AS uin
                   FROM case_candidates k LEFT JOIN enrolments e USING (enrolment_pk) WHERE k.case_id = %s""",
                (case_id,),
            ).fetchall()
            if not cands and conn.execute("SELECT 1 FROM cases WHERE case_id = %s", (case_id,)).fetchone() is None:
                raise NotFound(f"no case {case_id}")
            if rank is not None:
                chosen = next((c for c in cands if c["rank"] == rank), None)
                if chosen is None:
                    raise InvalidParameter(f"case {case_id} has no candidate {rank + 1}")
                if chosen["uin"] is None or chosen["state"] not in ("accepted", "duplicate"):
                    raise InvalidParameter(f"candidate {rank + 1} has no identity yet (synthetic, or still pending); "
                                           "decide distinct or recapture, or release the case")
                uin = chosen["uin"]
            result = realcases.decide(conn, actor, case_id, decision, uin, comment)
            changed = result.changed
            top = max((float(c["score"]) for c in cands), default=None)
            claimed = conn.execute(
                """SELECT max(at) AS at FROM audit WHERE object_type = 'case' AND object_id = %s AND actor = %s
                   AND action = 'case.claim' AND NOT (detail ? 'renewed')""",
                (str(case_id), actor.name),
            ).fetchone()["at"]
            seconds = _seconds(conn, claimed)
            control = False
        if changed:
            conn.execute(
                """INSERT INTO web_decisions (case_id, control, decided_by, decision, candidate, blind, top_score, seconds)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (case_id) DO NOTHING""",
                (case_id, control, actor.name, decision, rank, blind, top, seconds),
            )
            if blind:
                audit.record(conn, actor.name, "case.score_shown", "case", case_id, {"after_decision": decision, "top_score": top})
    return Decided(case_id, decision, rank, changed)


def _check_may_act(conn: psycopg.Connection[Any], actor: Actor, case_id: int) -> None:
    """PermissionDenied/Conflict unless ``actor`` holds the open case (a decided case is left to decide's rules)."""
    if controls.is_control(conn, case_id):
        row = controls.control_row(conn, case_id)
        if not (row["status"] == "decided" and row["claimed_by"] == actor.name):
            controls.check_holder(row, actor, case_id)
        return
    row = realcases._case_row(conn, case_id, lock=False)
    if row["status"] == "open":
        realcases._check_holder(row, actor, case_id)


def _seconds(conn: psycopg.Connection[Any], since: dt.datetime | None) -> float | None:
    if since is None:
        return None
    return float(conn.execute("SELECT extract(epoch FROM now() - %s::timestamptz) AS s", (since,)).fetchone()["s"])


def release(conn: psycopg.Connection[Any], actor: Actor, case_id: int) -> None:
    """Give a held case back (real: to the queue; control: withdrawn)."""
    authorize(actor, "queue.release")
    if controls.is_control(conn, case_id):
        controls.release(conn, actor, case_id)
    else:
        realcases.release(conn, actor, case_id)


def recorded(conn: psycopg.Connection[Any], case_id: int) -> dict[str, Any] | None:
    """The web's note of a decision (blind, top score, seconds), if the web made it."""
    return conn.execute("SELECT * FROM web_decisions WHERE case_id = %s", (case_id,)).fetchone()
