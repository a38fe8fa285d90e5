"""``dedup centre``: enrolment centres (admin)."""

from __future__ import annotations

import typer

from dedup.cli.common import Home, Json, System, User, cli_errors, print_json, show_table

GROUP = "centre"
app = typer.Typer(help="Enrolment centres (admin).", no_args_is_help=True)


@app.command("add")
@cli_errors
def centre_add_command(
    centre_id: str = typer.Argument(..., help="centre id as it appears in manifests"),
    name: str = typer.Option("", "--name", help="display name"),
    home: Home = None,
    user: User = None,
    as_json: Json = False,
) -> None:
    """Register an enrolment centre (admin)."""
    from dedup.store.centres import add_centre

    with System(home, user) as s:
        c = add_centre(s.conn, s.actor, centre_id, name)
    if as_json:
        print_json({"centre_id": c.centre_id, "name": c.name})
    else:
        typer.echo(f"centre {c.centre_id} added")


@app.command("list")
@cli_errors
def centre_list_command(home: Home = None, user: User = None, as_json: Json = False) -> None:
    """List the registered centres."""
    from dedup.store.centres import list_centres

    with System(home, user) as s:
        rows = list_centres(s.conn, s.actor)
    if as_json:
        print_json([{"centre_id": c.centre_id, "name": c.name, "created_at": c.created_at.isoformat()} for c in rows])
    else:
        show_table("centres", ["centre", "name", "created"], [[c.centre_id, c.name, f"{c.created_at:%Y-%m-%d}"] for c in rows])
