"""Cases: open, list, claim (``SELECT ... FOR UPDATE SKIP LOCKED`` with a lease), show,
decide, release.

Claiming takes the oldest open case that nobody holds or whose lease has run out; the row
lock with SKIP LOCKED makes two concurrent claims take different cases, never the same one.
Times are the database's (``now()``), so leases do not depend on the clocks of the
adjudicators' machines. Only the holder of an unexpired lease can decide.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg

from dedup.errors import Conflict, InvalidParameter, NotFound, PermissionDenied
from dedup.store import audit
from dedup.store.identities import issue_uin
from dedup.store.users import Actor, authorize
from dedup.uin import is_valid

DECISIONS = ("duplicate", "distinct", "recapture")


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


@dataclass(frozen=True)
class CandidateView:
    """A candidate as an adjudicator sees it."""

    rank: int
    score: float
    found_in: str
    synthetic: bool
    gallery_row: int | None
    centre_id: str | None = None
    enrolment_id: str | None = None
    state: str | None = None
    uin: str | None = None  # the identity it stands for (its UIN, or the UIN it duplicates)
    photo: str | None = None  # path in the deployment's store


@dataclass(frozen=True)
class CaseDetail:
    """A case with its probe enrolment and candidates (``dedup queue show``)."""

    case_id: int
    status: str
    opened_at: dt.datetime
    claimed_by: str | None
    lease_until: dt.datetime | None
    decision: str | None
    duplicate_of: str | None
    decided_by: str | None
    decided_at: dt.datetime | None
    comment: str | None
    enrolment_pk: int
    centre_id: str
    enrolment_id: str
    captured_at: dt.datetime
    photo: str
    candidates: list[CandidateView] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("opened_at", "lease_until", "decided_at", "captured_at"):
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
        return int(conn.execute("SELECT case_id FROM cases WHERE enrolment_pk = %s", (enrolment_pk,)).fetchone()["case_id"])
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
    return case_id


# ---------------------------------------------------------------- adjudicators


def list_cases(conn: psycopg.Connection[Any], actor: Actor, include_decided: bool = False, limit: int = 100) -> list[CaseSummary]:
    """Open cases, oldest first (and decided ones with ``include_decided``); no photos."""
    authorize(actor, "queue.list")
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


def claim_next(conn: psycopg.Connection[Any], actor: Actor, lease_seconds: int) -> tuple[int, bool] | None:
    """Claim the oldest available case; return (case_id, renewed) or None when the queue is empty.

    A user who already holds a case gets it back with a renewed lease (one case at a time).
    """
    authorize(actor, "queue.claim")
    with conn.transaction():
        held = conn.execute(
            """SELECT case_id FROM cases WHERE status = 'open' AND claimed_by = %s AND lease_until > now()
               ORDER BY opened_at, case_id LIMIT 1 FOR UPDATE""",
            (actor.name,),
        ).fetchone()
        if held is not None:
            conn.execute(
                "UPDATE cases SET lease_until = now() + make_interval(secs => %s) WHERE case_id = %s",
                (lease_seconds, held["case_id"]),
            )
            audit.record(conn, actor.name, "case.claim", "case", held["case_id"], {"renewed": True, "lease_seconds": lease_seconds})
            return int(held["case_id"]), True
        got = conn.execute(
            """WITH pick AS (
                   SELECT case_id, claimed_by AS previous FROM cases
                   WHERE status = 'open' AND (claimed_by IS NULL OR lease_until <= now())
                   ORDER BY opened_at, case_id LIMIT 1
                   FOR UPDATE SKIP LOCKED)
               UPDATE cases c SET claimed_by = %s, lease_until = now() + make_interval(secs => %s)
               FROM pick WHERE c.case_id = pick.case_id
               RETURNING c.case_id, pick.previous""",
            (actor.name, lease_seconds),
        ).fetchone()
        if got is None:
            return None
        detail: dict[str, Any] = {"lease_seconds": lease_seconds}
        if got["previous"] is not None:
            detail["expired_lease_of"] = got["previous"]
        audit.record(conn, actor.name, "case.claim", "case", got["case_id"], detail)
        return int(got["case_id"]), False


def show_case(conn: psycopg.Connection[Any], actor: Actor, case_id: int, photo_root: str) -> CaseDetail:
    """A case with its photos' store paths and candidates; audited as a view.

    An adjudicator sees only the case they hold; a supervisor sees any case.
    """
    authorize(actor, "queue.show")
    with conn.transaction():
        row = _case_row(conn, case_id, lock=False)
        if actor.role != "supervisor" and not (row["claimed_by"] == actor.name and row["held"]) and row["decided_by"] != actor.name:
            raise PermissionDenied(f"case {case_id} is not held by {actor.name!r}; claim one with `dedup queue next`")
        cands = conn.execute(
            """SELECT k.rank, k.score, k.found_in, k.synthetic, k.gallery_row, e.centre_id, e.enrolment_id, e.state,
                      coalesce(e.uin, e.duplicate_of) AS uin, e.photo_sha256
               FROM case_candidates k LEFT JOIN enrolments e USING (enrolment_pk)
               WHERE k.case_id = %s ORDER BY k.rank""",
            (case_id,),
        ).fetchall()
        audit.record(conn, actor.name, "case.view", "case", case_id, {"candidates": len(cands)})
    views = [
        CandidateView(c["rank"], float(c["score"]), c["found_in"], c["synthetic"], c["gallery_row"], c["centre_id"],
                      c["enrolment_id"], c["state"], c["uin"], _photo_path(photo_root, c["photo_sha256"]))
        for c in cands
    ]
    return CaseDetail(
        row["case_id"], row["status"], row["opened_at"], row["claimed_by"] if row["held"] else None,
        row["lease_until"] if row["held"] else None, row["decision"], row["duplicate_of"], row["decided_by"],
        row["decided_at"], row["comment"], row["enrolment_pk"], row["centre_id"], row["enrolment_id"],
        row["captured_at"], _photo_path(photo_root, row["photo_sha256"]) or "", views,
    )


@dataclass(frozen=True)
class DecisionResult:
    """What a decision did."""

    case_id: int
    decision: str
    enrolment_state: str
    uin: str | None
    duplicate_of: str | None
    changed: bool  # False when the same decision had already been made

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(conn: psycopg.Connection[Any], actor: Actor, case_id: int, decision: str, duplicate_of: str | None = None,
           comment: str | None = None) -> DecisionResult:
    """Decide a held case: duplicate (of an existing UIN), distinct (issue a UIN) or recapture.

    Deciding the same way again changes nothing; a different decision on a decided case is
    a Conflict.
    """
    authorize(actor, "queue.decide")
    if decision not in DECISIONS:
        raise InvalidParameter(f"decision must be one of {', '.join(DECISIONS)}")
    if (decision == "duplicate") != (duplicate_of is not None):
        raise InvalidParameter("--duplicate-of UIN goes with a duplicate decision, and only with it")
    if duplicate_of is not None and not is_valid(duplicate_of):
        raise InvalidParameter(f"{duplicate_of!r} is not a valid UIN (12 digits with a Verhoeff check digit)")
    if comment is not None and len(comment) > 2000:
        raise InvalidParameter("comment is longer than 2000 characters")
    with conn.transaction():
        row = _case_row(conn, case_id, lock=True)
        if row["status"] == "decided":
            if row["decision"] == decision and row["duplicate_of"] == duplicate_of:
                return DecisionResult(case_id, decision, row["state"], row["uin"], row["duplicate_of"], changed=False)
            raise Conflict(f"case {case_id} was already decided {row['decision']} by {row['decided_by']} at {row['decided_at']:%Y-%m-%d %H:%M:%S}")
        _check_holder(row, actor, case_id)
        pk = row["enrolment_pk"]
        uin = None
        if decision == "duplicate":
            allowed = _candidate_uins(conn, case_id)
            if duplicate_of not in allowed:
                shown = ", ".join(sorted(allowed)) or "none yet (candidates still pending)"
                raise InvalidParameter(f"UIN {duplicate_of} is not an identity among case {case_id}'s candidates; their UINs: {shown}")
            conn.execute(
                """UPDATE enrolments SET state = 'duplicate', duplicate_of = %s, reason = 'duplicate', detail = %s, updated_at = now()
                   WHERE enrolment_pk = %s""",
                (duplicate_of, f"same person as UIN {duplicate_of}", pk),
            )
            state = "duplicate"
        elif decision == "distinct":
            uin = issue_uin(conn, pk, actor.name)
            state = "accepted"
        else:
            conn.execute(
                """UPDATE enrolments SET state = 'recapture', reason = 'recapture_requested', detail = %s, updated_at = now()
                   WHERE enrolment_pk = %s""",
                (comment or "a new photo is needed", pk),
            )
            state = "recapture"
        conn.execute(
            """UPDATE cases SET status = 'decided', decision = %s, duplicate_of = %s, decided_by = %s, decided_at = now(),
                               comment = %s, claimed_by = NULL, lease_until = NULL
               WHERE case_id = %s""",
            (decision, duplicate_of, actor.name, comment, case_id),
        )
        audit.record(conn, actor.name, "case.decide", "case", case_id,
                     {"decision": decision, "duplicate_of": duplicate_of, "uin": uin, "comment": comment})
    return DecisionResult(case_id, decision, state, uin, duplicate_of, changed=True)


def release(conn: psycopg.Connection[Any], actor: Actor, case_id: int) -> None:
    """Give a held case back to the queue (its holder, or any supervisor)."""
    authorize(actor, "queue.release")
    with conn.transaction():
        row = _case_row(conn, case_id, lock=True)
        if row["status"] != "open":
            raise Conflict(f"case {case_id} is already decided")
        if actor.role != "supervisor":
            _check_holder(row, actor, case_id)
        elif not row["held"]:
            raise Conflict(f"case {case_id} is not held by anyone")
        conn.execute("UPDATE cases SET claimed_by = NULL, lease_until = NULL WHERE case_id = %s", (case_id,))
        audit.record(conn, actor.name, "case.release", "case", case_id, {"holder": row["claimed_by"]})


def _case_row(conn: psycopg.Connection[Any], case_id: int, lock: bool) -> dict[str, Any]:
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


def _check_holder(row: dict[str, Any], actor: Actor, case_id: int) -> None:
    if row["claimed_by"] != actor.name:
        who = f"held by {row['claimed_by']}" if row["held"] else "not claimed by you"
        raise PermissionDenied(f"case {case_id} is {who}; only its holder can act on it (claim with `dedup queue next`)")
    if not row["held"]:
        raise Conflict(f"your lease on case {case_id} expired at {row['lease_until']:%Y-%m-%d %H:%M:%S} UTC; claim it again with `dedup queue next`")


def _candidate_uins(conn: psycopg.Connection[Any], case_id: int) -> set[str]:
    rows = conn.execute(
        """SELECT coalesce(e.uin, e.duplicate_of) AS uin FROM case_candidates k JOIN enrolments e USING (enrolment_pk)
           WHERE k.case_id = %s AND coalesce(e.uin, e.duplicate_of) IS NOT NULL""",
        (case_id,),
    ).fetchall()
    return {r["uin"] for r in rows}


def _photo_path(root: str, sha256: str | None) -> str | None:
    return None if sha256 is None else f"{root}/{sha256[:2]}/{sha256}"
