"""Fixtures for every test package: the session's one embedded PostgreSQL and fresh
databases on it. Helpers to import live in ``tests/support/``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.pg import embedded_server, fresh_database


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """The one private PostgreSQL (pgserver) of the test session, started on first use
    and deleted at the end. ``tests.support.pg.create_database(pg_server)`` gives a
    database of a wider scope than ``database_url``."""
    with embedded_server() as server:
        yield server


@pytest.fixture
def database_url(pg_server: Any) -> Iterator[str]:
    """A fresh, empty database on the session's server for one test (dropped after it)."""
    with fresh_database(pg_server) as url:
        yield url


@pytest.fixture(scope="module")
def module_database_url(pg_server: Any) -> Iterator[str]:
    """A fresh, empty database on the session's server for one test module."""
    with fresh_database(pg_server, prefix="m_") as url:
        yield url
