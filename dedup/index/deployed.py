"""The deployment's gallery: its files and the database's record of them, kept in agreement.

The database (``dedup.store.gallery``, table ``galleries``) records, per gallery folder, the
gallery id, model and dimension, the generation ``CURRENT`` must name, its live row count and
a copy of its sealed manifest. A command that uses the gallery opens it through here and is
refused with a ``GalleryError`` (exit 4) and a repair hint unless files and record agree.

**Switching generations, two phases** (the database and the file system cannot change in
one atomic step), implemented by ``DatabaseRecorder`` around ``Gallery._switch``:

1. *prepare*: the new generation, row count and manifest are recorded as ``pending``;
2. the manifest file is written and ``CURRENT`` replaced (``os.replace``);
3. *commit*: the pending generation becomes the recorded one, ``pending`` is cleared.

So after a crash ``CURRENT`` names either the recorded generation (the switch did not
happen; the stale ``pending`` is overwritten by the next write) or the pending one (it did;
the next open verifies that manifest against the pending copy, byte for byte, and completes
phase 3). Any other state (``CURRENT`` missing, naming another generation, a manifest that
is not the recorded one, another gallery's id) is damage, never silently accepted, and a
gallery is created only when the database has no record of one and the folder is empty.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from dedup.config import IndexSettings
from dedup.deployment import Deployment
from dedup.errors import GalleryError, ModelMismatch
from dedup.index.gallery import Gallery, Manifest, existing_content, read_current
from dedup.index.verify import VerifyReport, check, repair
from dedup.store import gallery as records
from dedup.store.db import Database

REPAIR_HINT = ("Nothing was decided. See what is damaged with `dedup gallery verify`; "
               "`dedup gallery verify --repair` repairs what is safe to repair")
MAIN_KEY = "gallery"


def gallery_key(dep: Deployment, root: Path) -> str:
    """The record key of a gallery folder: its path relative to the deployment."""
    root = Path(root).absolute()
    try:
        return str(root.relative_to(dep.home.absolute()))
    except ValueError:
        return str(root)


def _recorded(record: records.GalleryRecord) -> Manifest | None:
    return Manifest.from_json(record.manifest, "the database's copy of the manifest") if record.manifest else None


def _pending(record: records.GalleryRecord) -> Manifest | None:
    return Manifest.from_json(record.pending_manifest, "the database's pending manifest") if record.pending_manifest else None


class DatabaseRecorder:
    """``GalleryRecorder`` over the deployment's database (see the module docstring)."""

    def __init__(self, database: Database, key: str) -> None:
        self.database = database
        self.key = key

    def record(self) -> records.GalleryRecord:
        with self.database.session() as conn:
            rec = records.get_record(conn, self.key)
        if rec is None:
            raise GalleryError(f"the database has no record of the gallery {self.key!r}. {REPAIR_HINT}")
        return rec

    def check(self, manifest: Manifest, root: Path) -> None:
        rec = self.record()
        if manifest.gallery_id != rec.gallery_id:
            raise GalleryError(f"{root} holds gallery {manifest.gallery_id}, not the deployment's gallery {rec.gallery_id}. "
                               f"{REPAIR_HINT}")
        if rec.manifest_sha256 == manifest.checksum and rec.generation == manifest.generation:
            return
        pending = _pending(rec)
        if pending is not None and pending.checksum == manifest.checksum:
            self.commit(manifest)  # crashed between switch and commit: phase 3 now
            return
        raise GalleryError(
            f"{root}: CURRENT names generation {manifest.generation} ({manifest.rows} templates), but the database "
            f"records generation {rec.generation} ({rec.row_count} templates) for this gallery. {REPAIR_HINT}")

    def prepare(self, manifest: Manifest) -> None:
        with self.database.session() as conn:
            if not records.set_pending(conn, self.key, manifest.gallery_id, manifest.generation, manifest.rows,
                                       manifest.to_json(), manifest.checksum):
                raise GalleryError(f"the database has no record of gallery {manifest.gallery_id} at {self.key!r}. {REPAIR_HINT}")

    def commit(self, manifest: Manifest) -> None:
        with self.database.session() as conn:
            if not records.commit_generation(conn, self.key, manifest.gallery_id, manifest.generation, manifest.rows,
                                             manifest.to_json(), manifest.checksum):
                raise GalleryError(f"the database has no record of gallery {manifest.gallery_id} at {self.key!r}. {REPAIR_HINT}")


def _record_of(dep: Deployment, key: str) -> records.GalleryRecord | None:
    with dep.database.session() as conn:
        return records.get_record(conn, key)


def open_gallery(dep: Deployment, root: Path | None = None, load_shards: bool = True) -> Gallery | None:
    """The deployment's gallery at ``root`` (default: the main one), checked against the
    database's record; None when there is neither a record nor anything in the folder.

    ``GalleryError`` (with a repair hint) when the files and the record disagree, when files
    exist without a record, or, with ``load_shards``, when a shard fails its checks.
    """
    root = Path(root) if root is not None else dep.gallery
    key = gallery_key(dep, root)
    rec = _record_of(dep, key)
    if rec is None:
        found = existing_content(root)
        if found:
            raise GalleryError(f"{root} holds a gallery ({', '.join(found)}) the database has no record of. "
                               "Nothing was decided. `dedup gallery verify --repair` adopts it once every file and enrolment checks")
        return None
    if rec.generation < 0 and not (root / "CURRENT").exists() and not existing_content(root, own_gallery_id=rec.gallery_id):
        return None  # its creation never finished: nothing was ever added
    recorder = DatabaseRecorder(dep.database, key)
    gallery: Gallery | None = None
    for attempt in range(3):  # a writer may switch between reading CURRENT and the check
        try:
            gallery = Gallery.open(root, dep.settings.index, recorder=recorder)
            break
        except GalleryError as exc:
            if attempt < 2 and "but the database records" in str(exc):
                continue
            if "CURRENT names generation" in str(exc) or "Nothing was decided" in str(exc):
                raise
            raise GalleryError(f"{exc}. The database records generation {rec.generation} ({rec.row_count} templates) of "
                               f"this gallery. {REPAIR_HINT}") from None
    assert gallery is not None
    if load_shards:
        try:
            gallery.shards()
        except GalleryError as exc:
            raise GalleryError(f"{exc}. {REPAIR_HINT}") from None
    return gallery


