"""Running ``dedup`` in-process (typer's CliRunner) against one deployment."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from dedup.cli import app


@dataclass
class Cli:
    """Runs ``dedup`` in-process against one deployment, as a given user."""

    home: Path

    def run(self, *args: str, user: str | None = "admin", code: int = 0, env: dict[str, str] | None = None) -> Any:
        """Run ``dedup ARGS``; fails the test unless it exits ``code`` without a traceback."""
        full_env = {"DEDUP_HOME": str(self.home), "DEDUP_USER": user or "", **(env or {})}
        result = CliRunner().invoke(app, list(args), env=full_env)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert result.exit_code == code, (f"dedup {' '.join(args)} exited {result.exit_code}, expected {code}\n"
                                          f"stdout: {result.stdout}\nstderr: {result.stderr}")
        assert "Traceback" not in result.stderr
        return result

    def json(self, *args: str, user: str | None = "admin", env: dict[str, str] | None = None) -> Any:
        """Run ``dedup ARGS --json`` and parse its standard output."""
        return json.loads(self.run(*args, "--json", user=user, env=env).stdout)
