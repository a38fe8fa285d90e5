"""The one holder rule, for real and control cases alike.

Only the holder of a live lease acts on an open case; it, a supervisor, or whoever decided
it may see it. To anyone else (an adjudicator), every case they do not hold gets one answer,
:class:`dedup.errors.NotYours`: the same status and words whether the case exists, is
held, by whom, was decided, how, or how many candidates it has, and whether it is a control
case. Every refusal is audited (``case.refused``, with the real reason for supervisors).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from dedup.errors import Conflict, NotFound, NotYours, PermissionDenied
from dedup.store import audit
from dedup.store.users import Actor


@dataclass(frozen=True)
class Hold:
    """Who holds a case and until when; who decided it and when. The same fields for both kinds."""

    case_id: int
    status: str  # open | decided | withdrawn
    claimed_by: str | None  # open cases only
    held: bool  # a live lease
    lease_until: dt.datetime | None
    decided_by: str | None
    decided_at: dt.datetime | None

    @classmethod
    def of_case(cls, row: dict[str, Any]) -> Hold:
        """From :func:`dedup.store.cases.case_row`."""
        is_open = row["status"] == "open"
        return cls(row["case_id"], row["status"], row["claimed_by"] if is_open else None, bool(row["held"]) and is_open,
                   row["lease_until"], row["decided_by"], row["decided_at"])

    @classmethod
    def of_control(cls, row: dict[str, Any]) -> Hold:
        """From :func:`dedup.store.controls.control_row` (its claimant is who decides it)."""
        is_open = row["status"] == "open"
        decided = row["status"] == "decided"
        return cls(row["case_id"], row["status"], row["claimed_by"] if is_open else None, bool(row["held"]) and is_open,
                   row["lease_until"], row["claimed_by"] if decided else None, row["decided_at"])

    def mine(self, actor: Actor) -> bool:
        """Whether ``actor`` holds it with a live lease."""
        return self.claimed_by == actor.name and self.held


def _at(when: dt.datetime | None) -> str:
    return f" at {when:%Y-%m-%d %H:%M:%S} UTC" if when is not None else ""


def _reason(hold: Hold) -> str:
    """Why a case is not someone's, in words for the audit log."""
    if hold.status == "decided":
        return f"decided by {hold.decided_by}"
    if hold.status != "open":
        return hold.status
    if hold.held:
        return f"held by {hold.claimed_by}"
    return f"not held (lease of {hold.claimed_by} ran out)" if hold.claimed_by else "not held"


def missing(case_id: int, actor: Actor) -> NotFound | NotYours:
    """What to raise for a case number that is neither a real nor a control case."""
    if actor.role == "supervisor":
        return NotFound(f"no case {case_id}")
    return NotYours(case_id, "no such case")


def check_holder(hold: Hold, actor: Actor) -> None:
    """Return when ``actor`` holds the open case with a live lease; otherwise raise.

    Their own lease that ran out is a Conflict (they know the case); a supervisor is told
    how things stand; anyone else gets NotYours.
    """
    if hold.status == "open" and hold.claimed_by == actor.name:
        if not hold.held:
            raise Conflict(f"your lease on case {hold.case_id} expired{_at(hold.lease_until)}; "
                           "claim it again with Next case (`dedup queue next`)")
        return
    if hold.decided_by is not None and hold.decided_by == actor.name:
        raise Conflict(f"case {hold.case_id} was already decided by you{_at(hold.decided_at)}")
    if actor.role == "supervisor":
        if hold.status == "decided":
            raise Conflict(f"case {hold.case_id} was already decided by {hold.decided_by}{_at(hold.decided_at)}")
        if hold.status != "open":
            raise Conflict(f"case {hold.case_id} is {hold.status}")
        raise PermissionDenied(f"case {hold.case_id} is {_reason(hold)}; only its holder can decide it")
    raise NotYours(hold.case_id, _reason(hold))


def check_may_view(hold: Hold, actor: Actor) -> None:
    """NotYours unless ``actor`` holds the case, decided it, or is a supervisor."""
    if actor.role != "supervisor" and not hold.mine(actor) and hold.decided_by != actor.name:
        raise NotYours(hold.case_id, _reason(hold))


def check_may_see_photos(hold: Hold, actor: Actor) -> None:
    """Photos go only to the holder of a live claim on an open case, or a supervisor."""
    if actor.role != "supervisor" and not (hold.mine(actor) and hold.status == "open"):
        raise NotYours(hold.case_id, _reason(hold))


@contextlib.contextmanager
def refusals_audited(conn: psycopg.Connection[Any], actor: Actor, case_id: int, action: str) -> Iterator[None]:
    """Audit every refusal of ``action`` on a case (``case.refused``), then let it propagate.

    The row is written once, by the outermost caller: inside a transaction the refusal rolls
    that transaction back, so it is recorded after, on its own.
    """
    try:
        yield
    except (PermissionDenied, Conflict, NotFound) as exc:
        if conn.info.transaction_status == TransactionStatus.IDLE:
            reason = exc.reason if isinstance(exc, NotYours) else str(exc)
            with conn.transaction():
                audit.record(conn, actor.name, "case.refused", "case", case_id, {"action": action, "reason": reason})
        raise
