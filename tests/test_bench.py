"""`dedup bench`: the report a scale test promises, its job files, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dedup.bench.gallery import BenchSpec, load_job, run_bench
from dedup.cli import app
from dedup.config import IndexSettings, Settings
from dedup.errors import BadInput, InvalidParameter

REQUIRED_KEYS = ["gallery_size", "dim", "profile", "probes_per_s", "duplicate_recall", "ram_bytes_per_template",
                 "train_s", "add_s", "machine"]

SMALL = Settings(index=IndexSettings(nlist=64, pq_m=16, train_size=5000))


def test_defaults_hold_duplicate_recall_at_the_threshold_in_force() -> None:
    """The default codec (OPQ) and search (depth 16; the list count and list gap measured on the
    gallery's planted duplicates and fresh captures) at the threshold the policy puts in force
    for the gallery's size: no planted pair above it is lost, nothing is capped, and the FPIR
    its non-mated probes show is consistent with the target."""
    report = run_bench(BenchSpec(gallery_size=200_000, queries=2_000, profile="face-like", seed=21, flat_queries=200))
    assert report["threshold_in_force"]["source"] == "model-card" and report["codec"]["rotation"] == "opq"
    search = report["search"]
    assert search["nprobe_source"] == "measured" and search["list_gap"] is not None and search["depth"] == 16
    assert report["list_coverage"]["pairs"] > 10_000
    assert report["duplicate_pairs"] > 500
    assert report["duplicate_recall"] >= 0.999, report["missed_pairs"]
    assert report["capped_probes"] <= 0.01 * report["queries"]
    assert report["fpir_ci"][0] <= report["target_fpir"]


def test_report_has_every_promised_figure() -> None:
    spec = BenchSpec(gallery_size=8_000, queries=300, profile="face-like", dim=64, shards=2, seed=4, nprobe=32)
    report = run_bench(spec, SMALL)
    for key in REQUIRED_KEYS:
        assert key in report, key
    assert report["gallery_size"] == 8_000 and report["dim"] == 64 and report["profile"] == "face-like"
    assert report["shards"] == 2
    assert report["duplicate_pairs"] > 50
    assert report["duplicate_recall"] >= 0.99
    exact = report["baselines"]["exact"]
    assert exact["duplicate_recall"] == 1.0 and exact["missed_pairs"] == 0  # exact search finds every pair it defines
    assert exact["probes_per_s"] > 0 and report["probes_per_s"] > 0
    assert exact["method"] in ("faiss-knn", "torch-matmul") and len(exact["passes"]) == 3
    assert report["missed_vs_fixed_search"] == 0 and "dedup-fixed" in report["baselines"]
    assert report["search"]["bounds_at_threshold"] is not None
    # 4-bit PQ with 16 sub-quantisers: 8 bytes of code + 8 of id, plus shared centroids.
    assert 16 <= report["ram_bytes_per_template"] < 40
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu"]


def test_hnsw_comparison_runs_in_the_same_report() -> None:
    spec = BenchSpec(gallery_size=3_000, queries=100, profile="uniform", dim=32, compare=("flat", "faiss-refine", "hnsw"),
                     seed=2)
    report = run_bench(spec, Settings(index=IndexSettings(nlist=32, pq_m=8, train_size=2000)))
    hnsw = report["baselines"]["hnsw"]
    assert hnsw["duplicate_recall"] >= 0.95
    assert hnsw["ram_bytes_per_template"] > report["ram_bytes_per_template"]
    assert hnsw["speedup_of_dedup"] > 0 and hnsw["sweep"]["points"]
    refine = report["baselines"]["faiss-refine"]
    assert refine["duplicate_recall"] >= report["duplicate_recall"] or not refine["sweep"]["reached_target"]
    assert refine["ram_bytes_per_template"] > 32 * 4 and refine["speedup_of_dedup"] > 0
    for name in ("dedup-fixed", "exact", "faiss-refine", "hnsw"):
        passes = report["baselines"][name]["passes"]
        assert len(passes) == 3 and all(p["wall_s"] > 0 and 0 <= p["machine_busy"] <= 1 for p in passes)


def test_job_file(tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text('[bench]\ngallery_size = 5000\nqueries = 100\nprofile = "uniform"\ncompare = ["flat"]\n')
    spec = load_job(job)
    assert spec.gallery_size == 5000 and spec.profile == "uniform" and spec.compare == ("exact",)  # flat: old name
    job.write_text("[bench]\ngalery_size = 5\n")
    with pytest.raises(BadInput, match="unknown key 'galery_size'"):
        load_job(job)
    job.write_text("not toml [")
    with pytest.raises(BadInput, match="not valid TOML"):
        load_job(job)
    with pytest.raises(BadInput, match="not found"):
        load_job(tmp_path / "missing.toml")


def test_shipped_jobs_are_valid() -> None:
    root = Path(__file__).resolve().parents[1] / "jobs"
    for name in ("bench-1m.toml", "bench-10m.toml"):
        spec = load_job(root / name)
        assert spec.gallery_size in (1_000_000, 10_000_000)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"gallery_size": 0}, "--gallery-size"),
    ({"shards": 0}, "--shards"),
    ({"compare": ("faiss-hnsw",)}, "unknown engine"),
    ({"queries": 0}, "--queries"),
])
def test_bad_parameters(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidParameter, match=message):
        BenchSpec(**kwargs)


def test_cli_writes_json_and_reports_errors_without_traceback(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "report.json"
    result = runner.invoke(app, ["bench", "-n", "4000", "-q", "100", "--dim", "32", "--nlist", "32",
                                 "--json-out", str(out)], env={"DEDUP_INDEX_PQ_M": "8"})
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["gallery_size"] == 4000 and "probes_per_s" in report["baselines"]["exact"]
    assert "dedup IVF-PQ" in result.output and "x exact" in result.output

    bad = runner.invoke(app, ["bench", "-n", "100", "--profile", "martian"])
    assert bad.exit_code == 2
    assert "unknown profile 'martian'" in bad.output and "Traceback" not in bad.output
    bad = runner.invoke(app, ["bench", "--shards", "0"])
    assert bad.exit_code == 2 and "--shards must be >= 1" in bad.output
    bad = runner.invoke(app, ["bench", "-n", "1000", "--dim", "30", "--nlist", "16"], env={"DEDUP_INDEX_PQ_M": "7"})
    assert bad.exit_code == 2 and "pq_m" in bad.output
