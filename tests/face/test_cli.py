"""`dedup embed` end to end: files and folders in, Parquet out, errors as messages."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from dedup.cli import app
from dedup.schemas import REJECTS_SCHEMA, check_schema, templates_schema
from tests.support.photos import encode

runner = CliRunner()


def make_folder(tmp_path: Path, astronaut, grace_jpeg) -> Path:  # type: ignore[no-untyped-def]
    photos = tmp_path / "photos"
    (photos / "more").mkdir(parents=True)
    (photos / "astronaut.png").write_bytes(encode(astronaut))
    (photos / "more" / "grace.jpg").write_bytes(grace_jpeg)
    (photos / "more" / "notes.jpg").write_text("not a photo")
    (photos / "readme.txt").write_text("ignored: not an image name")
    return photos


def test_embed_folder_and_files(tmp_path: Path, astronaut, grace_jpeg, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    make_folder(tmp_path, astronaut, grace_jpeg)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEDUP_FACE_DEVICE", "cpu")
    out = tmp_path / "out" / "templates.parquet"
    result = runner.invoke(app, ["embed", "photos", "missing.jpg", "--out", str(out), "--json", "--home", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["photos"] == 4 and report["accepted"] == 2 and report["rejected"] == 2
    assert report["reasons"] == {"not_an_image": 1, "not_found": 1}
    assert report["cosine_threshold"] == 0.9082 and report["dim"] == 128
    templates = pq.read_table(out)
    rejects = pq.read_table(tmp_path / "out" / "templates.rejects.parquet")
    check_schema(templates.schema, templates_schema(128), "templates")
    check_schema(rejects.schema, REJECTS_SCHEMA, "rejects")
    assert templates.column("source").to_pylist() == ["photos/astronaut.png", "photos/more/grace.jpg"]
    assert set(templates.column("model_id").to_pylist()) == {report["model_id"]}
    assert rejects.column("source").to_pylist() == ["photos/more/notes.jpg", "missing.jpg"]


def test_human_output_and_rejects_option(tmp_path: Path, astronaut, grace_jpeg) -> None:  # type: ignore[no-untyped-def]
    photos = make_folder(tmp_path, astronaut, grace_jpeg)
    rej = tmp_path / "why.parquet"
    result = runner.invoke(app, ["embed", str(photos / "more"), "--out", str(tmp_path / "t.parquet"), "--rejects", str(rej),
                                 "--device", "cpu", "--home", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "1 of 2 photos gave a template" in result.output and "not_an_image" in result.output
    assert pq.read_table(rej).num_rows == 1


def test_bad_arguments_are_messages_not_tracebacks(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["embed", str(tmp_path / "empty"), "--out", str(tmp_path / "t.parquet"), "--home", str(tmp_path)])
    assert result.exit_code == 2 and "no photos found" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["embed", str(tmp_path), "--out", str(tmp_path / "t.parquet"), "--batch-size", "0",
                                 "--home", str(tmp_path)])
    assert result.exit_code == 2 and "batch_size must be >= 1" in result.output
    (tmp_path / "dedup.toml").write_text('[face]\nmodel = "onnx"\nmodel_path = "nowhere.onnx"\n' + 'input_size = 112\n')
    (tmp_path / "a.jpg").write_bytes(b"x")
    result = runner.invoke(app, ["embed", str(tmp_path / "a.jpg"), "--out", str(tmp_path / "t.parquet"), "--home", str(tmp_path)])
    assert result.exit_code == 2 and "nowhere.onnx" in result.output and "Traceback" not in result.output
