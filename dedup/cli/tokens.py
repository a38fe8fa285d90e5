"""``dedup token``: the centres' API tokens (admin)."""

from __future__ import annotations

import typer

from dedup.cli.common import Home, Json, System, User, cli_errors, print_json

GROUP = "token"
app = typer.Typer(help="Centres' API tokens (admin).", no_args_is_help=True)


@app.command("create")
@cli_errors
def token_create_command(
    centre: str = typer.Argument(..., help="the centre the token submits for and reads"),
    user_name: str | None = typer.Option(None, "--user-name", help="the centre user it acts as [default: the centre's only centre user]"),
    label: str = typer.Option("", "--label", help="a note: which system holds the token"),
    home: Home = None,
    user: User = None,
    as_json: Json = False,
) -> None:
    """Create a centre's API token (admin); it is printed once and stored only hashed."""
    from dedup.store.auth import create_token

    with System(home, user) as s:
        t = create_token(s.conn, s.actor, centre, user_name, label)
    if as_json:
        print_json({"token_id": t.token_id, "centre_id": t.centre_id, "user": t.user_name, "token": t.text})
        return
    typer.echo(f"API token {t.token_id} for centre {t.centre_id} (acts as {t.user_name}); shown once, keep it secret:")
    typer.echo(t.text)


@app.command("revoke")
@cli_errors
def token_revoke_command(
    token_id: str = typer.Argument(..., help="the token's id (the 12 hex digits after dk_)"),
    home: Home = None,
    user: User = None,
) -> None:
    """Revoke an API token (admin)."""
    from dedup.store.auth import revoke_token

    with System(home, user) as s:
        revoke_token(s.conn, s.actor, token_id)
    typer.echo(f"token {token_id} revoked")
