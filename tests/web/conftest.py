"""Fixtures for the web app: the session's one embedded PostgreSQL (tests/conftest.py), a deployment per test
module with a user of every role, real photos, and the app served by uvicorn over real HTTP on
127.0.0.1 (helpers in tests/support/web.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.web import Site, served_site, web_photos


@pytest.fixture(scope="session")
def photos() -> dict[str, bytes]:
    """Real photographs as JPEG bytes (see ``tests.support.web.web_photos``)."""
    return web_photos()


@pytest.fixture(scope="module")
def site(pg_server: Any, photos: dict[str, bytes]) -> Iterator[Site]:
    """A deployment (blind mode off, no control pairs) served for one test module."""
    with served_site(pg_server, photos) as s:
        yield s
