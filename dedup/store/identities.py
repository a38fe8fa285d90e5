"""Issuing UINs: a fresh random number, recorded once and forever in ``uins``.

``issue_uin`` is idempotent per enrolment: an enrolment that already has a UIN gets the
same one back, so a rerun after a crash never issues a second UIN. A random number that
collides with an earlier one (about 1 in 10^11 per issued UIN) is drawn again.
"""

from __future__ import annotations

from typing import Any

import psycopg

from dedup.errors import StoreError
from dedup.uin import new_uin


def issue_uin(conn: psycopg.Connection[Any], enrolment_pk: int, issued_by: str) -> str:
    """Issue (or return the already issued) UIN of an enrolment and mark it accepted.

    Must run inside the caller's transaction, which also holds the enrolment's row lock.
    """
    row = conn.execute("SELECT uin FROM uins WHERE enrolment_pk = %s", (enrolment_pk,)).fetchone()
    if row is not None:
        uin = row["uin"]
    else:
        for _ in range(20):
            uin = new_uin()
            got = conn.execute(
                "INSERT INTO uins (uin, enrolment_pk, issued_by) VALUES (%s, %s, %s) ON CONFLICT (uin) DO NOTHING RETURNING uin",
                (uin, enrolment_pk, issued_by),
            ).fetchone()
            if got is not None:
                break
        else:  # twenty collisions in a row means the number space is not random
            raise StoreError("could not draw an unused UIN in 20 tries")
    conn.execute(
        """UPDATE enrolments SET state = 'accepted', uin = %s, reason = NULL, detail = NULL, updated_at = now()
           WHERE enrolment_pk = %s""",
        (uin, enrolment_pk),
    )
    return uin


def uin_exists(conn: psycopg.Connection[Any], uin: str) -> bool:
    """Whether this UIN was ever issued."""
    return conn.execute("SELECT 1 FROM uins WHERE uin = %s", (uin,)).fetchone() is not None
