"""Reading a batch manifest (Parquet) and judging each row on its own.

File-level problems (not Parquet, wrong schema, more rows or decoded bytes than the
``[store]`` manifest limits) stop the submission with ``BadInput``: nothing can be judged
row by row. The limits are checked from the Parquet metadata (rows, and each column
chunk's decoded size) before anything is decoded; then the fields are read row group by
row group, and photos held in the manifest one row group at a time, so the memory a
manifest takes is bounded by the settings, not by what the file is. Everything else is per row: a row gets a reason code
and a detail for people, and never stops the others.

Reason codes (stable; centres may act on them):
``missing_field``, ``bad_value``, ``unknown_centre``, ``centre_not_permitted``,
``duplicate_in_batch``, ``already_received``, ``missing_photo``, ``path_outside_batch``,
``photo_too_large``, ``unreadable_image``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dedup.config import StoreSettings
from dedup.errors import BadInput
from dedup.schemas import MANIFEST_PHOTO_TYPES, MANIFEST_SCHEMA, check_schema

ENROLMENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
SEXES = {"F", "M", "X"}
MAX_TEXT = 4096  # characters of a text value kept (a photo path's limit); every field's own limit is smaller
_BYTE_COLUMNS = ("enrolment_id", "centre_id", "photo", "sex", "region")
# What the decoder may spend beyond a column chunk's stated size (offsets, validity bitmaps)
# before the chunk counts as lying about its size.
_SLACK = 2.0


@dataclass(frozen=True)
class ManifestLimits:
    """What a manifest may make us decode: checked from its Parquet metadata before any of it is."""

    max_rows: int = 1_000_000
    max_chunk_bytes: int = 256_000_000  # one photo column chunk (one row group), decoded
    max_field_bytes: int = 128_000_000  # every other column of every row group, decoded

    @classmethod
    def of(cls, store: StoreSettings) -> ManifestLimits:
        """The limits of ``[store]`` settings."""
        return cls(store.max_manifest_rows, store.max_manifest_chunk_bytes, store.max_manifest_field_bytes)


@dataclass(frozen=True)
class EmbeddedPhoto:
    """A photo held in the manifest itself, not read yet: its size in bytes."""

    size: int


@dataclass(frozen=True)
class ManifestRow:
    """One manifest row as read (values not yet judged). ``photo`` is the path as given, or
    the size of photo bytes held in the manifest (read later by :meth:`Manifest.embedded_photos`)."""

    row: int
    enrolment_id: str | None
    centre_id: str | None
    captured_at: dt.datetime | None
    photo: str | EmbeddedPhoto | None
    sex: str | None
    birth_year: int | None
    region: str | None


@dataclass(frozen=True)
class Rejection:
    """Why a row was rejected: a stable code and a sentence for people."""

    reason: str
    detail: str


@dataclass
class Manifest:
    """An opened, size-checked manifest: its rows' fields, and its photos one row group at a time."""

    path: Path
    shown: str
    rows: list[ManifestRow]
    _file: pq.ParquetFile
    _claims: list[int]  # stated decoded bytes of the photo column, per row group

    def embedded_photos(self, wanted: set[int]) -> Iterator[tuple[int, bytes]]:
        """(row, photo bytes) for the ``wanted`` rows whose photo is in the manifest; one row
        group is decoded at a time, so memory stays within ``max_chunk_bytes``."""
        start = 0
        for group in range(self._file.metadata.num_row_groups):
            count = self._file.metadata.row_group(group).num_rows
            rows = [r for r in range(start, start + count) if r in wanted and isinstance(self.rows[r].photo, EmbeddedPhoto)]
            if rows:
                column = _read_group(self._file, group, ["photo"], self._claims[group], self.shown).column("photo")
                for r in rows:
                    yield r, _photo(column, r - start)
                del column
            start += count


