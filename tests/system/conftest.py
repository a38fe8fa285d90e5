"""Fixtures for the PostgreSQL-backed system: deployments on a fresh database of the
session's server (see tests/conftest.py) through ``--database-url``, a deployment on its
own embedded PostgreSQL, and real photos (scikit-image's sample photographs)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import Cli
from tests.support.pg import postgres_dir


@pytest.fixture
def embedded_home() -> Iterator[Path]:
    """A deployment path for the embedded PostgreSQL (outside pytest's temporary root)."""
    from dedup.store.db import stop_embedded

    root = postgres_dir("dedup-test-emb-")
    yield root / "dep"
    stop_embedded(root / "dep")
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def deployment(tmp_path: Path, database_url: str) -> Cli:
    """A deployment on a fresh database with centres C1, C2 and one user of every role."""
    cli = Cli(tmp_path / "dep")
    cli.run("init", str(cli.home), "--database-url", database_url, user=None)
    cli.run("centre", "add", "C1", "--name", "Centre one")
    cli.run("centre", "add", "C2")
    for name, role, centre in [("alice", "adjudicator", None), ("bob", "adjudicator", None), ("sue", "supervisor", None),
                               ("c1", "centre", "C1"), ("c2", "centre", "C2")]:
        cli.run("user", "add", name, "--role", role, *(["--centre", centre] if centre else []))
    return cli


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real photographs (scikit-image's samples), as JPEG and PNG files."""
    from PIL import Image
    from skimage import data

    root = tmp_path_factory.mktemp("photos")
    out = {}
    for name, image, ext in [("astronaut", data.astronaut(), "jpg"), ("camera", data.camera(), "png"),
                             ("coffee", data.coffee(), "jpg"), ("chelsea", data.chelsea(), "jpg"),
                             ("rocket", data.rocket(), "png")]:
        path = root / f"{name}.{ext}"
        Image.fromarray(image).save(path)
        out[name] = path
    return out
