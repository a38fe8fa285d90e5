"""A deployment's ``calibration.json``: the tail model ``dedup calibrate --apply`` fitted for it.

Statistics only (no template). ``dedup.operating_point`` reads it; nothing else does.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dedup.errors import BadInput
from dedup.evaluation.tail import TailModel
from dedup.fsutil import atomic_write_text, existing_mode

CALIBRATION_FILE = "calibration.json"
CALIBRATION_VERSION = 1


def save_calibration(home: Path, calibration: dict[str, Any], tail: TailModel) -> Path:
    """Write ``calibration.json`` atomically (``calibration``: the ``Calibration`` record as a dict)."""
    path = Path(home) / CALIBRATION_FILE
    doc = {"version": CALIBRATION_VERSION, "written_at": datetime.now(UTC).isoformat(),
           "calibration": calibration, "tail": tail.to_dict()}
    atomic_write_text(path, json.dumps(doc, indent=1, sort_keys=True) + "\n", existing_mode(path, 0o600))
    return path


def load_calibration(home: Path) -> tuple[dict[str, Any], TailModel] | None:
    """The deployment's saved calibration (with ``written_at``) and tail model, or None when it has none."""
    path = Path(home) / CALIBRATION_FILE
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("version") != CALIBRATION_VERSION:
            raise BadInput(f"{path}: calibration version {doc.get('version')}, expected {CALIBRATION_VERSION}; "
                           "run `dedup calibrate --apply` again")
        return {**doc["calibration"], "written_at": doc.get("written_at")}, TailModel.from_dict(doc["tail"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadInput(f"{path}: not a calibration file ({exc}); run `dedup calibrate --apply` again") from None
