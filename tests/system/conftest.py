"""Fixtures for the PostgreSQL-backed system: one embedded PostgreSQL (pgserver) for the
session, a fresh database per test, deployments that use it through ``--database-url``,
real photos (scikit-image's sample photographs) and a CLI runner."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dedup.cli import app

CAPTURED = dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.timezone.utc)


def postgres_dir(prefix: str) -> Path:
    """A folder for PostgreSQL data outside pytest's temporary root.

    As root, PostgreSQL runs as the ``pgserver`` user, which must traverse every folder
    above its data; pytest resets ``/tmp/pytest-of-root`` to mode 0700 whenever a pytest
    run starts (any run, also a colleague's), which would cut a running server off.
    """
    return Path(tempfile.mkdtemp(prefix=prefix))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """A private PostgreSQL for the whole test session (deleted at the end)."""
    from dedup.store.db import _import_pgserver

    pgserver = _import_pgserver()
    root = postgres_dir("dedup-test-pg-")
    server = pgserver.get_server(root / "data", cleanup_mode="delete")
    # Test data is thrown away: skip the disk flushes that make CREATE DATABASE slow.
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET fsync = off")
        conn.execute("ALTER SYSTEM SET synchronous_commit = off")
        conn.execute("SELECT pg_reload_conf()")
    yield server
    server.cleanup()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def embedded_home() -> Iterator[Path]:
    """A deployment path for the embedded PostgreSQL (outside pytest's temporary root)."""
    from dedup.store.db import stop_embedded

    root = postgres_dir("dedup-test-emb-")
    yield root / "dep"
    stop_embedded(root / "dep")
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def database_url(pg_server: Any) -> Iterator[str]:
    """A fresh, empty database on the session's server."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = pg_server.get_uri("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_server.get_uri(name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@dataclass
class Cli:
    """Runs ``dedup`` in-process against one deployment, as a given user."""

    home: Path

    def run(self, *args: str, user: str | None = "admin", code: int = 0, env: dict[str, str] | None = None) -> Any:
        full_env = {"DEDUP_HOME": str(self.home), "DEDUP_USER": user or "", **(env or {})}
        result = CliRunner().invoke(app, list(args), env=full_env)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert result.exit_code == code, f"dedup {' '.join(args)} exited {result.exit_code}, expected {code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
        assert "Traceback" not in result.stderr
        return result

    def json(self, *args: str, user: str | None = "admin", env: dict[str, str] | None = None) -> Any:
        return json.loads(self.run(*args, "--json", user=user, env=env).stdout)


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


def write_batch(folder: Path, rows: list[dict[str, Any]], photos: dict[str, Path], name: str = "manifest.parquet") -> Path:
    """A batch folder with a manifest; a row's ``photo`` naming a sample is copied in.

    Rows give ``enrolment_id``, ``centre_id`` and ``photo`` (a sample name, a relative path
    as is, or bytes); ``captured_at`` defaults to a fixed time.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "photos").mkdir(exist_ok=True)
    table_rows = []
    for r in rows:
        photo = r["photo"]
        if isinstance(photo, str) and photo in photos:
            target = folder / "photos" / photos[photo].name
            if not target.exists():
                shutil.copy(photos[photo], target)
            photo = f"photos/{photos[photo].name}"
        table_rows.append({**r, "photo": photo, "captured_at": r.get("captured_at", CAPTURED)})
    kind = pa.binary() if rows and all(isinstance(r["photo"], bytes) for r in rows) else pa.string()
    schema = pa.schema([("enrolment_id", pa.string()), ("centre_id", pa.string()), ("captured_at", pa.timestamp("us", tz="UTC")),
                        ("photo", kind), ("sex", pa.string()), ("birth_year", pa.int32()), ("region", pa.string())])
    table = pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in table_rows], schema=schema)
    path = folder / name
    pq.write_table(table, path)
    return path
