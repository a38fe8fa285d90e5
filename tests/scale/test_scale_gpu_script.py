"""The GPU benchmark script runs (here on the CPU, tiny sizes) and writes sound JSON, so a GPU
session can run it as it is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu" / "bench_exact_torch.py"


def test_gpu_benchmark_script_smoke_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--sizes", "20K,30K", "--probes", "120",
                          "--configs", "64x8192,128x4096", "--repeats", "1", "--out", str(out)],
                         capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    report = json.loads(out.read_text())
    assert [s["templates"] for s in report["sizes"]] == [20_000, 30_000]
    for s in report["sizes"]:
        assert s["duplicate_recall"] == 1.0 and s["planted_duplicates"] > 0
        assert s["probes_per_s"] > 0 and s["probe_block"] in (64, 128)
    assert len(report["config_sweep"]) == 2
    assert report["check"]["same_candidates"] is True
