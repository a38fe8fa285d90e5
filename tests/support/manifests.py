"""Batch manifests (Parquet) as centres submit them, built from rows given in tests."""

from __future__ import annotations

import datetime as dt
import io
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

CAPTURED = dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.UTC)


def manifest_table(rows: list[dict[str, Any]]) -> pa.Table:
    """A manifest of ``rows`` (dicts): ``photo`` is a path string or the photo's bytes.

    ``captured_at`` defaults to CAPTURED; ``sex``, ``birth_year`` and ``region`` to null.
    """
    kind = pa.binary() if rows and all(isinstance(r["photo"], bytes) for r in rows) else pa.string()
    schema = pa.schema([("enrolment_id", pa.string()), ("centre_id", pa.string()), ("captured_at", pa.timestamp("us", tz="UTC")),
                        ("photo", kind), ("sex", pa.string()), ("birth_year", pa.int32()), ("region", pa.string())])
    full = [{**r, "captured_at": r.get("captured_at", CAPTURED)} for r in rows]
    return pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in full], schema=schema)


def manifest_bytes(rows: list[tuple[str, str, str | bytes]]) -> bytes:
    """A Parquet manifest of (enrolment_id, centre_id, photo path or bytes) rows, every
    enrolment ``F``, born 1970, region ``north``."""
    table = manifest_table([{"enrolment_id": e, "centre_id": c, "photo": p, "sex": "F", "birth_year": 1970, "region": "north"}
                            for e, c, p in rows])
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def write_batch(folder: Path, rows: list[dict[str, Any]], photos: dict[str, Path], name: str = "manifest.parquet") -> Path:
    """A batch folder with a manifest; a row's ``photo`` naming a sample is copied in.

    Rows give ``enrolment_id``, ``centre_id`` and ``photo`` (a sample name, a relative path
    as is, or bytes); ``captured_at`` defaults to a fixed time.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "photos").mkdir(exist_ok=True)
    table_rows = []
    for r in rows:
        photo = r["photo"]
        if isinstance(photo, str) and photo in photos:
            target = folder / "photos" / photos[photo].name
            if not target.exists():
                shutil.copy(photos[photo], target)
            photo = f"photos/{photos[photo].name}"
        table_rows.append({**r, "photo": photo})
    path = folder / name
    pq.write_table(manifest_table(table_rows), path)
    return path
