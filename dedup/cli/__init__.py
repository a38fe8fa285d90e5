"""The ``dedup`` command: thin typer commands over library calls, one module per command group.

Each module in ``COMMAND_MODULES`` defines ``app`` (a ``typer.Typer``) and ``GROUP``: the
sub-command name (``dedup queue ...``), or None for top-level commands (``dedup run``).
Registering a new command group is adding its module's name here. Shared pieces (the error
edge, ``--home``/``--user``/``--json`` aliases, the acting user's session) are in ``common``.
"""

from __future__ import annotations

import importlib

import typer

COMMAND_MODULES = ("config", "bench", "gallery", "embed", "system", "centres", "users", "queue", "evaluation",
                   "serve", "tokens", "demo", "abis", "accuracy")

app = typer.Typer(
    name="dedup",
    help="One-to-many face deduplication for national ID enrolment.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for _name in COMMAND_MODULES:
    _module = importlib.import_module(f"dedup.cli.{_name}")
    app.add_typer(_module.app, name=_module.GROUP)


def main() -> None:
    """Console-script entry point."""
    app()
