"""The embedded PostgreSQL of a test session, and fresh databases on it."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg


def postgres_dir(prefix: str) -> Path:
    """A folder for PostgreSQL data outside pytest's temporary root.

    As root, PostgreSQL runs as the ``pgserver`` user, which must traverse every folder
    above its data; pytest resets ``/tmp/pytest-of-root`` to mode 0700 whenever a pytest
    run starts (any run, also a colleague's), which would cut a running server off.
    """
    return Path(tempfile.mkdtemp(prefix=prefix))


@contextlib.contextmanager
def embedded_server() -> Iterator[Any]:
    """A private PostgreSQL (pgserver) in a fresh folder, stopped and deleted on exit."""
    # The one place dedup imports pgserver (it hides an import-time warning of platformdirs).
    from dedup.store.db import _import_pgserver

    root = postgres_dir("dedup-test-pg-")
    server = _import_pgserver().get_server(root / "data", cleanup_mode="delete")
    try:
        # Test data is thrown away: skip the disk flushes that make CREATE DATABASE slow.
        with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET fsync = off")
            conn.execute("ALTER SYSTEM SET synchronous_commit = off")
            conn.execute("SELECT pg_reload_conf()")
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def create_database(server: Any, prefix: str = "t_") -> str:
    """A new, empty database on ``server`` under a unique name; returns its URL."""
    name = f"{prefix}{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return str(server.get_uri(name))


def drop_database(server: Any, url: str) -> None:
    """Drop the database of ``url`` (made by create_database), closing its connections."""
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@contextlib.contextmanager
def fresh_database(server: Any, prefix: str = "t_") -> Iterator[str]:
    """The URL of a new, empty database on ``server``, dropped on exit."""
    url = create_database(server, prefix)
    try:
        yield url
    finally:
        drop_database(server, url)
