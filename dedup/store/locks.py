"""PostgreSQL advisory locks that serialise whole workflows on one database."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg

_SUBMIT_LOCK = 0x7375626D6974  # "submit"
_RUN_LOCK = 0x72756E  # "run"
# Two-key locks (a class and a hashed name) live apart from the one-key locks above.
_BATCH_CLASS = 0x62617463  # "batc"
_CENTRE_CLASS = 0x63656E74  # "cent"
# A batch naming more centres than this takes every centre at once instead of one lock each.
MAX_CENTRE_LOCKS = 16


def lock_submissions(conn: psycopg.Connection[Any], batch_id: str | None = None, centres: Iterable[str] | None = None) -> None:
    """Serialise the submissions that could receive the same enrolment or batch, until the caller's transaction ends.

    Two batches can only collide on the same manifest or on an enrolment of a centre both
    submit for, so a batch takes its own lock, then one lock per centre (sorted, so two
    batches never wait on each other in a circle) while holding the submissions lock
    shared: one centre's large batch does not hold up another centre's. Without centres, or
    with more than ``MAX_CENTRE_LOCKS``, it takes the submissions lock alone, which waits for
    and holds off every other submission.
    """
    names = sorted(set(centres or ()))
    if batch_id is not None:
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_BATCH_CLASS, batch_id))
    if not names or len(names) > MAX_CENTRE_LOCKS:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SUBMIT_LOCK,))
        return
    conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (_SUBMIT_LOCK,))
    for name in names:
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_CENTRE_CLASS, name))


def try_run_lock(conn: psycopg.Connection[Any]) -> bool:
    """Take the runner's lock on this session (one ``dedup run`` per database); False when
    another runner holds it. The lock lasts until the connection closes."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (_RUN_LOCK,)).fetchone()
    return row is not None and bool(row["ok"])
