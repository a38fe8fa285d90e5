"""``dedup demo``: the whole system on the embedded defaults, in a temporary deployment.

It creates a deployment (embedded PostgreSQL), a centre, a centre user and an adjudicator;
optionally fills the gallery with N synthetic face-like templates (marked ``synth-`` and
shown as SYNTHETIC wherever they appear); submits one batch of real photographs; runs the
deduplication; and returns the receipt, the run's counts, the queue and the batch report.

The photos are the real ones that installed packages ship: scikit-image's ``astronaut``
(Eileen Collins) and matplotlib's ``grace_hopper``, each submitted twice (the second
capture is the same photograph re-framed, rotated, re-exposed and re-compressed: no package
ships two photographs of one person), scikit-image's ``coffee`` (no face), a truncated JPEG
and a text file named ``.jpg`` (bad files).
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dedup.errors import InvalidParameter

CENTRE = "DEMO-1"


@dataclass
class DemoResult:
    """Everything the demo shows."""

    home: str
    kept: bool
    gallery_size: int
    receipt: dict[str, Any]
    run: dict[str, Any]
    queue: list[dict[str, Any]]
    report: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def recapture(image: Any, seed: int) -> Any:
    """A second capture of the same face: another framing, a small rotation, other exposure."""
    from PIL import Image, ImageEnhance

    w, h = image.size
    dx, dy = (seed * 7) % 23 + 8, (seed * 11) % 29 + 6
    out = image.crop((dx, 0, w - dy, h - dx)).rotate(5 + seed % 3, resample=Image.Resampling.BICUBIC)
    out = out.resize((int(out.width * 0.85), int(out.height * 0.85)), Image.Resampling.LANCZOS)
    return ImageEnhance.Brightness(out).enhance(1.12)


def write_demo_batch(folder: Path) -> Path:
    """The demo's batch folder: photos and a manifest; returns the manifest path."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    try:
        from skimage import data
    except ImportError:
        raise InvalidParameter("the demo's photos come from scikit-image: pip install scikit-image (make demo does)") from None
    photos = folder / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    astronaut = Image.fromarray(data.astronaut())
    astronaut.save(photos / "astronaut-1.jpg", quality=92)
    recapture(astronaut, 1).save(photos / "astronaut-2.jpg", quality=75)
    Image.fromarray(data.coffee()).save(photos / "coffee.jpg")
    rows = [("A-001", "photos/astronaut-1.jpg"), ("A-002", "photos/astronaut-2.jpg"), ("X-001", "photos/coffee.jpg")]
    try:
        import matplotlib.cbook

        hopper = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
        hopper.save(photos / "hopper-1.jpg", quality=92)
        recapture(hopper, 2).save(photos / "hopper-2.jpg", quality=75)
        rows += [("G-001", "photos/hopper-1.jpg"), ("G-002", "photos/hopper-2.jpg")]
    except ImportError:
        pass  # matplotlib is optional: the demo then has one person fewer
    full = (photos / "astronaut-1.jpg").read_bytes()
    (photos / "truncated.jpg").write_bytes(full[: len(full) // 4])
    (photos / "notes.jpg").write_text("this is not a photo\n")
    rows += [("B-001", "photos/truncated.jpg"), ("B-002", "photos/notes.jpg"), ("B-003", "photos/missing.jpg")]
    when = dt.datetime(2024, 5, 1, 9, 0, tzinfo=dt.UTC)
    table = pa.table({
        "enrolment_id": [r[0] for r in rows],
        "centre_id": [CENTRE] * len(rows),
        "captured_at": pa.array([when + dt.timedelta(minutes=i) for i in range(len(rows))], pa.timestamp("us", tz="UTC")),
        "photo": [r[1] for r in rows],
    })
    path = folder / "manifest.parquet"
    pq.write_table(table, path)
    return path


def run_demo(gallery_size: int = 0, directory: Path | None = None, keep: bool = False,
             say: Callable[[str], None] = lambda _m: None) -> DemoResult:
    """Run the demonstration; the deployment is deleted afterwards unless ``keep`` or ``directory``."""
    from dedup.adjudication.queue import list_cases
    from dedup.deployment import init_deployment, open_deployment
    from dedup.face.model import ModelSpec, model_id_for
    from dedup.ingest.submit import submit_batch
    from dedup.pipeline import Runner, fill_synthetic
    from dedup.store import db as dbmod
    from dedup.store.batches import batch_report
    from dedup.store.centres import add_centre, list_centres
    from dedup.store.users import add_user, authenticate

    if gallery_size < 0:
        raise InvalidParameter("--gallery-size must be >= 0")
    root = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="dedup-demo-"))
    home = root / "deployment"
    keep = keep or directory is not None
    try:
        say(f"deployment: {home} (embedded PostgreSQL)")
        init_deployment(home)
        dep = open_deployment(home)
        with dep.database.session() as conn:
            admin = authenticate(conn, "admin")
            if CENTRE not in {c.centre_id for c in list_centres(conn, admin)}:
                add_centre(conn, admin, CENTRE, "Demo enrolment centre")
                add_user(conn, admin, "centre1", "centre", CENTRE)
                add_user(conn, admin, "adjudicator1", "adjudicator")
            centre = authenticate(conn, "centre1")
            adjudicator = authenticate(conn, "adjudicator1")
            size = 0
            if gallery_size:
                say(f"filling the gallery with {gallery_size} synthetic face-like templates (ids synth-*)")
                spec = ModelSpec.from_settings(dep.settings.face)
                size = fill_synthetic(dep, gallery_size, model_id_for(spec), spec.output_dim)
            manifest = write_demo_batch(root / "centre-batch")
            receipt, _ = submit_batch(dep, conn, centre, manifest)
            say(f"batch {receipt.batch_id}: {receipt.accepted} accepted, {receipt.rejected} rejected at submission")
            report = Runner(dep, admin, progress=say).run(once=True)
            queue = list_cases(conn, adjudicator)
            states = batch_report(conn, centre, receipt.batch_id)
        return DemoResult(str(home), keep, size, receipt.as_dict(), report.as_dict(), [c.as_dict() for c in queue],
                          [s.as_dict() for s in states])
    finally:
        dbmod.stop_embedded(home)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
