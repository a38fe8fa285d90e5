"""On-disk formats of dedup, defined once as pyarrow schemas.

This folder ships inside the package as ``dedup.schemas`` (see ``pyproject.toml``), so the
same definitions serve the source tree and an installed wheel. Every Parquet file dedup
writes is written with one of these, and every one it reads is checked against them
(``check_schema``), so a wrong file gets a clear message instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa

SCHEMA_VERSION = "1"


def templates_schema(dim: int) -> pa.Schema:
    """Templates: one row per face that passed, from ``dedup embed`` or ``dedup.bench.synth``.

    - ``source``: the photo's path as given, or ``synth:...`` for synthetic templates
    - ``model_id``: the face model that made the embedding; different models never compare
    - ``embedding``: L2-normalised float32 vector of ``dim`` values
    - ``quality``: 0..1, higher is better (synthetic: the capture's quality draw)
    - ``identity`` / ``group``: labels for evaluation sets (null for real enrolments);
      ``group`` is a demographic label used only for accuracy audits, never for matching
    - ``synthetic``: true for generated templates, so they are marked everywhere they appear
    """
    return pa.schema(
        [
            pa.field("source", pa.string(), nullable=False),
            pa.field("model_id", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), dim), nullable=False),
            pa.field("quality", pa.float32(), nullable=False),
            pa.field("identity", pa.string(), nullable=True),
            pa.field("group", pa.string(), nullable=True),
            pa.field("synthetic", pa.bool_(), nullable=False),
        ],
        metadata={"dedup.schema": "templates", "dedup.schema_version": SCHEMA_VERSION, "dedup.dim": str(dim)},
    )


REJECTS_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),  # a stable code: no_face, multiple_faces, ...
        pa.field("detail", pa.string(), nullable=False),  # measured value and limit, for people
    ],
    metadata={"dedup.schema": "rejects", "dedup.schema_version": SCHEMA_VERSION},
)

# The gallery's id map: one row per gallery row, per shard (``rows.parquet`` in a shard).
GALLERY_ROWS_SCHEMA = pa.schema(
    [
        pa.field("row_id", pa.int64(), nullable=False),
        pa.field("enrolment_id", pa.string(), nullable=False),
    ],
    metadata={"dedup.schema": "gallery_rows", "dedup.schema_version": SCHEMA_VERSION},
)

# Search results: one row per (probe, candidate) with the exact score.
CANDIDATES_SCHEMA = pa.schema(
    [
        pa.field("probe", pa.int64(), nullable=False),
        pa.field("row_id", pa.int64(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
    ],
    metadata={"dedup.schema": "candidates", "dedup.schema_version": SCHEMA_VERSION},
)

# A centre's batch manifest (``dedup submit``): one row per enrolment.
# - ``photo``: a path relative to the manifest's folder (string), or the image bytes
#   (binary); both types are accepted (``MANIFEST_PHOTO_TYPES``), the schema shows the path form
# - ``captured_at``: a timestamp (any unit); without a time zone it is read as UTC
# - ``sex`` (F, M or X), ``birth_year``, ``region``: optional, kept for accuracy and bias
#   audits only, never used for matching
MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("enrolment_id", pa.string(), nullable=False),
        pa.field("centre_id", pa.string(), nullable=False),
        pa.field("captured_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("photo", pa.string(), nullable=False),
        pa.field("sex", pa.string(), nullable=True),
        pa.field("birth_year", pa.int32(), nullable=True),
        pa.field("region", pa.string(), nullable=True),
    ],
    metadata={"dedup.schema": "manifest", "dedup.schema_version": SCHEMA_VERSION},
)
MANIFEST_PHOTO_TYPES = (pa.string(), pa.large_string(), pa.binary(), pa.large_binary())

# ``dedup report BATCH_ID --out``: one row per manifest row with its current state.
REPORT_SCHEMA = pa.schema(
    [
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("row", pa.int32(), nullable=False),
        pa.field("enrolment_id", pa.string(), nullable=True),
        pa.field("centre_id", pa.string(), nullable=True),
        pa.field("state", pa.string(), nullable=False),  # received, rejected, processing, accepted, ...
        pa.field("reason", pa.string(), nullable=True),  # rejected: a stable code; recapture: the request
        pa.field("detail", pa.string(), nullable=True),
        pa.field("uin", pa.string(), nullable=True),  # accepted: the UIN issued
        pa.field("duplicate_of", pa.string(), nullable=True),  # duplicate: the existing UIN
        pa.field("case_id", pa.int64(), nullable=True),
        pa.field("judged_threshold", pa.float64(), nullable=True),  # the threshold `dedup run` decided it at
    ],
    metadata={"dedup.schema": "report", "dedup.schema_version": SCHEMA_VERSION},
)


def check_schema(actual: pa.Schema, expected: pa.Schema, what: str,
                 alternatives: Mapping[str, tuple[pa.DataType, ...]] | None = None) -> None:
    """Raise ``dedup.errors.BadInput`` naming every missing or mistyped column.

    The one schema check for every file dedup reads (manifests, templates, rejects). A column
    may be nullable-absent; a type passes when it reads alike (see ``_reads_as``), or is one
    of the column's ``alternatives`` (the manifest's photo: a path or the image bytes).
    """
    from dedup.errors import BadInput

    alternatives = alternatives or {}
    problems = []
    for f in expected:
        idx = actual.get_field_index(f.name)
        if idx < 0:
            if not f.nullable:
                problems.append(f"missing column {f.name!r} ({_describe(f.type, alternatives.get(f.name))})")
            continue
        got = actual.field(idx).type
        allowed = alternatives.get(f.name)
        ok = any(got.equals(t) for t in allowed) if allowed else _reads_as(got, f.type)
        if not ok:
            problems.append(f"column {f.name!r} is {got}, expected {_describe(f.type, allowed)}")
    if problems:
        name = (expected.metadata or {}).get(b"dedup.schema", b"").decode()
        raise BadInput(f"{what}: wrong schema: " + "; ".join(problems) + (f" (see dedup.schemas, {name!r})" if name else ""))


def _reads_as(got: pa.DataType, want: pa.DataType) -> bool:
    """Whether a column of type ``got`` reads as ``want``: the same type, any integer for an
    integer, any timestamp (unit, zone: naive is UTC) for a timestamp, large_string for string,
    a fixed-size list of the same size and value type."""
    if got.equals(want):
        return True
    if pa.types.is_integer(want):
        return pa.types.is_integer(got)
    if pa.types.is_timestamp(want):
        return pa.types.is_timestamp(got)
    if pa.types.is_string(want):
        return pa.types.is_large_string(got)
    if pa.types.is_fixed_size_list(want) and pa.types.is_fixed_size_list(got):
        return got.list_size == want.list_size and got.value_type.equals(want.value_type)
    return False


def _describe(want: pa.DataType, allowed: tuple[pa.DataType, ...] | None) -> str:
    if allowed:
        return " or ".join(str(t) for t in allowed)
    if pa.types.is_integer(want):
        return "an integer"
    if pa.types.is_timestamp(want):
        return "a timestamp"
    return str(want)
