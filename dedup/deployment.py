"""A deployment folder: settings file, photo store, gallery and (embedded) database.

Layout of ``DIR``::

    dedup.toml      settings ([store] database_url when an existing PostgreSQL is used)
    store/          biometric data, 0700: photos/ (content-addressed), work/ (run units)
    gallery/        the gallery index (shards, generations)
    pg/             the embedded PostgreSQL's data folder (absent with --database-url)

``init_deployment`` creates it (idempotent: running it again only applies new migrations);
``open_deployment`` finds an existing one and connects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dedup.config import SETTINGS_FILE, Settings, load_settings
from dedup.errors import BadInput, InvalidParameter, NotFound
from dedup.fsutil import atomic_write_text
from dedup.store import db as dbmod

STORE_DIR = "store"
GALLERY_DIR = "gallery"


@dataclass(frozen=True)
class Deployment:
    """An opened deployment: its folder, settings and database."""

    home: Path
    settings: Settings
    database: dbmod.Database

    @property
    def store(self) -> Path:
        """The folder for biometric data (photos, templates of run units)."""
        return self.home / STORE_DIR

    @property
    def gallery(self) -> Path:
        """The gallery index folder."""
        return self.home / GALLERY_DIR


@dataclass(frozen=True)
class InitResult:
    """What ``init_deployment`` did."""

    home: Path
    embedded: bool
    created: bool
    migrations_applied: list[str]
    admin: str
    admin_created: bool


def init_deployment(home: Path, database_url: str | None = None, admin: str = "admin") -> InitResult:
    """Create (or bring up to date) the deployment in ``home`` and its first admin user."""
    from dedup.store import migrate, users

    home = Path(home).expanduser().absolute()
    if home.exists() and not home.is_dir():
        raise InvalidParameter(f"{home} exists and is not a folder")
    settings_path = home / SETTINGS_FILE
    created = not settings_path.exists()
    if not created:
        existing = load_settings(home, environ={}).store.database_url
        if database_url is not None and database_url != existing:
            raise InvalidParameter(f"{home} is already a deployment with another database; edit {settings_path} to move it")
        database_url = existing or None
    if database_url is not None and not database_url.startswith(("postgresql://", "postgres://")):
        raise InvalidParameter("--database-url must be a URL starting with postgresql://")
    home.mkdir(parents=True, exist_ok=True)
    for sub in (STORE_DIR, f"{STORE_DIR}/photos", f"{STORE_DIR}/work", GALLERY_DIR):
        (home / sub).mkdir(exist_ok=True)
    os.chmod(home / STORE_DIR, 0o700)  # biometric data: the operator only
    database = dbmod.external_database(database_url) if database_url else dbmod.embedded_database(home, create=True)
    with database.session() as conn:
        applied = migrate.migrate(conn)
        admin_created = users.ensure_first_admin(conn, admin)
    if created:
        _write_settings(settings_path, database_url)
    return InitResult(home, database.embedded, created, applied, admin, admin_created)


def open_deployment(home: Path) -> Deployment:
    """Open the deployment in ``home`` (settings, database; schema checked current)."""
    from dedup.store import migrate

    home = Path(home).expanduser().absolute()
    if not (home / SETTINGS_FILE).exists():
        raise NotFound(f"{home} is not a dedup deployment (no {SETTINGS_FILE}); create one with `dedup init DIR` or pass --home")
    settings = load_settings(home)
    url = settings.store.database_url
    database = dbmod.Database(url=url, embedded=False) if url else dbmod.embedded_database(home)
    with database.session() as conn:
        migrate.check_current(conn)
    return Deployment(home, settings, database)


def _write_settings(path: Path, database_url: str | None) -> None:
    lines = [
        "# dedup deployment settings; every setting and its default: `dedup config`",
        "[store]",
    ]
    if database_url:
        if '"' in database_url or "\\" in database_url or "\n" in database_url:
            raise BadInput("the database URL contains characters that cannot be stored; percent-encode them")
        lines.append(f'database_url = "{database_url}"')
    else:
        lines.append('# database_url = "postgresql://..."   (empty: the embedded server in pg/)')
    atomic_write_text(path, "\n".join(lines) + "\n", mode=0o600)  # may hold a database password
