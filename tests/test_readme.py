"""Docs that cannot drift: every ```sh block of the README runs, in order, in one folder.

The blocks are what a person would type after `make install`: they run with the project's
virtualenv first on PATH, in a fresh temporary folder (so relative paths in the examples
work), with `jobs/` reachable there. The `make ...` block is skipped: it is CI itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def sh_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    return [b for b in blocks if not re.search(r"^\s*make\b", b, re.M)]


def test_readme_has_dedup_examples() -> None:
    commands = [line for block in sh_blocks() for line in block.splitlines() if line.startswith("dedup ")]
    assert len(commands) >= 10
    for sub in ("bench", "embed", "demo", "synth", "eval"):
        assert any(c.startswith(f"dedup {sub}") for c in commands), f"README shows no `dedup {sub}` example"


def test_every_readme_example_runs(tmp_path: Path) -> None:
    (tmp_path / "jobs").symlink_to(ROOT / "jobs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEDUP_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    for i, block in enumerate(sh_blocks()):
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            pytest.fail(f"README sh block {i} failed (exit {proc.returncode}):\n{block}\n"
                        f"--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-3000:]}")
