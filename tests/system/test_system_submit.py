"""Centres' submissions, receipts, status and reports on a real PostgreSQL with real photos."""

from __future__ import annotations

import csv
import hashlib
import os
import stat
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.support.cli import Cli
from tests.support.manifests import write_batch


def reasons(receipt: dict) -> dict[str, str | None]:
    return {i["enrolment_id"]: i["reason"] for i in receipt["items"]}


def test_mixed_batch_gets_a_reason_per_row_and_the_rest_goes_through(deployment: Cli, tmp_path: Path, photos: dict) -> None:
    folder = tmp_path / "batch"
    (tmp_path / "outside.jpg").write_bytes(photos["coffee"].read_bytes())
    rows = [
        {"enrolment_id": "E1", "centre_id": "C1", "photo": "astronaut", "sex": "F", "birth_year": 1956, "region": "north"},
        {"enrolment_id": "E2", "centre_id": "C1", "photo": "camera"},
        {"enrolment_id": "E3", "centre_id": "C1", "photo": "photos/broken.jpg"},
        {"enrolment_id": "E4", "centre_id": "C1", "photo": "photos/nothing-here.jpg"},
        {"enrolment_id": "E5", "centre_id": "C1", "photo": "../outside.jpg"},
        {"enrolment_id": "E6", "centre_id": "C1", "photo": "/etc/passwd"},
        {"enrolment_id": "E7", "centre_id": "C9", "photo": "coffee"},
        {"enrolment_id": "E8", "centre_id": "C1", "photo": "chelsea"},
        {"enrolment_id": "E8", "centre_id": "C1", "photo": "rocket"},
        {"enrolment_id": "E9", "centre_id": "C1", "photo": "photos/escape.jpg"},
        {"enrolment_id": "E10", "centre_id": "C1", "photo": "photos/truncated.jpg"},
        {"enrolment_id": "", "centre_id": "C1", "photo": "coffee"},
        {"enrolment_id": "E12", "centre_id": "C1", "photo": "coffee", "sex": "female"},
    ]
    path = write_batch(folder, rows, photos)
    (folder / "photos" / "broken.jpg").write_bytes(b"this is not a jpeg")
    os.symlink(tmp_path / "outside.jpg", folder / "photos" / "escape.jpg")
    full = photos["astronaut"].read_bytes()
    (folder / "photos" / "truncated.jpg").write_bytes(full[: len(full) // 3])

    receipt = deployment.json("submit", str(path), user="c1")
    assert receipt["rows"] == 13 and receipt["accepted"] == 2 and receipt["rejected"] == 11
    got = {(i["row"]): (i["status"], i["reason"]) for i in receipt["items"]}
    assert got == {
        0: ("accepted", None), 1: ("accepted", None),
        2: ("rejected", "unreadable_image"), 3: ("rejected", "missing_photo"),
        4: ("rejected", "path_outside_batch"), 5: ("rejected", "path_outside_batch"),
        6: ("rejected", "unknown_centre"), 7: ("rejected", "duplicate_in_batch"), 8: ("rejected", "duplicate_in_batch"),
        9: ("rejected", "path_outside_batch"), 10: ("rejected", "unreadable_image"),
        11: ("rejected", "missing_field"), 12: ("rejected", "bad_value"),
    }
    assert "C9" in receipt["items"][6]["detail"] and "row(s) 8" in receipt["items"][7]["detail"]

    # Photos are kept once, content-addressed, readable by the operator only.
    store = deployment.home / "store" / "photos"
    kept = sorted(p for p in store.rglob("*") if p.is_file())
    assert len(kept) == 2
    for p in kept:
        assert hashlib.sha256(p.read_bytes()).hexdigest() == p.name
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert {p.name for p in kept} == {hashlib.sha256(photos[n].read_bytes()).hexdigest() for n in ("astronaut", "camera")}


def test_resubmission_changes_nothing_and_returns_the_same_receipt(deployment: Cli, tmp_path: Path, photos: dict) -> None:
    path = write_batch(tmp_path / "b", [{"enrolment_id": "E1", "centre_id": "C1", "photo": "astronaut"},
                                        {"enrolment_id": "E2", "centre_id": "C1", "photo": "photos/none.jpg"}], photos)
    first = deployment.run("submit", str(path), "--json", user="c1")
    again = deployment.run("submit", str(path), "--json", user="c1")
    assert again.stdout == first.stdout
    assert "already received" in again.stderr
    report = deployment.json("report", __import__("json").loads(first.stdout)["batch_id"], user="c1")
    assert len(report["rows"]) == 2


def test_enrolment_received_in_an_earlier_batch_is_rejected(deployment: Cli, tmp_path: Path, photos: dict) -> None:
    first = write_batch(tmp_path / "b1", [{"enrolment_id": "E1", "centre_id": "C1", "photo": "astronaut"}], photos)
    second = write_batch(tmp_path / "b2", [{"enrolment_id": "E1", "centre_id": "C1", "photo": "camera"},
                                           {"enrolment_id": "E1", "centre_id": "C2", "photo": "camera"}], photos)
    b1 = deployment.json("submit", str(first))
    r = deployment.json("submit", str(second))
    assert [(i["status"], i["reason"]) for i in r["items"]] == [("rejected", "already_received"), ("accepted", None)]
    assert b1["batch_id"] in r["items"][0]["detail"]


def test_photo_bytes_in_the_manifest(deployment: Cli, tmp_path: Path, photos: dict) -> None:
    path = write_batch(tmp_path / "b", [{"enrolment_id": "E1", "centre_id": "C1", "photo": photos["rocket"].read_bytes()},
                                        {"enrolment_id": "E2", "centre_id": "C1", "photo": b"\x89PNG garbage"}], photos)
    r = deployment.json("submit", str(path))
    assert [(i["status"], i["reason"]) for i in r["items"]] == [("accepted", None), ("rejected", "unreadable_image")]


def test_wrong_schema_and_non_parquet_are_specific_errors(deployment: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"enrolment_id": ["E1"], "captured_at": ["yesterday"], "photo": [1]}), bad)
    r = deployment.run("submit", str(bad), code=2)
    assert "wrong schema" in r.stderr and "missing column 'centre_id'" in r.stderr
    assert "column 'captured_at' is string" in r.stderr and "column 'photo' is int64" in r.stderr
    text = tmp_path / "notes.parquet"
    text.write_text("hello")
    assert "not a readable Parquet file" in deployment.run("submit", str(text), code=2).stderr
    assert "no such file" in deployment.run("submit", str(tmp_path / "missing.parquet"), code=2).stderr


