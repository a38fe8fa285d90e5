"""Packaging: every package ships, and the two README commands exist."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "dedup").rglob("__init__.py")}
    found.add("dedup.schemas")
    assert found <= listed, f"add to pyproject.toml packages: {sorted(found - listed)}"


def test_makefile_has_the_two_commands_and_ci_calls_test() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "\ndemo:" in makefile and "\ntest:" in makefile
    assert "torch==2.13.0" in makefile  # never a CUDA torch on a fresh CPU machine
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_schemas_ship_inside_the_package() -> None:
    import dedup.schemas

    assert Path(dedup.schemas.__file__).resolve().parent == (ROOT / "schemas").resolve()
