"""dedup.schemas.check_schema: the one schema check of every file dedup reads."""

from __future__ import annotations

import pyarrow as pa
import pytest

from dedup.errors import BadInput
from dedup.schemas import MANIFEST_PHOTO_TYPES, MANIFEST_SCHEMA, REJECTS_SCHEMA, check_schema, templates_schema


def _manifest(**types: pa.DataType) -> pa.Schema:
    fields = {f.name: f.type for f in MANIFEST_SCHEMA}
    fields.update(types)
    return pa.schema([(name, t) for name, t in fields.items() if t is not None])


@pytest.mark.parametrize("types", [
    {},
    {"photo": pa.binary()},                      # the image bytes instead of a path
    {"captured_at": pa.timestamp("ms")},         # any unit; naive is read as UTC
    {"birth_year": pa.int64()},                  # any integer
    {"enrolment_id": pa.large_string()},
    {"sex": None, "region": None, "birth_year": None},  # optional columns may be absent
])
def test_manifests_that_read_alike_pass(types: dict) -> None:
    check_schema(_manifest(**types), MANIFEST_SCHEMA, "m.parquet", {"photo": MANIFEST_PHOTO_TYPES})


def test_every_problem_is_named() -> None:
    bad = _manifest(centre_id=None, photo=pa.int32(), captured_at=pa.string())
    with pytest.raises(BadInput) as err:
        check_schema(bad, MANIFEST_SCHEMA, "m.parquet", {"photo": MANIFEST_PHOTO_TYPES})
    text = str(err.value)
    assert text.startswith("m.parquet: wrong schema: ")
    assert "missing column 'centre_id'" in text and "column 'photo' is int32" in text
    assert "column 'captured_at' is string, expected a timestamp" in text


def test_templates_need_the_right_dimension() -> None:
    schema = templates_schema(128)
    check_schema(schema, schema, "t.parquet")
    with pytest.raises(BadInput, match="column 'embedding'"):
        check_schema(templates_schema(64), schema, "t.parquet")
    check_schema(REJECTS_SCHEMA, REJECTS_SCHEMA, "r.parquet")
