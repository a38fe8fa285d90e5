"""A live deployment's gallery for the calibration and threshold tests: accepted identities
(real enrolments through `dedup submit`, UINs issued in PostgreSQL) whose gallery templates are
face-like synthetic vectors under the pipeline's ids, one enrolment in adjudication, and
synthetic fill. Embedding dozens of distinct real faces is more than installed packages ship."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg.rows import dict_row

from tests.support.cli import Cli
from tests.support.manifests import write_batch


def accepted_gallery(deployment: Cli, database_url: str, folder: Path, photos: dict[str, Path],
                     accepted: int, synthetic: int) -> dict[str, Any]:
    """``accepted`` identities with a UIN (the last one decided but not yet in the gallery), one
    enrolment in adjudication (a copy of the first identity's template) and ``synthetic`` rows."""
    from dedup.deployment import open_deployment
    from dedup.face.model import ModelSpec, model_id_for
    from dedup.pipeline import ensure_gallery, fill_synthetic, gallery_name, synthetic_sample
    from dedup.store.identities import issue_uin

    rows = [{"enrolment_id": f"P{i:03d}", "centre_id": "C1", "photo": "camera"} for i in range(accepted + 1)]
    receipt = deployment.json("submit", str(write_batch(folder, rows, photos)), user="c1")
    assert receipt["accepted"] == accepted + 1
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        pks = [r["enrolment_pk"] for r in conn.execute("SELECT enrolment_pk FROM enrolments ORDER BY enrolment_pk")]
        with conn.transaction():
            for pk in pks[:accepted]:
                issue_uin(conn, pk, "test")
            conn.execute("UPDATE enrolments SET state = 'adjudication' WHERE enrolment_pk = %s", (pks[accepted],))
    dep = open_deployment(deployment.home)
    spec = ModelSpec.from_settings(dep.settings.face)
    model_id = model_id_for(spec)
    assert fill_synthetic(dep, synthetic, model_id, spec.output_dim) == synthetic
    vectors = synthetic_sample(spec.output_dim, accepted, seed=5)
    in_gallery = pks[: accepted - 1]
    gallery = ensure_gallery(dep, model_id, spec.output_dim)
    gallery.add(np.concatenate([vectors[: accepted - 1], vectors[:1]]),
                [gallery_name(pk) for pk in in_gallery] + [gallery_name(pks[accepted])], model_id=model_id)
    return {"vectors": vectors[: accepted - 1], "model_id": model_id, "size": synthetic + accepted, "dim": spec.output_dim}


def audit_rows(database_url: str, action: str) -> list[dict[str, Any]]:
    """Every audit row of ``action``, oldest first."""
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM audit WHERE action = %s ORDER BY audit_id", (action,)).fetchall()
