"""The threshold in force follows the gallery (issue 13), on the test session's PostgreSQL.

- A deployment calibrated at its size (2,040 rows) judges its next enrolment at that size's
  threshold; its gallery then grows past the calibrated size (synthetic fill to ~20,000), and
  the next unit is judged at a higher threshold: one ``threshold.raised`` audit row (old, new,
  N, FPIR) in that unit's decision, and `dedup status`/`report` show each enrolment's value.
- A plugged ONNX model without a model card: `dedup run` refuses with the message naming
  `dedup calibrate`, before anything is claimed, embedded or searched; once `dedup calibrate
  --apply` has given the deployment a card of its own, the same run goes through.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from psycopg.rows import dict_row

from tests.support.cli import Cli
from tests.support.live import accepted_gallery, audit_rows
from tests.support.manifests import write_batch

FAST = {"DEDUP_INDEX_TRAIN_SIZE": "1000", "DEDUP_FACE_WORKERS": "1", "DEDUP_CALIBRATION_BOOTSTRAP": "20"}


def _hopper(folder: Path) -> Path:
    """Grace Hopper's photograph (matplotlib's sample), a second real face."""
    import matplotlib.cbook
    from PIL import Image

    path = folder / "hopper.jpg"
    Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB").save(path, quality=92)
    return path


def _status(deployment: Cli, enrolment_id: str) -> dict[str, Any]:
    [state] = deployment.json("status", enrolment_id)
    return state


def test_threshold_rises_when_the_gallery_outgrows_its_calibration(deployment: Cli, database_url: str, tmp_path: Path,
                                                                 photos: dict[str, Path]) -> None:
    from dedup.config import load_settings
    from dedup.deployment import open_deployment
    from dedup.evaluation.tail import fpir_from_fmr
    from dedup.modelcards.calibration_file import load_calibration
    from dedup.pipeline import fill_synthetic

    live = accepted_gallery(deployment, database_url, tmp_path / "b", photos, 40, 2000)
    cal = deployment.json("calibrate", "--apply", env=FAST)
    assert cal["gallery_size"] == live["size"] == 2040
    _, tail = load_calibration(deployment.home)
    target = load_settings(deployment.home).calibration.target_fpir

    # Unit 1, at the calibrated size: judged at the calibrated threshold.
    one = write_batch(tmp_path / "one", [{"enrolment_id": "R1", "centre_id": "C1", "photo": "astronaut"}], photos)
    deployment.json("submit", str(one), user="c1")
    out = deployment.run("run", "--once", "--json", env=FAST)
    assert json.loads(out.stdout)["accepted"] == 1 and json.loads(out.stdout)["warnings"] == []
    t0 = _status(deployment, "R1")["judged_threshold"]
    # The calibration's tail at N: the upper end of its threshold interval (the target held with
    # confidence), rounded up to 1e-4.
    assert cal["threshold_ci"][1] <= t0 < cal["threshold_ci"][1] + 1e-4 and round(t0, 4) == t0
    [first] = audit_rows(database_url, "threshold.set")
    assert (first["detail"]["old"], first["detail"]["new"], first["detail"]["gallery_size"]) == (None, t0, 2040)
    assert first["detail"]["source"] == "deployment-calibration"
    assert not audit_rows(database_url, "threshold.raised")

    # The gallery grows to ten times its calibrated size.
    dep = open_deployment(deployment.home)
    size = fill_synthetic(dep, 20_000, live["model_id"], live["dim"])
    assert size == 2041 + 18_000        # the first 2,000 synthetic ids were there already
    two = write_batch(tmp_path / "two", [{"enrolment_id": "R2", "centre_id": "C1", "photo": "hopper"},
                                         {"enrolment_id": "R3", "centre_id": "C1", "photo": "astronaut"}],
                      {**photos, "hopper": _hopper(tmp_path)})
    receipt = deployment.json("submit", str(two), user="c1")
    out = deployment.run("run", "--once", "--json", env={**FAST, "DEDUP_STORE_RUN_BATCH_SIZE": "1"})
    report = json.loads(out.stdout)
    assert (report["units"], report["accepted"], report["cases"], report["warnings"]) == (2, 1, 1, [])  # R3 is R1 again

    # A rise at the unit boundary, with what it rose from and to, N and the FPIR at N (and
    # maybe another 1e-4 step at the next unit, one template later: never down).
    raised, *later = audit_rows(database_url, "threshold.raised")
    assert all(r["detail"]["new"] > r["detail"]["old"] for r in later) and len(later) <= 1
    d = raised["detail"]
    t1 = d["new"]
    assert d["old"] == t0 and t1 > t0 and d["gallery_size"] == size and d["source"] == "deployment-calibration"
    assert float(fpir_from_fmr(tail.fmr(t1), size)) <= target * (1 + 1e-9)
    assert d["fpir"] <= target * (1 + 1e-9)
    # Later enrolments are judged at the new value; the earlier one keeps the value it was judged at.
    assert _status(deployment, "R1")["judged_threshold"] == t0
    r2 = _status(deployment, "R2")["judged_threshold"]
    r3 = _status(deployment, "R3")["judged_threshold"]
    assert r2 == t1 and r3 >= t1                 # R3's unit saw R2's template added: never lower
    rows = {r["enrolment_id"]: r for r in deployment.json("report", receipt["batch_id"])["rows"]}
    assert rows["R2"]["judged_threshold"] == t1
    human = deployment.run("status", "R2")
    assert "threshold" in human.stdout and f"{t1:.4f}" in human.stdout
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        units = conn.execute("SELECT threshold, threshold_source, threshold_gallery_size FROM run_units ORDER BY unit_id").fetchall()
    assert [u["threshold"] for u in units] == [t0, r2, r3]
    assert [u["threshold_gallery_size"] for u in units] == [2040, size, size + 1]


def _tiny_onnx(path: Path) -> None:
    """A real ONNX graph (mean colour of the crop through a fixed 3 x 16 matrix): 16-d templates."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Flatten", ["p"], ["f"], axis=1),
             helper.make_node("MatMul", ["f", "w"], ["y"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 64, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def test_plugged_onnx_model_without_a_card_is_refused(deployment: Cli, database_url: str, tmp_path: Path,
                                                      photos: dict[str, Path]) -> None:
    from dedup.bench.synth import SyntheticData, SynthSpec, get_profile, write_parquet
    from dedup.config import load_settings
    from dedup.face.model import ModelSpec, model_id_for

    model = tmp_path / "tiny.onnx"
    _tiny_onnx(model)
    plug = {"DEDUP_FACE_MODEL": "onnx", "DEDUP_FACE_MODEL_PATH": str(model), "DEDUP_FACE_INPUT_SIZE": "64",
            "DEDUP_FACE_MEAN": "127.5,127.5,127.5", "DEDUP_FACE_STD": "128,128,128", "DEDUP_FACE_OUTPUT_DIM": "16",
            "DEDUP_FACE_ALIGN_PADDING": "0.4", "DEDUP_FACE_DEVICE": "cpu", **FAST}
    batch = write_batch(tmp_path / "b", [{"enrolment_id": "E1", "centre_id": "C1", "photo": "astronaut"}], photos)
    deployment.json("submit", str(batch), user="c1")

    refused = deployment.run("run", "--once", code=2, env=plug)
    model_id = model_id_for(ModelSpec.from_settings(load_settings(deployment.home, environ=plug).face))
    assert model_id.startswith("onnx-")
    assert f"face model {model_id} has no model card" in refused.stderr
    assert "dedup calibrate --templates" in refused.stderr and "--apply" in refused.stderr
    assert "Traceback" not in refused.stderr + refused.stdout
    # Nothing was claimed, embedded or searched, and dlib's threshold was never borrowed.
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        assert conn.execute("SELECT state, unit_id FROM enrolments").fetchall() == [{"state": "received", "unit_id": None}]
        assert conn.execute("SELECT count(*) AS n FROM run_units").fetchone()["n"] == 0
    assert not (deployment.home / "gallery" / "CURRENT").exists()
    assert not list((deployment.home / "store").glob("work/*"))

    # The remedy it names: labelled templates of this model calibrate a card for the deployment.
    data = SyntheticData(SynthSpec(get_profile("face-like", 16), 3000, queries=0, duplicate_rate=0.05, seed=9))
    files = write_parquet(data, tmp_path / "labelled")
    table = pq.read_table(files["gallery"])
    table = table.set_column(table.schema.get_field_index("model_id"), "model_id", pa.array([model_id] * table.num_rows))
    labelled = tmp_path / "labelled.parquet"
    pq.write_table(table, labelled)
    deployment.json("calibrate", "--templates", str(labelled), "--gallery-size", "1000", "--apply", env=plug)
    card = json.loads((deployment.home / "modelcard.json").read_text())
    assert (card["model_id"], card["dim"], card["documented_threshold"]) == (model_id, 16, None)
    out = deployment.run("run", "--once", "--json", env=plug)
    assert json.loads(out.stdout)["enrolments"] == 1
    [row] = audit_rows(database_url, "threshold.set")
    assert row["detail"]["source"] == "deployment-calibration" and row["detail"]["model_id"] == model_id
    assert _status(deployment, "E1")["judged_threshold"] == row["detail"]["new"]
