"""`dedup gallery coverage` in a deployment: only an admin may change the list count every
search uses, the refusal comes before any template is read, and the change is audited (the
test session's PostgreSQL, a gallery the real pipeline built from real photos)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from dedup.bench.synth import SyntheticData, SynthSpec, get_profile, write_parquet
from dedup.index.gallery import Gallery
from tests.support.cli import Cli
from tests.system.test_system_integrity import enrol_two
from tests.system.test_system_pipeline import faces  # noqa: F401  (a fixture)


def labelled_set(tmp_path: Path, model_id: str, dim: int) -> Path:
    """Synthetic labelled templates, relabelled as the deployment's model (same dimension)."""
    data = SyntheticData(SynthSpec(get_profile("face-like", dim=dim), 6000, 10, 0.3, 0.5, 4))
    path = write_parquet(data, tmp_path / "labelled")["gallery"]
    table = pq.read_table(path)
    i = table.schema.get_field_index("model_id")
    table = table.set_column(i, table.schema.field(i), pa.array([model_id] * table.num_rows, pa.string()))
    pq.write_table(table, path)
    return path


def test_only_an_admin_measures_list_coverage_and_it_is_audited(deployment: Cli, database_url: str, tmp_path: Path,
                                                                 faces: Path) -> None:  # noqa: F811
    enrol_two(deployment, tmp_path, faces)
    gallery = Gallery.open(deployment.home / "gallery")
    missing = tmp_path / "not-there.parquet"
    # A supervisor is refused before the (here missing) templates are even looked at.
    err = deployment.run("gallery", "coverage", str(missing), user="sue", code=5).stderr
    assert "may not gallery coverage" in err and "allowed roles: admin" in err, err
    path = labelled_set(tmp_path, gallery.model_id, gallery.dim)
    out = deployment.json("gallery", "coverage", str(path), user="admin")
    assert out["pairs"] > 1000
    assert Gallery.open(deployment.home / "gallery").coverage is not None
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT actor, action, object_id FROM audit WHERE action = 'gallery.coverage'").fetchall()
    assert rows == [("admin", "gallery.coverage", gallery.manifest.codec_version)]
