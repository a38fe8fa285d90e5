"""Connecting to the deployment's PostgreSQL: an existing server by URL, or the embedded one.

The embedded server is PostgreSQL from the ``pgserver`` wheel, with its data folder in the
deployment (``DIR/pg``), listening only on a Unix socket inside that folder. pgserver
starts it on first use and stops it when the last process using it exits; several
``dedup`` processes at once share one server.

Running as root: PostgreSQL refuses to run as root, so pgserver creates an unprivileged
system user ``pgserver`` (``useradd``), gives it the data folder and makes the folders
above it traversable (``o+x``). The photo store next to it stays ``0700`` root-only.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from dedup.errors import ConfigError, StoreError

EMBEDDED_DIR = "pg"
EMBEDDED_DATABASE = "dedup"

# pgserver handles by data folder, kept for the life of the process (pgserver stops the
# server at exit when this is the last process using it).
_servers: dict[Path, Any] = {}


@dataclass(frozen=True)
class Database:
    """Where a deployment's data lives: a connection URL and whether it is embedded."""

    url: str
    embedded: bool

    def connect(self) -> psycopg.Connection[dict[str, Any]]:
        """A new autocommit connection returning rows as dicts; callers open transactions."""
        try:
            conn = psycopg.connect(self.url, autocommit=True, row_factory=dict_row, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise StoreError(f"cannot connect to the database ({_redact(self.url)}): {_first_line(exc)}") from None
        conn.execute("SET TIME ZONE 'UTC'")
        return conn

    @contextlib.contextmanager
    def session(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """Connect, yield, close."""
        conn = self.connect()
        try:
            yield conn
        finally:
            conn.close()

    def pool(self, size: int, timeout: float, reserved: int) -> ConnectionPool[psycopg.Connection[dict[str, Any]]]:
        """A pool of at most ``size`` connections like :meth:`connect`'s (opened here).

        Refused (ConfigError) unless the server's ``max_connections`` leaves ``reserved``
        connections beside the pool and PostgreSQL's superuser reserve, for ``dedup run``,
        the CLI and other processes. A request waits ``timeout`` seconds for a free
        connection, then gets ``psycopg_pool.PoolTimeout``.
        """
        with self.session() as conn:
            limit = int(conn.execute("SHOW max_connections").fetchone()["max_connections"])  # type: ignore[index]
            kept = int(conn.execute("SHOW superuser_reserved_connections").fetchone()["superuser_reserved_connections"])  # type: ignore[index]
        if size + reserved > limit - kept:
            raise ConfigError(f"web.db_pool_size {size} + web.db_reserved_connections {reserved} is more than the database's "
                              f"max_connections {limit} less {kept} reserved for superusers; lower them or raise max_connections")
        pool: ConnectionPool[psycopg.Connection[dict[str, Any]]] = ConnectionPool(
            self.url, kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": 10}, min_size=1, max_size=size,
            timeout=timeout, configure=_utc, check=ConnectionPool.check_connection, open=False, name="dedup-web")
        try:
            pool.open(wait=True, timeout=30)
        except psycopg.Error as exc:
            pool.close()
            raise StoreError(f"cannot connect to the database ({_redact(self.url)}): {_first_line(exc)}") from None
        return pool


def _utc(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET TIME ZONE 'UTC'")


def embedded_database(home: Path, create: bool = False) -> Database:
    """Start (or join) the embedded server of the deployment in ``home`` and return it.

    With ``create`` the data folder is initialised when missing and the ``dedup``
    database created; otherwise a missing data folder is an error.
    """
    pgdata = (Path(home) / EMBEDDED_DIR).resolve()
    if not create and not (pgdata / "PG_VERSION").exists():
        raise StoreError(f"{home}: no embedded database here (expected {pgdata}); run `dedup init` first")
    server = _servers.get(pgdata)
    if server is None:
        pgserver = _import_pgserver()
        try:
            server = pgserver.get_server(pgdata, cleanup_mode="stop")
        except Exception as exc:  # noqa: BLE001 - pgserver raises CalledProcessError, RuntimeError, ...
            raise StoreError(f"cannot start the embedded PostgreSQL in {pgdata}: {_first_line(exc)}; see {pgdata / 'log'}") from None
        _servers[pgdata] = server
    admin_url = server.get_uri("postgres")
    if create:
        ensure_database(admin_url, EMBEDDED_DATABASE)
    return Database(url=server.get_uri(EMBEDDED_DATABASE), embedded=True)


def stop_embedded(home: Path) -> None:
    """Stop this process's handle on the embedded server of ``home`` (the server stops when
    no other process uses it)."""
    server = _servers.pop((Path(home) / EMBEDDED_DIR).resolve(), None)
    if server is not None:
        server.cleanup()


def external_database(url: str) -> Database:
    """An existing PostgreSQL by URL (checked by connecting once)."""
    db = Database(url=url, embedded=False)
    db.connect().close()
    return db


def ensure_database(admin_url: str, name: str) -> None:
    """Create database ``name`` on the server of ``admin_url`` unless it exists."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # a concurrent init won
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _import_pgserver() -> Any:
    # platformdirs warns at import when XDG_RUNTIME_DIR is unset (as root, in CI); the
    # fallback it picks (/tmp/runtime-UID) is fine for pgserver's lock file.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    if os.name != "posix":
        raise StoreError("the embedded PostgreSQL needs Linux or macOS; use --database-url")
    return pgserver


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparsable database URL>"
    info.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in sorted(info.items()))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