def read_manifest(path: Path, limits: ManifestLimits | None = None, shown: str | None = None) -> Manifest:
    """Open and check a manifest; BadInput when it cannot be read, or its metadata says it
    would decode to more than ``limits`` allow (nothing of it is decoded then).

    ``shown`` names the file in messages (default: the path as given).
    """
    limits = limits or ManifestLimits()
    shown = shown or str(path)
    try:
        # Text and bytes columns are read as dictionaries when the file has them so: a value
        # repeated a million times is then held once, not a million times.
        present = pq.ParquetFile(path).schema_arrow.names
        pf = pq.ParquetFile(path, read_dictionary=[n for n in _BYTE_COLUMNS if n in present])
    except FileNotFoundError:
        raise BadInput(f"{shown}: no such file") from None
    except (pa.ArrowException, OSError) as exc:
        raise BadInput(f"{shown}: not a readable Parquet file ({_first_line(exc)})") from None
    check_schema(_undictionary(pf.schema_arrow), MANIFEST_SCHEMA, shown, {"photo": MANIFEST_PHOTO_TYPES})
    meta = pf.metadata
    if meta.num_rows > limits.max_rows:
        raise BadInput(f"{shown}: {meta.num_rows} rows; a batch holds at most {limits.max_rows} (store.max_manifest_rows)")
    names = [n for n in MANIFEST_SCHEMA.names if n in pf.schema_arrow.names]
    photo_type = _undictionary(pf.schema_arrow).field("photo").type
    photo_is_path = pa.types.is_string(photo_type) or pa.types.is_large_string(photo_type)
    field_names = [n for n in names if n != "photo" or photo_is_path]
    claims, field_bytes, counted = [], 0, 0
    for group in range(meta.num_row_groups):
        rg = meta.row_group(group)
        counted += rg.num_rows
        sizes = _column_sizes(rg, shown, group)
        photo = sizes.get("photo", 0)
        if not photo_is_path and photo > limits.max_chunk_bytes:
            raise BadInput(f"{shown}: row group {group} holds {photo} bytes of photos ({rg.num_rows} rows) once decoded; "
                           f"at most {limits.max_chunk_bytes} are read at once (store.max_manifest_chunk_bytes): "
                           "write the manifest with smaller row groups")
        claims.append(photo)
        field_bytes += sum(sizes.get(n, 0) for n in field_names)
        if field_bytes > limits.max_field_bytes:
            raise BadInput(f"{shown}: its ids, dates and other fields decode to more than {limits.max_field_bytes} bytes "
                           "(store.max_manifest_field_bytes)")
    if counted != meta.num_rows:
        raise BadInput(f"{shown}: its row groups hold {counted} rows but its footer says {meta.num_rows}")
    return Manifest(path, shown, _read_fields(pf, field_names, photo_is_path, claims, shown), pf, claims)


def _undictionary(schema: pa.Schema) -> pa.Schema:
    """The schema with dictionary columns as their values' type (how they read, one value per row)."""
    return pa.schema([f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f for f in schema], schema.metadata)


def _column_sizes(rg: Any, shown: str, group: int) -> dict[str, int]:
    """Stated decoded bytes per top-level column of one row group; BadInput for an encoding
    that can decode to far more than it states (DELTA_BYTE_ARRAY shares prefixes between values)."""
    sizes: dict[str, int] = {}
    for i in range(rg.num_columns):
        col = rg.column(i)
        name = col.path_in_schema.split(".")[0]
        if name in _BYTE_COLUMNS and "DELTA_BYTE_ARRAY" in col.encodings:
            raise BadInput(f"{shown}: column {name} of row group {group} is DELTA_BYTE_ARRAY-encoded; write the manifest "
                           "with plain or dictionary encoding (pyarrow's and Spark's default)")
        sizes[name] = sizes.get(name, 0) + max(0, col.total_uncompressed_size)
    return sizes