def test_status_and_report_follow_the_enrolment(deployment: Cli, tmp_path: Path, photos: dict) -> None:
    path = write_batch(tmp_path / "b", [{"enrolment_id": "E1", "centre_id": "C1", "photo": "astronaut"},
                                        {"enrolment_id": "E2", "centre_id": "C1", "photo": "photos/none.jpg"}], photos)
    batch_id = deployment.json("submit", str(path), user="c1")["batch_id"]
    [st] = deployment.json("status", "E1", user="c1")
    assert st["state"] == "received" and st["batch_id"] == batch_id
    [st] = deployment.json("status", "E2", user="c1")
    assert st["state"] == "rejected" and st["reason"] == "missing_photo"
    deployment.run("status", "E404", user="c1", code=6)

    out_pq, out_csv = tmp_path / "r.parquet", tmp_path / "r.csv"
    deployment.run("report", batch_id, "--out", str(out_pq), user="c1")
    deployment.run("report", batch_id, "--out", str(out_csv), user="c1")
    table = pq.read_table(out_pq)
    assert table.column("state").to_pylist() == ["received", "rejected"]
    assert table.schema.metadata[b"dedup.schema"] == b"report"
    with out_csv.open() as f:
        assert [r["reason"] for r in csv.DictReader(f)] == ["", "missing_photo"]
    deployment.run("report", batch_id, "--out", str(tmp_path / "r.txt"), user="c1", code=2)
    deployment.run("report", "b-nope", user="sue", code=6)
