"""Writing a batch report to Parquet or CSV (``dedup report --out``), in REPORT_SCHEMA."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dedup.fsutil import atomic_path
from dedup.schemas import REPORT_SCHEMA
from dedup.store.batches import EnrolmentState


def report_table(states: Sequence[EnrolmentState]) -> pa.Table:
    """The report as an Arrow table (one row per manifest row)."""
    cols = {
        "batch_id": [s.batch_id for s in states],
        "row": [s.row for s in states],
        "enrolment_id": [s.enrolment_id for s in states],
        "centre_id": [s.centre_id for s in states],
        "state": [s.state for s in states],
        "reason": [s.reason for s in states],
        "detail": [s.detail for s in states],
        "uin": [s.uin for s in states],
        "duplicate_of": [s.duplicate_of for s in states],
        "case_id": [s.case_id for s in states],
        "judged_threshold": [s.judged_threshold for s in states],
    }
    return pa.table(cols, schema=REPORT_SCHEMA)


def write_report(states: Sequence[EnrolmentState], out: Path) -> None:
    """Write atomically to ``out`` (``.parquet`` or ``.csv``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = report_table(states)
    with atomic_path(out) as tmp:
        if out.suffix == ".parquet":
            pq.write_table(table, tmp)
        else:
            pacsv.write_csv(table, tmp)
