"""Schema migrations: ordered SQL files in ``schemas/sql/``, each applied once.

A migration file is named ``NNNN_words.sql``. Applied ones are recorded in
``schema_migrations`` with the file's SHA-256, so rerunning applies only new files, and an
applied file that was edited afterwards is refused (add a new file instead). An advisory
lock serialises concurrent runs; each file is applied in its own transaction together with
its record, so a failure leaves the database at the previous version.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from dataclasses import dataclass
from typing import Any

import psycopg

from dedup.errors import StoreError

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# An arbitrary constant: the advisory lock key that serialises migrations.
_LOCK_KEY = 0x6465647570  # "dedup"


@dataclass(frozen=True)
class Migration:
    """One SQL file of ``schemas/sql``."""

    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def available() -> list[Migration]:
    """Every migration shipped with the package, in version order."""
    folder = importlib.resources.files("dedup.schemas") / "sql"
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        m = _NAME.match(entry.name)
        if not m:
            continue
        version = int(m.group(1))
        if version in found:
            raise StoreError(f"two migrations numbered {version:04d}: {found[version].name} and {entry.name}")
        found[version] = Migration(version, entry.name, entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def applied(conn: psycopg.Connection[Any]) -> dict[int, str]:
    """version -> sha256 of the migrations recorded in this database."""
    _ensure_table(conn)
    rows = conn.execute("SELECT version, sha256 FROM schema_migrations").fetchall()
    return {_get(r, "version", 0): _get(r, "sha256", 1) for r in rows}


def migrate(conn: psycopg.Connection[Any]) -> list[str]:
    """Apply every migration not yet recorded; return the names applied (empty when current)."""
    done: list[str] = []
    _ensure_table(conn)
    for mig in available():
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            row = conn.execute("SELECT sha256 FROM schema_migrations WHERE version = %s", (mig.version,)).fetchone()
            if row is not None:
                if _get(row, "sha256", 0) != mig.sha256:
                    raise StoreError(
                        f"migration {mig.name} was changed after it was applied to this database; "
                        "restore it and add a new numbered migration instead"
                    )
                continue
            try:
                conn.execute(mig.sql.encode("utf-8"))
            except psycopg.Error as exc:
                raise StoreError(f"migration {mig.name} failed: {str(exc).strip().splitlines()[0]}") from None
            conn.execute(
                "INSERT INTO schema_migrations (version, name, sha256) VALUES (%s, %s, %s)",
                (mig.version, mig.name, mig.sha256),
            )
            done.append(mig.name)
    return done


def check_current(conn: psycopg.Connection[Any]) -> None:
    """Raise unless every shipped migration is applied (run ``dedup init`` / upgrade first)."""
    have = applied(conn)
    missing = [m.name for m in available() if m.version not in have]
    if missing:
        raise StoreError(f"the database schema is behind this dedup ({', '.join(missing)} not applied); "
                         "run `dedup init` on the deployment again")


def _ensure_table(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   sha256     text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )


def _get(row: Any, key: str, index: int) -> Any:
    # Works with dict rows (dedup connections) and tuple rows (plain psycopg connections).
    return row[key] if isinstance(row, dict) else row[index]
