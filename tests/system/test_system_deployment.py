"""Deployments and migrations on a real PostgreSQL (embedded and by URL); UINs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dedup.store import migrate
from dedup.uin import check_digit, is_valid, new_uin
from tests.support.cli import Cli


def test_migrations_apply_once_and_are_recorded(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        first = migrate.migrate(conn)
        assert first == [m.name for m in migrate.available()] and first
        assert migrate.migrate(conn) == []  # rerun: nothing to do
        recorded = conn.execute("SELECT name FROM schema_migrations ORDER BY version").fetchall()
        assert [r[0] for r in recorded] == first
        migrate.check_current(conn)


def test_an_edited_migration_is_refused(database_url: str) -> None:
    from dedup.errors import StoreError

    with psycopg.connect(database_url, autocommit=True) as conn:
        migrate.migrate(conn)
        conn.execute("UPDATE schema_migrations SET sha256 = 'x' WHERE version = 1")
        with pytest.raises(StoreError, match="changed after it was applied"):
            migrate.migrate(conn)


def test_migration_files_are_numbered_in_order() -> None:
    versions = [m.version for m in migrate.available()]
    assert versions == sorted(versions) and versions[0] == 1 and len(set(versions)) == len(versions)


def test_init_with_database_url_then_again(tmp_path: Path, database_url: str) -> None:
    cli = Cli(tmp_path / "dep")
    out = cli.json("init", str(cli.home), "--database-url", database_url, user=None)
    assert out["created"] and out["database"] == "external" and out["admin_created"]
    again = cli.json("init", str(cli.home), user=None)
    assert not again["created"] and again["migrations_applied"] == [] and not again["admin_created"]
    assert stat.S_IMODE(os.stat(cli.home / "store").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(cli.home / "dedup.toml").st_mode) == 0o600
    assert not (cli.home / "pg").exists()  # nothing embedded when a URL is given


def test_init_embedded_runs_a_private_postgres(embedded_home: Path) -> None:
    cli = Cli(embedded_home)
    out = cli.json("init", str(cli.home), user=None)
    assert out["database"] == "embedded" and out["created"]
    assert (cli.home / "pg" / "PG_VERSION").exists()
    cli.run("centre", "add", "C1")
    assert [c["centre_id"] for c in cli.json("centre", "list")] == ["C1"]
    assert cli.json("init", str(cli.home), user=None)["migrations_applied"] == []


def test_unreachable_database_is_a_message(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "dep")
    r = cli.run("init", str(cli.home), "--database-url", "postgresql://nobody@/nodb?host=/nonexistent", user=None, code=8)
    assert "cannot connect to the database" in r.stderr
    assert not (cli.home / "dedup.toml").exists()


def test_commands_outside_a_deployment_say_so(tmp_path: Path) -> None:
    r = Cli(tmp_path / "nothing").run("centre", "list", code=6)
    assert "not a dedup deployment" in r.stderr


def test_audit_is_append_only(deployment: Cli, database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        n = conn.execute("SELECT count(*) FROM audit").fetchone()[0]
        assert n >= 7  # init's admin, two centres, five users
        for sql in ("UPDATE audit SET actor = 'x'", "DELETE FROM audit", "TRUNCATE audit"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(sql)
        assert conn.execute("SELECT count(*) FROM audit").fetchone()[0] == n


# ---------------------------------------------------------------- UINs


def test_uin_shape() -> None:
    uins = {new_uin() for _ in range(2000)}
    assert len(uins) == 2000
    assert all(is_valid(u) and len(u) == 12 and u[0] != "0" for u in uins)
    assert check_digit("236") == "3"  # the textbook Verhoeff example


@settings(max_examples=300, deadline=None)
@given(st.text("0123456789", min_size=11, max_size=11).filter(lambda s: s[0] != "0"),
       st.integers(0, 11), st.integers(1, 9))
def test_verhoeff_catches_every_single_digit_error(body: str, pos: int, delta: int) -> None:
    uin = body + check_digit(body)
    assert is_valid(uin)
    wrong = uin[:pos] + str((int(uin[pos]) + delta) % 10) + uin[pos + 1:]
    assert not is_valid(wrong)


@settings(max_examples=300, deadline=None)
@given(st.text("0123456789", min_size=11, max_size=11).filter(lambda s: s[0] != "0"), st.integers(0, 10))
def test_verhoeff_catches_every_adjacent_swap(body: str, pos: int) -> None:
    uin = body + check_digit(body)
    if uin[pos] == uin[pos + 1]:
        return
    swapped = uin[:pos] + uin[pos + 1] + uin[pos] + uin[pos + 2:]
    assert not is_valid(swapped)
