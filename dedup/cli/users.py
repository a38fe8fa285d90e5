"""``dedup user``: user accounts, roles and web passwords."""

from __future__ import annotations

import sys

import typer

from dedup.cli.common import Home, Json, System, User, cli_errors, print_json, show_table

GROUP = "user"
app = typer.Typer(help="User accounts and roles.", no_args_is_help=True)


@app.command("add")
@cli_errors
def user_add_command(
    name: str = typer.Argument(..., help="user name"),
    role: str = typer.Option(..., "--role", help="centre, adjudicator, supervisor or admin"),
    centre: str | None = typer.Option(None, "--centre", help="the centre of a centre user"),
    home: Home = None,
    user: User = None,
    as_json: Json = False,
) -> None:
    """Add a user with a role (admin)."""
    from dedup.store.users import add_user

    with System(home, user) as s:
        u = add_user(s.conn, s.actor, name, role, centre)
    if as_json:
        print_json({"name": u.name, "role": u.role, "centre_id": u.centre_id})
    else:
        typer.echo(f"user {u.name} added as {u.role}" + (f" of centre {u.centre_id}" if u.centre_id else ""))


@app.command("list")
@cli_errors
def user_list_command(home: Home = None, user: User = None, as_json: Json = False) -> None:
    """List users and roles (admin, supervisor)."""
    from dedup.store.users import list_users

    with System(home, user) as s:
        rows = list_users(s.conn, s.actor)
    if as_json:
        print_json([{"name": u.name, "role": u.role, "centre_id": u.centre_id, "active": u.active} for u in rows])
    else:
        show_table("users", ["user", "role", "centre", "active"], [[u.name, u.role, u.centre_id, u.active] for u in rows])


@app.command("disable")
@cli_errors
def user_disable_command(
    name: str = typer.Argument(..., help="user to disable"),
    home: Home = None,
    user: User = None,
) -> None:
    """Disable a user (admin); cases they hold return to the queue."""
    from dedup.store.users import disable_user

    with System(home, user) as s:
        disable_user(s.conn, s.actor, name)
    typer.echo(f"user {name} disabled")


@app.command("passwd")
@cli_errors
def user_passwd_command(
    name: str = typer.Argument(..., help="the user whose web password is set"),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="read the password from the first line of stdin"),
    home: Home = None,
    user: User = None,
) -> None:
    """Set a web password (admin for anyone; a user for themselves); their web sessions end."""
    from dedup.store.auth import set_password

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt(f"new web password for {name}", hide_input=True, confirmation_prompt=True)
    with System(home, user) as s:
        set_password(s.conn, s.actor, name, password)
    typer.echo(f"web password of {name} set")
