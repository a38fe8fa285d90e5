"""`dedup eval` and `dedup calibrate` end to end on a small synthetic set; settings updates."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dedup.bench.synth import SyntheticData, SynthSpec, get_profile, write_parquet
from dedup.cli import app
from dedup.config import load_settings
from dedup.errors import ConfigError
from dedup.evaluation.calibrate import apply_threshold, set_toml_value
from dedup.modelcards.calibration_file import load_calibration, save_calibration

runner = CliRunner()


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("labelled")
    data = SyntheticData(SynthSpec(get_profile("face-like"), 6000, queries=1500, duplicate_rate=0.05, seed=2))
    return write_parquet(data, out)


def test_eval_json_and_report(labelled: dict[str, Path], tmp_path: Path) -> None:
    res = runner.invoke(app, ["eval", str(labelled["gallery"]), str(labelled["probes"]), "--out", str(tmp_path / "r"),
                              "--impostor-pairs", "2000000", "--gallery-sizes", "1000,4000", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["model_id"] == get_profile("face-like").model_id
    assert [p["fmr_target"] for p in doc["fnmr_at_fmr"]] == [1e-3, 1e-4, 1e-5, 1e-6]
    assert [s["gallery_size"] for s in doc["identification"]] == [1000, 4000]
    assert {g["group"] for g in doc["groups"]} == {"A", "B", "C", "D", "(cross-group)"}
    assert doc["counts"]["impostor_pairs"] <= 2_000_000 and doc["tail_model"] is not None
    for name in ("report.md", "det.png", "scores.png", "fnir_fpir.png", "groups.png"):
        assert (tmp_path / "r" / name).stat().st_size > 0
    text = (tmp_path / "r" / "report.md").read_text()
    assert "Wilson" in text and "Per group" in text
    assert "i1" not in text.split()                     # no identity labels in a report


def test_calibrate_json(labelled: dict[str, Path]) -> None:
    res = runner.invoke(app, ["calibrate", "--templates", str(labelled["gallery"]), "--templates", str(labelled["probes"]),
                              "--target-fpir", "0.001", "--gallery-size", "10000000", "--enrolments-per-day", "1000000",
                              "--impostor-pairs", "3000000", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["threshold_source"] == "tail-model" and doc["applied"] is None
    lo, hi = doc["threshold_ci"]
    assert lo <= doc["threshold"] <= hi
    assert doc["fmr_target"] == pytest.approx(1e-10, rel=1e-3)
    assert doc["adjudications_per_day"] == pytest.approx(1000.0)     # R * FPIR, no duplicates
    assert 0.0 <= doc["expected_fnir"] <= 1.0


def test_templates_without_identity_labels_get_a_clear_error(tmp_path: Path, labelled: dict[str, Path]) -> None:
    table = pq.read_table(labelled["probes"])
    table = table.set_column(table.schema.get_field_index("identity"), "identity", pa.nulls(table.num_rows, pa.string()))
    path = tmp_path / "unlabelled.parquet"
    pq.write_table(table, path)
    res = runner.invoke(app, ["eval", str(path), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "no identity label" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["eval", str(tmp_path / "missing.parquet")])
    assert res.exit_code == 2 and "no such templates file" in res.output


def test_apply_needs_a_deployment(labelled: dict[str, Path], tmp_path: Path) -> None:
    res = runner.invoke(app, ["calibrate", "--templates", str(labelled["gallery"]), "--gallery-size", "1000",
                              "--impostor-pairs", "1000000", "--apply", "--home", str(tmp_path)])
    assert res.exit_code == 2 and "not a deployment with a database" in res.output
    assert not (tmp_path / "dedup.toml").exists()


def test_set_toml_value_keeps_everything_else() -> None:
    text = "# my deployment\n[store]\ndatabase_url = \"\"\n\n[search]\n# tuned by hand\nnprobe = 32\nthreshold = 0.5  # old\n"
    new = set_toml_value(text, "search", "threshold", "0.9312")
    assert "# my deployment" in new and "# tuned by hand" in new
    assert tomllib.loads(new) == {"store": {"database_url": ""}, "search": {"nprobe": 32, "threshold": 0.9312}}
    new = set_toml_value(new, "calibration", "target_fpir", "0.001")
    assert tomllib.loads(new)["calibration"] == {"target_fpir": 0.001}
    new = set_toml_value("[search]\nnprobe = 8\n[index]\npq_m = 16\n", "search", "threshold", "0.7")
    assert tomllib.loads(new) == {"search": {"nprobe": 8, "threshold": 0.7}, "index": {"pq_m": 16}}


def test_apply_threshold_is_atomic_and_validated(tmp_path: Path) -> None:
    (tmp_path / "dedup.toml").write_text("[search]\nnprobe = 8\n", encoding="utf-8")
    apply_threshold(tmp_path, 0.93125, 0.002)
    s = load_settings(tmp_path, environ={})
    assert s.search.threshold == 0.93125 and s.search.nprobe == 8 and s.calibration.target_fpir == 0.002
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dedup.toml"]
    # --apply's form: the target only, and an explicit threshold back to 0 (it follows the calibration).
    apply_threshold(tmp_path, None, 0.003)
    s = load_settings(tmp_path, environ={})
    assert s.search.threshold == 0.0 and s.search.nprobe == 8 and s.calibration.target_fpir == 0.003
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "dedup.toml").write_text("[search]\nnprobe = 8\n", encoding="utf-8")
    apply_threshold(tmp_path / "other", None, 0.003)
    assert tomllib.loads((tmp_path / "other" / "dedup.toml").read_text()) == {"search": {"nprobe": 8},
                                                                             "calibration": {"target_fpir": 0.003}}
    (tmp_path / "dedup.toml").write_text("[search\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        apply_threshold(tmp_path, 0.9, 0.001)


def test_calibration_file_round_trip(tmp_path: Path, labelled: dict[str, Path]) -> None:
    from dedup.evaluation.calibrate import calibrate
    from dedup.evaluation.data import load_templates
    from dedup.evaluation.scores import impostor_sample
    from dedup.evaluation.tail import fit_tail

    data = load_templates([labelled["gallery"]])
    imp = impostor_sample(data.vectors, data.identity, data.group, data.group_names, max_pairs=1_000_000)
    tail = fit_tail(imp, bootstrap=20)
    cal = calibrate(tail, None, 0.001, 50_000, data.model_id, imp)
    save_calibration(tmp_path, cal.to_dict(), tail)
    saved, tail2 = load_calibration(tmp_path)
    assert saved["threshold"] == cal.threshold
    ts = np.linspace(tail.u - 0.05, tail.u + 0.05, 11)
    assert np.allclose(tail2.fmr(ts), tail.fmr(ts))
    assert tail2.threshold_interval(1e-8) == tail.threshold_interval(1e-8)
