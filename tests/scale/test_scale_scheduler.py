"""``dedup bench --workers --scheduler`` joins a Dask cluster started by hand with
``dask scheduler`` / ``dask worker`` processes on 127.0.0.1 (as the README shows)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def _dedup_command() -> list[str]:
    script = Path(sys.executable).parent / "dedup"
    return [str(script)] if script.exists() else [sys.executable, "-m", "dedup.cli"]


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[str]:
    """A scheduler and two single-threaded worker processes; yields the scheduler address."""
    scheduler_file = tmp_path / "scheduler.json"
    logs = tmp_path / "dask.log"
    procs: list[subprocess.Popen[bytes]] = []
    with open(logs, "wb") as log:
        try:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                 "--scheduler-file", str(scheduler_file)], stdout=log, stderr=log))
            deadline = time.monotonic() + 60
            while not scheduler_file.exists() or not scheduler_file.read_text().strip():
                assert time.monotonic() < deadline, f"dask scheduler did not start: {logs.read_text()}"
                time.sleep(0.2)
            address = json.loads(scheduler_file.read_text())["address"]
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "dask", "worker", address, "--nworkers", "2", "--nthreads", "1",
                 "--host", "127.0.0.1", "--no-dashboard", "--name", "w", "--memory-limit", "2GiB"],
                stdout=log, stderr=log))
            yield address
        finally:
            for p in reversed(procs):
                p.terminate()
            for p in reversed(procs):
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def test_bench_scales_on_a_hand_started_cluster(dask_cluster: str, tmp_path: Path) -> None:
    out = subprocess.run(
        _dedup_command() + ["bench", "--gallery-size", "3000", "--queries", "120", "--shards", "3", "--seed", "2",
                            "--workers", "2", "--scheduler", dask_cluster, "--json"],
        capture_output=True, timeout=400, cwd=tmp_path)
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    report = json.loads(out.stdout)
    scaling = report["scaling"]
    assert scaling["scheduler"] == dask_cluster
    points = scaling["points"]
    assert [p["workers"] for p in points] == [1, 2]
    for p in points:
        assert p["probes"] == 120 and p["shards"] == 3 and p["probes_per_s"] > 0
        # Same answer on 1 and 2 workers as in one process.
        assert p["duplicate_recall"] == report["duplicate_recall"]
        assert p["capped_probes"] == report["capped_probes"]
        assert p["false_candidates_per_probe"] == report["false_candidates_per_probe"]


def test_bench_with_an_unreachable_scheduler_is_a_clear_error(tmp_path: Path) -> None:
    out = subprocess.run(
        _dedup_command() + ["bench", "--gallery-size", "2000", "--queries", "20", "--workers", "1",
                            "--scheduler", "tcp://127.0.0.1:9"],
        capture_output=True, timeout=300, cwd=tmp_path)
    assert out.returncode != 0
    err = out.stderr.decode()
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in err
    assert "Traceback" not in err
