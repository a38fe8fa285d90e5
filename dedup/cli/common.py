"""What every command module shares: the error edge, the deployment folder, JSON and table
output, the acting user's session, and the option aliases (typer ``Annotated`` types).

Only the CLI turns domain errors (``dedup.errors.DedupError``) into a one-line message on
stderr and a non-zero exit code; library code never prints or exits. Heavy modules are
imported inside the commands so ``dedup --help`` stays fast.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from dedup.config import env_value
from dedup.errors import DedupError

F = TypeVar("F", bound=Callable[..., Any])


def cli_errors(fn: F) -> F:
    """Turn domain errors into a message and an exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DedupError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except MemoryError:
            typer.echo("error: out of memory; lower the sizes or add RAM (see `dedup bench --help`)", err=True)
            raise typer.Exit(3) from None
        except OSError as exc:  # a disk or file failure no library path turned into a DedupError: still no traceback
            import errno

            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            where = f" ({exc.filename})" if exc.filename else ""
            typer.echo(f"error: {'disk full' if full else exc.strerror or type(exc).__name__}{where}; "
                       "what was written before is intact: free space or fix the disk, then run it again", err=True)
            raise typer.Exit(10) from None

    return wrapper  # type: ignore[return-value]


# ---------------------------------------------------------------- option aliases

Home = Annotated[Path | None, typer.Option(
    "--home", help="deployment folder (default: $DEDUP_HOME, else the current folder)")]
User = Annotated[str | None, typer.Option("--user", envvar="DEDUP_USER", help="act as this user (default: $DEDUP_USER)")]
Json = Annotated[bool, typer.Option("--json", help="machine-readable output on stdout")]
JsonOut = Annotated[Path | None, typer.Option("--json-out", help="also write the report as JSON to FILE")]


# ---------------------------------------------------------------- the deployment folder

def home_dir(home: Path | None) -> Path:
    """The deployment folder: ``--home``, else ``DEDUP_HOME``, else the current folder."""
    if home is not None:
        return home
    env = env_value("DEDUP_HOME")
    return Path(env) if env else Path.cwd()


def given_home(home: Path | None) -> Path | None:
    """The deployment folder when one was named (``--home`` or ``DEDUP_HOME``), else None.

    Commands that also run outside a deployment (bench, eval) read settings from a
    deployment only when one was named, never from whatever the current folder holds.
    """
    return home_dir(home) if (home is not None or env_value("DEDUP_HOME")) else None


# ---------------------------------------------------------------- output

def _json_text(payload: Any) -> str:
    return json.dumps(payload, indent=2, sort_keys=True, default=str)


def print_json(payload: Any) -> None:
    """The machine-readable output of ``--json``, on stdout."""
    typer.echo(_json_text(payload))


def write_json(payload: Any, path: Path) -> None:
    """The JSON report of ``--json-out FILE`` (written atomically)."""
    from dedup.fsutil import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, _json_text(payload) + "\n")


def report_json(payload: Any, as_json: bool, json_out: Path | None) -> None:
    """Write ``--json-out`` when given, print on stdout with ``--json``."""
    if json_out is not None:
        write_json(payload, json_out)
    if as_json:
        print_json(payload)


def show_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """A rich table on stdout (None shows as an empty cell)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns, title=title)
    for r in rows:
        table.add_row(*["" if v is None else str(v) for v in r])
    Console().print(table)


def progress_bar(enabled: bool) -> tuple[Any, Any]:
    """A rich progress bar on stderr and the ``(stage, done, total)`` callback that drives it.

    Both are None when disabled (not a terminal, or JSON on stdout).
    """
    if not enabled:
        return None, None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                   TimeRemainingColumn(), console=Console(stderr=True), transient=True)
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    return bar, update


# ---------------------------------------------------------------- a command's session

class System:
    """An opened deployment, a database connection and the acting user, for one command."""

    def __init__(self, home: Path | None, user: str | None) -> None:
        from dedup.deployment import open_deployment
        from dedup.store.users import authenticate

        self.dep = open_deployment(home_dir(home))
        self.conn = self.dep.database.connect()
        try:
            self.actor = authenticate(self.conn, user)
        except BaseException:
            self.conn.close()
            raise

    def __enter__(self) -> System:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.conn.close()
        import psycopg

        if isinstance(exc, psycopg.Error):  # lost connection, server stopped: a message, not a traceback
            from dedup.errors import StoreError

            raise StoreError(f"database error: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None