def ensure_gallery(dep: Deployment, root: Path, model_id: str, dim: int) -> Gallery:
    """Open the deployment's gallery at ``root``; create it only when the database has no
    record of one and the folder holds nothing of a gallery (see the module docstring)."""
    gallery = open_gallery(dep, root)
    key = gallery_key(dep, root)
    if gallery is None:
        rec = _record_of(dep, key)
        if rec is None:
            with dep.database.session() as conn:
                rec = records.insert_record(conn, key, uuid.uuid4().hex, model_id, dim)
        if rec.model_id != model_id:
            raise ModelMismatch(f"the gallery is recorded for model {rec.model_id!r}, the face pipeline makes {model_id!r}")
        gallery = Gallery.create(root, rec.model_id, rec.dim, dep.settings.index, recorder=DatabaseRecorder(dep.database, key),
                                 gallery_id=rec.gallery_id)
    return gallery


def verify_gallery(dep: Deployment | None, root: Path, settings: IndexSettings | None = None, fix: bool = False,
                   deep: bool = True, record: bool = True) -> VerifyReport:
    """``dedup gallery verify``: the files' checks, and with a deployment the database's
    record and enrolments; ``fix`` makes the safe repairs, then checks again. With
    ``record`` the outcome is kept in the database (``gallery stats``' quick look is not)."""
    root = Path(root)
    settings = settings or (dep.settings.index if dep is not None else IndexSettings())
    key = gallery_key(dep, root) if dep is not None else None
    rec = _record_of(dep, key) if dep is not None and key is not None else None
    if rec is None and not existing_content(root):
        raise GalleryError(f"no gallery at {root} yet" + (" (`dedup run` creates it)" if dep is not None else ""))
    expected = _expected(rec, root) if rec is not None else None
    recorder = DatabaseRecorder(dep.database, key) if dep is not None and rec is not None and key is not None else None
    report, scan = check(root, settings, expected, deep)
    if dep is not None:
        _compare_with_database(dep, key, rec, report, scan)
    if fix:
        done = repair(root, settings, scan, report, recorder)
        unrecorded_only = all(f.problem == "no_record" for f in report.findings if f.damage)
        if dep is not None and rec is None and unrecorded_only and scan.target is not None and key is not None:
            with dep.database.session() as conn:
                records.adopt(conn, key, scan.target.gallery_id, scan.target.model_id, scan.target.dim, scan.target.generation,
                              scan.target.rows, scan.target.to_json(), scan.target.checksum)
            done.append(f"recorded gallery {scan.target.gallery_id} at generation {scan.target.generation} in the database")
        if done:
            report = verify_gallery(dep, root, settings, fix=False, deep=deep, record=record)
            report.repaired = done
            return report
    if record and dep is not None and rec is not None and key is not None:
        with dep.database.session() as conn:
            records.record_verification(conn, key, report.ok, report.summary())
    return report


def _expected(rec: records.GalleryRecord, root: Path) -> Manifest | None:
    """The manifest the database expects to be current: the pending one when CURRENT already
    names it byte for byte (a switch whose commit did not happen), else the recorded one."""
    pending = _pending(rec)
    if pending is not None:
        try:
            if read_current(root).checksum == pending.checksum:
                return pending
        except GalleryError:
            pass
    return _recorded(rec)


def _compare_with_database(dep: Deployment, key: str | None, rec: records.GalleryRecord | None, report: VerifyReport,
                           scan: Any) -> None:
    if rec is None:
        if scan.target is not None:
            report.add("(database)", "no_record", "the database has no record of this gallery",
                       repair="record it (adopt), when every other check passes")
    elif scan.target is not None and scan.target.gallery_id != rec.gallery_id:
        report.add("(database)", "other_gallery", f"the folder holds gallery {scan.target.gallery_id}, "
                   f"the database records {rec.gallery_id}")
    if key != MAIN_KEY or scan.enrolment_ids is None:
        return
    from dedup.ids import enrolment_pk_of

    present = [pk for e in scan.enrolment_ids if (pk := enrolment_pk_of(e)) is not None]
    with dep.database.session() as conn:
        must, may = records.gallery_enrolments(conn)
    have = set(present)
    missing = must - have
    if missing:
        report.add("(database)", "enrolments_missing", f"{len(missing)} enrolment(s) that were searched against and decided "
                   f"are not in the gallery (first: enrolment {min(missing)})")
    unexpected = have - may
    if unexpected:
        report.add("(database)", "enrolments_unexpected", f"{len(unexpected)} gallery row(s) belong to no decided enrolment "
                   f"(first: enrolment {min(unexpected)})", damage=False)
