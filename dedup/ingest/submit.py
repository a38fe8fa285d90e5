"""``dedup submit``: judge every row of a manifest, keep the good ones, return a receipt.

The batch is identified by the SHA-256 of the manifest's bytes (hashed as a stream):
submitting the same file again finds the stored receipt and changes nothing. Submissions are serialised by an
advisory lock, so "already received" is exact even when centres submit at the same time.
Photos are written to the store before the database transaction that references them;
a crash in between leaves at most an unreferenced photo, never a reference to nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from dedup.deployment import Deployment
from dedup.errors import BadInput
from dedup.ingest.manifest import EmbeddedPhoto, ManifestLimits, ManifestRow, Rejection, check_fields, read_manifest, resolve_photo_path
from dedup.ingest.photos import PhotoStore, check_image, photo_store
from dedup.store import audit, batches
from dedup.store.centres import known_centres
from dedup.store.locks import lock_submissions
from dedup.store.users import Actor, authorize


@dataclass(frozen=True)
class _Accepted:
    row: ManifestRow
    photo_sha256: str


def batch_id_of(manifest: Path) -> tuple[str, str]:
    """(batch_id, sha256) of a manifest file, hashed as a stream: the id is the first 20 hex digits of the hash."""
    with open(manifest, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return "b" + digest[:20], digest


def submit_batch(dep: Deployment, conn: psycopg.Connection[Any], actor: Actor, manifest: Path) -> tuple[batches.Receipt, bool]:
    """Submit a manifest; return (receipt, new) where ``new`` is False for a resubmission.

    The manifest is checked against the ``[store]`` manifest limits from its metadata first,
    and read row group by row group (``dedup.ingest.manifest``).
    """
    authorize(actor, "batch.submit")
    manifest = Path(manifest)
    try:
        batch_id, digest = batch_id_of(manifest)
    except FileNotFoundError:
        raise BadInput(f"{manifest}: no such file") from None
    except IsADirectoryError:
        raise BadInput(f"{manifest}: a folder, not a manifest file") from None
    existing = batches.get_receipt(conn, batch_id)
    if existing is not None:
        batches.check_batch_access(actor, existing.centre_id, batch_id)
        return existing, False
    opened = read_manifest(manifest, ManifestLimits.of(dep.settings.store))
    rows = opened.rows
    now = dt.datetime.now(dt.UTC)
    store = photo_store(dep.store)
    limits = dep.settings.store

    with conn.transaction():
        # Per centre: a centre's token submits for its own centre only (other rows are refused).
        named = {r.centre_id for r in rows if isinstance(r.centre_id, str)}
        lock_submissions(conn, batch_id, {actor.centre_id} if actor.centre_id else named)
        existing = batches.get_receipt(conn, batch_id)  # a concurrent submit of the same file won
        if existing is not None:
            batches.check_batch_access(actor, existing.centre_id, batch_id)
            return existing, False
        centres = known_centres(conn)
        judged: dict[int, Rejection | _Accepted] = {}
        for row in rows:
            rejection = check_fields(row, now)
            if rejection is None and row.centre_id not in centres:
                rejection = Rejection("unknown_centre", f"centre {row.centre_id!r} is not registered")
            if rejection is None and actor.role == "centre" and row.centre_id != actor.centre_id:
                rejection = Rejection("centre_not_permitted", f"user {actor.name!r} submits for centre {actor.centre_id!r} only")
            if rejection is not None:
                judged[row.row] = rejection
        _judge_duplicates(conn, rows, judged)
        embedded = set()
        for row in rows:
            if row.row in judged:
                continue
            if isinstance(row.photo, EmbeddedPhoto):
                if row.photo.size > limits.max_photo_bytes:
                    judged[row.row] = Rejection("photo_too_large", f"{row.photo.size} bytes; the limit is {limits.max_photo_bytes}")
                else:
                    embedded.add(row.row)
            else:
                judged[row.row] = _take_photo(row, manifest.parent, store, limits.max_photo_bytes, limits.max_photo_pixels)
        for number, data in opened.embedded_photos(embedded):  # one row group of photos in memory at a time
            judged[number] = _keep_photo(rows[number], data, store, limits.max_photo_pixels)
        owner = _owner(actor, rows, judged)
        batches.insert_batch(conn, batch_id, digest, manifest.name, owner, actor.name, len(rows),
                             sum(isinstance(j, _Accepted) for j in judged.values()))
        for row in rows:
            j = judged[row.row]
            if isinstance(j, _Accepted):
                pk = batches.insert_enrolment(conn, batch_id, row.row, row.centre_id, row.enrolment_id, row.captured_at,
                                              j.photo_sha256, row.sex, row.birth_year, row.region)
                batches.insert_row(conn, batch_id, row.row, row.enrolment_id, row.centre_id, None, None, pk)
            else:
                batches.insert_row(conn, batch_id, row.row, _text(row.enrolment_id), _text(row.centre_id), j.reason, j.detail, None)
        audit.record(conn, actor.name, "batch.submit", "batch", batch_id,
                     {"manifest": manifest.name, "rows": len(rows),
                      "rejected": sum(not isinstance(j, _Accepted) for j in judged.values())})
        receipt = batches.get_receipt(conn, batch_id)
    assert receipt is not None
    return receipt, True


def _judge_duplicates(conn: psycopg.Connection[Any], rows: list[ManifestRow], judged: dict[int, Any]) -> None:
    """Reject every row whose (centre, enrolment_id) repeats in the batch or was received before."""
    keys = {r.row: (r.centre_id, r.enrolment_id) for r in rows if r.row not in judged}
    counts = Counter(keys.values())
    where: dict[tuple[Any, Any], list[int]] = {}
    for row, key in keys.items():
        where.setdefault(key, []).append(row)
    for row, key in keys.items():
        if counts[key] > 1:
            others = ", ".join(str(r) for r in where[key] if r != row)
            judged[row] = Rejection("duplicate_in_batch", f"enrolment_id {key[1]!r} of centre {key[0]!r} also on row(s) {others}")
    remaining = [key for row, key in keys.items() if row not in judged]
    if not remaining:
        return
    seen = batches.existing_enrolments(conn, remaining)
    for row, key in keys.items():
        if row not in judged and key in seen:
            judged[row] = Rejection("already_received", f"enrolment_id {key[1]!r} of centre {key[0]!r} was received in batch {seen[key]}")


def _take_photo(row: ManifestRow, batch_dir: Path, store: PhotoStore, max_bytes: int, max_pixels: int) -> Rejection | _Accepted:
    """A row's photo named by a path: found, size-checked, read and kept."""
    assert isinstance(row.photo, str)
    found = resolve_photo_path(batch_dir, row.photo)
    if isinstance(found, Rejection):
        return found
    size = found.stat().st_size
    if size > max_bytes:
        return Rejection("photo_too_large", f"{size} bytes; the limit is {max_bytes}")
    try:
        with open(found, "rb") as f:
            data = f.read(max_bytes + 1)  # no more than the limit, should the file grow meanwhile
    except OSError as exc:
        return Rejection("missing_photo", f"photo file {row.photo!r} cannot be read ({exc.strerror})")
    if len(data) > max_bytes:
        return Rejection("photo_too_large", f"over {max_bytes} bytes; the limit is {max_bytes}")
    return _keep_photo(row, data, store, max_pixels)


def _keep_photo(row: ManifestRow, data: bytes, store: PhotoStore, max_pixels: int) -> Rejection | _Accepted:
    """Check a photo's image header and keep it in the store."""
    check = check_image(data, max_pixels)
    if not check.ok:
        assert check.reason is not None and check.detail is not None
        return Rejection(check.reason, check.detail)
    return _Accepted(row, store.put(data))


def _owner(actor: Actor, rows: list[ManifestRow], judged: dict[int, Any]) -> str | None:
    """The centre that owns the batch: the submitting centre, else the one centre of its accepted rows."""
    if actor.role == "centre":
        return actor.centre_id
    centres = {r.centre_id for r in rows if isinstance(judged[r.row], _Accepted)}
    return centres.pop() if len(centres) == 1 else None


def _text(value: Any) -> str | None:
    # A rejected row's id is echoed back as given, shortened so a bad manifest cannot bloat the receipt.
    return None if value is None else str(value)[:200]
