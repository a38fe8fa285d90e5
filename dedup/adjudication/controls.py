"""Control pairs: known-duplicate and known-distinct pairs mixed into the adjudication queue.

A supervisor turns a decided case into a control pair (its probe photo with the candidate
it was linked to, or with its top candidate when it was decided distinct). How pairs enter
the queue is :func:`dedup.adjudication.queue.claim_next`'s; how they are decided and scored,
:func:`dedup.adjudication.cases.decide`'s.
"""

from __future__ import annotations

from typing import Any

import psycopg

from dedup.errors import Conflict, InvalidParameter, NotFound
from dedup.store import audit
from dedup.store import controls as store_controls
from dedup.store.controls import ControlPair
from dedup.store.users import Actor, authorize


def add_from_case(conn: psycopg.Connection[Any], actor: Actor, case_id: int) -> int:
    """Make a control pair from a decided case (supervisor); return its id."""
    authorize(actor, "control.manage")
    with conn.transaction():
        case = store_controls.decided_case(conn, case_id)
        if case is None:
            raise NotFound(f"no case {case_id}")
        if case["status"] != "decided" or case["decision"] not in ("duplicate", "distinct"):
            raise InvalidParameter(f"case {case_id} is not decided duplicate or distinct; only those give a known answer")
        cands = store_controls.photo_candidates(conn, case_id)
        if case["decision"] == "duplicate":
            chosen = next((c for c in cands if c["uin"] == case["duplicate_of"]), None)
        else:
            chosen = cands[0] if cands else None
        if chosen is None:
            raise InvalidParameter(f"case {case_id} has no candidate with a photo to pair")
        pair_id = store_controls.insert_pair(conn, case["photo_sha256"], chosen["photo_sha256"], chosen["score"], case["decision"],
                                             case_id, actor.name)
        if pair_id is None:
            raise Conflict(f"case {case_id}'s pair is already a control pair")
        audit.record(conn, actor.name, "control.add", "control_pair", pair_id, {"source_case": case_id, "truth": case["decision"]})
    return pair_id


def set_active(conn: psycopg.Connection[Any], actor: Actor, pair_id: int, active: bool) -> None:
    """Stop (or resume) putting a pair into the queue (supervisor)."""
    authorize(actor, "control.manage")
    with conn.transaction():
        store_controls.set_active(conn, pair_id, active)
        audit.record(conn, actor.name, "control.activate" if active else "control.deactivate", "control_pair", pair_id, {})


def list_pairs(conn: psycopg.Connection[Any], actor: Actor) -> list[ControlPair]:
    """Every control pair with how often it was shown and answered right (supervisor)."""
    authorize(actor, "control.manage")
    return store_controls.pairs(conn)
