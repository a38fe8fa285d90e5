"""Reading a batch manifest (Parquet) and judging each row on its own.

File-level problems (not Parquet, wrong schema) stop the submission with ``BadInput``:
nothing can be judged row by row. Everything else is per row: a row gets a reason code
and a detail for people, and never stops the others.

Reason codes (stable; centres may act on them):
``missing_field``, ``bad_value``, ``unknown_centre``, ``centre_not_permitted``,
``duplicate_in_batch``, ``already_received``, ``missing_photo``, ``path_outside_batch``,
``photo_too_large``, ``unreadable_image``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dedup.errors import BadInput
from dedup.schemas import MANIFEST_PHOTO_TYPES, MANIFEST_SCHEMA, check_schema

ENROLMENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
SEXES = {"F", "M", "X"}
MAX_ROWS = 1_000_000


@dataclass(frozen=True)
class ManifestRow:
    """One manifest row as read (values not yet judged)."""

    row: int
    enrolment_id: str | None
    centre_id: str | None
    captured_at: dt.datetime | None
    photo: str | bytes | None
    sex: str | None
    birth_year: int | None
    region: str | None


@dataclass(frozen=True)
class Rejection:
    """Why a row was rejected: a stable code and a sentence for people."""

    reason: str
    detail: str


def read_manifest(path: Path) -> list[ManifestRow]:
    """Read and schema-check a manifest; raise BadInput when it cannot be read at all."""
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except (pa.ArrowException, OSError) as exc:
        raise BadInput(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0][:200]})") from None
    check_schema(table.schema, MANIFEST_SCHEMA, str(path), {"photo": MANIFEST_PHOTO_TYPES})
    if table.num_rows > MAX_ROWS:
        raise BadInput(f"{path}: {table.num_rows} rows; a batch holds at most {MAX_ROWS}")
    cols = {name: table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows
            for name in MANIFEST_SCHEMA.names}
    return [
        ManifestRow(
            row=i,
            enrolment_id=cols["enrolment_id"][i],
            centre_id=cols["centre_id"][i],
            captured_at=_as_utc(cols["captured_at"][i]),
            photo=cols["photo"][i],
            sex=cols["sex"][i],
            birth_year=cols["birth_year"][i],
            region=cols["region"][i],
        )
        for i in range(table.num_rows)
    ]


def _as_utc(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:  # naive timestamps are read as UTC (documented in the schema)
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def check_fields(row: ManifestRow, now: dt.datetime) -> Rejection | None:
    """Judge a row's own values (no database, no files)."""
    for name in ("enrolment_id", "centre_id", "captured_at", "photo"):
        value = getattr(row, name)
        if value is None or (isinstance(value, (str, bytes)) and len(value) == 0):
            return Rejection("missing_field", f"{name} is empty")
    assert row.enrolment_id is not None and row.captured_at is not None
    if not ENROLMENT_ID.match(row.enrolment_id):
        return Rejection("bad_value", "enrolment_id must be 1-128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit")
    if row.captured_at > now + dt.timedelta(days=1):
        return Rejection("bad_value", f"captured_at {row.captured_at.isoformat()} is in the future")
    if row.sex is not None and row.sex not in SEXES:
        return Rejection("bad_value", f"sex must be F, M or X (or empty), not {row.sex[:20]!r}")
    if row.birth_year is not None and not (1900 <= row.birth_year <= now.year):
        return Rejection("bad_value", f"birth_year {row.birth_year} is outside 1900..{now.year}")
    if row.region is not None and len(row.region) > 64:
        return Rejection("bad_value", "region is longer than 64 characters")
    return None


def resolve_photo_path(batch_dir: Path, relative: str) -> Path | Rejection:
    """The photo file named by a manifest row, or why it cannot be used.

    The path must be relative and stay inside the batch folder once symbolic links are
    followed: a manifest cannot make the store read any other file of the machine.
    """
    if "\x00" in relative:
        return Rejection("path_outside_batch", "the photo path contains a NUL character")
    rel = Path(relative)
    if rel.is_absolute():
        return Rejection("path_outside_batch", f"photo path {relative!r} is absolute; give it relative to the manifest's folder")
    root = batch_dir.resolve()
    target = (root / rel).resolve()
    if target != root and root not in target.parents:
        return Rejection("path_outside_batch", f"photo path {relative!r} leads outside the batch folder")
    if not target.exists():
        return Rejection("missing_photo", f"photo file {relative!r} does not exist")
    if not target.is_file():
        return Rejection("missing_photo", f"photo path {relative!r} is not a file")
    return target