def _read_group(pf: pq.ParquetFile, group: int, columns: list[str], claimed: int, shown: str) -> pa.Table:
    """One row group's columns, refused when they decode to much more than the metadata said."""
    try:
        table = pf.read_row_group(group, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise BadInput(f"{shown}: row group {group} cannot be read ({_first_line(exc)})") from None
    if table.nbytes > _SLACK * claimed + (1 << 20) * table.num_columns:
        raise BadInput(f"{shown}: row group {group} decodes to {table.nbytes} bytes, more than its metadata states ({claimed})")
    return table


def _read_fields(pf: pq.ParquetFile, names: list[str], photo_is_path: bool, photo_claims: list[int], shown: str) -> list[ManifestRow]:
    """Every row's fields, row group by row group; embedded photos only as their sizes."""
    rows: list[ManifestRow] = []
    for group in range(pf.metadata.num_row_groups):
        rg = pf.metadata.row_group(group)
        sizes = _column_sizes(rg, shown, group)
        table = _read_group(pf, group, names, sum(sizes.get(n, 0) for n in names), shown)
        n = table.num_rows
        cols = {name: _values(table.column(name)) if name in table.column_names else [None] * n for name in MANIFEST_SCHEMA.names}
        if not photo_is_path and "photo" in pf.schema_arrow.names:
            photos = _read_group(pf, group, ["photo"], photo_claims[group], shown).column("photo")
            cols["photo"] = [None if size is None else EmbeddedPhoto(size) for size in _lengths(photos)]
            del photos
        base = len(rows)
        rows.extend(
            ManifestRow(
                row=base + i,
                enrolment_id=cols["enrolment_id"][i],
                centre_id=cols["centre_id"][i],
                captured_at=_as_utc(cols["captured_at"][i]),
                photo=cols["photo"][i],
                sex=cols["sex"][i],
                birth_year=cols["birth_year"][i],
                region=cols["region"][i],
            )
            for i in range(n)
        )
    return rows


def _values(column: pa.ChunkedArray) -> list[Any]:
    """A column as Python values; text longer than MAX_TEXT is cut to MAX_TEXT + 1 characters (the
    row is rejected for it), and a dictionary's values are converted once, not once per row."""
    out: list[Any] = []
    for chunk in column.chunks:
        if pa.types.is_dictionary(chunk.type):
            values = [_cut(v) for v in chunk.dictionary.to_pylist()]
            out.extend(None if i is None else values[i] for i in chunk.indices.to_pylist())
        else:
            out.extend(_cut(v) for v in chunk.to_pylist())
    return out


def _cut(value: Any) -> Any:
    return value[:MAX_TEXT + 1] if isinstance(value, str) and len(value) > MAX_TEXT else value


def _lengths(column: pa.ChunkedArray) -> list[int | None]:
    """Byte length of every value of a binary column (dictionary or not)."""
    out: list[int | None] = []
    for chunk in column.chunks:
        if pa.types.is_dictionary(chunk.type):
            sizes = pc.binary_length(chunk.dictionary).to_pylist()
            out.extend(None if i is None else sizes[i] for i in chunk.indices.to_pylist())
        else:
            out.extend(pc.binary_length(chunk).to_pylist())
    return out


def _photo(column: pa.ChunkedArray, index: int) -> bytes:
    """The photo bytes of one row of a (possibly dictionary) binary column."""
    value = column[index]
    if isinstance(value, pa.DictionaryScalar):
        value = value.value
    data = value.as_py()
    return data if isinstance(data, bytes) else b""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _as_utc(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:  # naive timestamps are read as UTC (documented in the schema)
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def check_fields(row: ManifestRow, now: dt.datetime) -> Rejection | None:
    """Judge a row's own values (no database, no files)."""
    for name in ("enrolment_id", "centre_id", "captured_at", "photo"):
        value = getattr(row, name)
        if value is None or (isinstance(value, (str, bytes)) and len(value) == 0) or value == EmbeddedPhoto(0):
            return Rejection("missing_field", f"{name} is empty")
    assert row.enrolment_id is not None and row.captured_at is not None
    if isinstance(row.photo, str) and len(row.photo) > MAX_TEXT:
        return Rejection("bad_value", f"the photo path is longer than {MAX_TEXT} characters")
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
