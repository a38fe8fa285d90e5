"""The queue: list, count, claim the next case (a real case or a control pair), release.

Claiming takes the oldest open case that nobody holds or whose lease has run out; a user who
already holds a case gets it back with a renewed lease (one case at a time). At
``web.control_rate`` a claim opens a control case instead, while real cases wait, so the
adjudicator cannot tell it from a real one; each adjudicator sees each pair at most once.
The CLI's ``dedup queue next`` and the web's "next case" are this one function.
"""

from __future__ import annotations

import random
from typing import Any

import psycopg

from dedup.adjudication.holder import Hold, check_holder, missing, refusals_audited
from dedup.errors import Conflict, NotFound
from dedup.store import audit
from dedup.store import cases as store_cases
from dedup.store import controls as store_controls
from dedup.store.cases import CaseSummary
from dedup.store.users import Actor, authorize

_RANDOM = random.SystemRandom()


def list_cases(conn: psycopg.Connection[Any], actor: Actor, include_decided: bool = False, limit: int = 100) -> list[CaseSummary]:
    """Open real cases, oldest first (and decided ones with ``include_decided``); no photos."""
    authorize(actor, "queue.list")
    return store_cases.summaries(conn, include_decided, limit)


def queue_counts(conn: psycopg.Connection[Any], actor: Actor) -> dict[str, Any]:
    """How many real cases wait (not held), how many are held, the oldest waiting one's age, and the case ``actor`` holds."""
    authorize(actor, "queue.list")
    counts = store_cases.counts(conn)
    mine = store_controls.held_by(conn, actor.name)
    if mine is None:
        mine = store_cases.held_by(conn, actor.name)
    return {**counts, "mine": mine}


def claim_next(conn: psycopg.Connection[Any], actor: Actor, lease_seconds: int, control_rate: float) -> int | None:
    """Claim the next case and return its number (a held one comes back with a renewed lease); None when the queue is empty.

    With probability ``control_rate``, while real cases wait and the adjudicator has a pair
    not yet seen, the claim opens a control case instead. The same queries run before the
    draw whichever way it falls, so the time a claim takes does not tell the kinds apart.
    """
    authorize(actor, "queue.claim")
    held = store_controls.held_by(conn, actor.name)
    if held is not None:
        with conn.transaction():
            store_controls.renew_lease(conn, held, lease_seconds)
            audit.record(conn, actor.name, "case.claim", "case", held, {"renewed": True, "lease_seconds": lease_seconds, "control": True})
        return held
    with conn.transaction():
        held = store_cases.held_by(conn, actor.name, lock=True)
        if held is not None:
            store_cases.renew_lease(conn, held, lease_seconds)
            audit.record(conn, actor.name, "case.claim", "case", held, {"renewed": True, "lease_seconds": lease_seconds})
            return held
        if control_rate > 0.0:
            next_in_line = store_cases.oldest_waiting(conn)
            unseen = store_controls.unseen_pairs(conn, actor.name)
            if _RANDOM.random() < control_rate and next_in_line is not None and unseen:
                case_id = store_controls.open_control(conn, _RANDOM.choice(unseen), actor.name, lease_seconds, next_in_line)
                # Audited as any claim; the control flag is for supervisors reading the log.
                audit.record(conn, actor.name, "case.claim", "case", case_id, {"lease_seconds": lease_seconds, "control": True})
                return case_id
        got = store_cases.claim_oldest(conn, actor.name, lease_seconds)
        if got is None:
            return None
        case_id, previous = got
        detail: dict[str, Any] = {"lease_seconds": lease_seconds}
        if previous is not None:
            detail["expired_lease_of"] = previous
        audit.record(conn, actor.name, "case.claim", "case", case_id, detail)
        return case_id


def release(conn: psycopg.Connection[Any], actor: Actor, case_id: int) -> None:
    """Give a held case back: a real one to the queue, a control one withdrawn (its holder, or any supervisor).

    To an adjudicator who does not hold it, every case answers as :mod:`holder` says (one
    answer, audited).
    """
    authorize(actor, "queue.release")
    with refusals_audited(conn, actor, case_id, "release"):
        with conn.transaction():
            control = store_controls.is_control(conn, case_id)
            try:
                row = store_controls.control_row(conn, case_id, lock=True) if control else store_cases.case_row(conn, case_id, lock=True)
            except NotFound:
                raise missing(case_id, actor) from None
            hold = Hold.of_control(row) if control else Hold.of_case(row)
            if actor.role == "supervisor" and hold.claimed_by != actor.name:
                if hold.status != "open":
                    raise Conflict(f"case {case_id} is already {hold.status}")
                if not hold.held:
                    raise Conflict(f"case {case_id} is not held by anyone")
            else:
                check_holder(hold, actor)
            detail: dict[str, Any] = {"holder": hold.claimed_by}
            if control:
                store_controls.withdraw(conn, case_id)
                detail["control"] = True
            else:
                store_cases.clear_claim(conn, case_id)
            audit.record(conn, actor.name, "case.release", "case", case_id, detail)
