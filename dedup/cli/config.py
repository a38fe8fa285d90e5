"""``dedup config``: every setting, its environment variable, default and effective value."""

from __future__ import annotations

from typing import Annotated

import typer

from dedup.cli.common import Home, Json, cli_errors, home_dir, print_json

GROUP = None
app = typer.Typer()


@app.command("config")
@cli_errors
def config_command(
    home: Home = None,
    as_json: Json = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="the settings table of the README")] = False,
) -> None:
    """Show every setting, its environment variable, default and effective value."""
    from dedup.config import describe, load_settings, markdown_table

    if markdown:
        typer.echo(markdown_table())
        return

    settings = load_settings(home_dir(home))
    rows = []
    for row in describe():
        section, name = row["name"].split(".")
        rows.append({**row, "value": getattr(getattr(settings, section), name)})
    if as_json:
        print_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("setting", "value", "default", "environment", "meaning")
    for row in rows:
        table.add_row(row["name"], str(row["value"]), str(row["default"]), row["env"], row["doc"])
    Console().print(table)
