"""``dedup serve``: the adjudicators' web app and the centres' HTTP API."""

from __future__ import annotations

import typer

from dedup.cli.common import Home, cli_errors, home_dir

GROUP = None
app = typer.Typer()


@app.command("serve")
@cli_errors
def serve_command(
    host: str | None = typer.Option(None, "--host", help="address to listen on [default: web.host, 127.0.0.1]"),
    port: int | None = typer.Option(None, "--port", min=0, max=65535, help="TCP port [default: web.port, 8000]"),
    home: Home = None,
) -> None:
    """The adjudicators' web app and the centres' HTTP API (until Ctrl-C)."""
    from dedup.deployment import open_deployment
    from dedup.web.serve import serve

    dep = open_deployment(home_dir(home))
    web = dep.settings.web
    serve(dep, host or web.host, web.port if port is None else port, say=lambda m: typer.echo(m, err=True))
