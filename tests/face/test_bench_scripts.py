"""The GPU benchmark script runs (tiny smoke size, on whatever torch has: CPU here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.real_photos import real_photos

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_script_smoke(tmp_path: Path) -> None:
    real_photos()  # fetched by `make test`'s set-up; missing, it fails naming the command
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "benchmarks/face/gpu_models.py", "--smoke", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["smoke"] and [r["batch"] for r in report["rows"]][:2] == [2, 4]
    assert all(r["photos_per_s_end_to_end"] > 0 and r["sface_chips_per_s"] > 0 for r in report["rows"])
