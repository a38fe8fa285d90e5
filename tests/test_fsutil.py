"""dedup.fsutil: the one durable atomic write."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dedup.fsutil import atomic_path, atomic_write_text, existing_mode, temp_path_for


def test_replaces_whole_and_honours_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "settings.toml"
    atomic_write_text(target, "a = 1\n", mode=0o600)
    atomic_write_text(target, "a = 2\n", mode=existing_mode(target, 0o644))
    assert target.read_text() == "a = 2\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["settings.toml"]  # no temporary left behind


def test_temporary_names_are_unique_per_writer(tmp_path: Path) -> None:
    """Two writers of the same file never share a temporary (the old fixed ``.tmp`` names did)."""
    target = tmp_path / "report.parquet"
    names = {temp_path_for(target) for _ in range(100)}
    assert len(names) == 100
    assert all(n.parent == tmp_path and n.name.endswith(".tmp") for n in names)


def test_a_failed_write_keeps_the_old_content(tmp_path: Path) -> None:
    target = tmp_path / "calibration.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["calibration.json"]


def test_a_killed_writer_leaves_the_old_content(tmp_path: Path) -> None:
    """A process killed (``os._exit``) mid-write leaves the target as it was."""
    target = tmp_path / "CURRENT"
    atomic_write_text(target, "00000001.json")
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from dedup.fsutil import atomic_path
        with atomic_path(Path({str(target)!r})) as tmp:
            tmp.write_text("0000")
            os._exit(9)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 9, proc.stderr
    assert target.read_text() == "00000001.json"
