"""The ``dedup`` command: thin typer commands over library calls.

Only this module turns domain errors (``dedup.errors.DedupError``) into a one-line
message on stderr and a non-zero exit code; library code never prints or exits.
Heavy modules are imported inside the commands so ``dedup --help`` stays fast.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import typer

from dedup.errors import DedupError

app = typer.Typer(
    name="dedup",
    help="One-to-many face deduplication for national ID enrolment.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

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

    return wrapper  # type: ignore[return-value]


def home_dir(home: Optional[Path]) -> Path:
    """The deployment folder: ``--home``, else ``DEDUP_HOME``, else the current folder."""
    if home is not None:
        return home
    env = os.environ.get("DEDUP_HOME")
    return Path(env) if env else Path.cwd()


def emit_json(payload: Any, target: Optional[str]) -> None:
    """Write a JSON report to ``target`` (a path, or ``-`` for stdout)."""
    text = json.dumps(payload, indent=2, sort_keys=True, default=str)
    if target in (None, "-"):
        typer.echo(text)
    else:
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")


HomeOption = typer.Option(None, "--home", help="deployment folder (default: $DEDUP_HOME, else the current folder)")


# --------------------------------------------------------------------------- config


@app.command("config")
@cli_errors
def config_command(
    home: Optional[Path] = HomeOption,
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Show every setting, its environment variable, default and effective value."""
    from dedup.config import describe, load_settings

    settings = load_settings(home_dir(home))
    rows = []
    for row in describe():
        section, name = row["name"].split(".")
        rows.append({**row, "value": getattr(getattr(settings, section), name)})
    if as_json:
        emit_json(rows, "-")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("setting", "value", "default", "environment", "meaning")
    for row in rows:
        table.add_row(row["name"], str(row["value"]), str(row["default"]), row["env"], row["doc"])
    Console().print(table)


# ----------------------------------------------------------- section: synth / bench (index)
# (commands added below by the gallery/bench work)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
