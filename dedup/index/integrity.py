"""Content hashes of gallery files, sealed JSON records, and disk errors turned into messages.

Every file of a shard carries its size and SHA-256 in the shard's ``meta.json``; ``meta.json``
and every generation manifest are *sealed*: they carry a ``checksum`` field, the SHA-256 of
their own canonical JSON without that field, and each manifest also records the SHA-256 of
each of its shards' ``meta.json`` bytes. So one chain runs from the database's record of the
gallery (which keeps the current manifest's checksum) down to every byte of every shard.

SHA-256, not BLAKE2b: on this project's 2-core VM (a Xeon with SHA extensions) hashlib's
SHA-256 ran at 407-832 MiB/s against 243-470 MiB/s for BLAKE2b (``benchmarks/integrity/``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dedup.errors import DiskError, GalleryError

HASH_NAME = "sha256"
_CHUNK = 8 << 20


def bytes_digest(data: bytes | memoryview) -> str:
    """The hex SHA-256 of some bytes."""
    return hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    """The hex SHA-256 of a file's content, read in chunks (hashlib releases the GIL)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    """What ``meta.json`` records about one file: its size and hash."""
    return {"bytes": Path(path).stat().st_size, HASH_NAME: file_digest(path)}


def check_file(path: Path, record: dict[str, Any], what: str, data: bytes | None = None) -> None:
    """Raise ``GalleryError`` unless ``path`` (or ``data``, its bytes already read) matches ``record``."""
    path = Path(path)
    if data is None and not path.exists():
        raise GalleryError(f"{what}: {path.name} is missing")
    size = len(data) if data is not None else path.stat().st_size
    if size != record["bytes"]:
        raise GalleryError(f"{what}: {path.name} has {size} bytes, its checksum record says {record['bytes']} (truncated or replaced)")
    digest = bytes_digest(data) if data is not None else file_digest(path)
    if digest != record[HASH_NAME]:
        raise GalleryError(f"{what}: {path.name} fails its SHA-256 check (its content changed on disk)")


def _canonical(data: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in data.items() if k != "checksum"}, sort_keys=True, separators=(",", ":")).encode()


def seal(data: dict[str, Any]) -> str:
    """``data`` as JSON text with a ``checksum`` of its own content."""
    return json.dumps({**data, "checksum": bytes_digest(_canonical(data))}, indent=2, sort_keys=True)


def unseal(text: str | bytes, what: str) -> dict[str, Any]:
    """Parse sealed JSON, without its checksum; ``GalleryError`` when unreadable or when the
    checksum does not match."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise GalleryError(f"{what} is unreadable ({exc})") from None
    if not isinstance(data, dict) or "checksum" not in data:
        raise GalleryError(f"{what} carries no checksum (written by an older dedup, or not a gallery file)")
    if bytes_digest(_canonical(data)) != data["checksum"]:
        raise GalleryError(f"{what} fails its checksum (its content changed on disk)")
    return {k: v for k, v in data.items() if k != "checksum"}


def human_bytes(n: float) -> str:
    """Bytes a person can read: B, KiB, MiB, GiB or TiB with one decimal."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_FS_ERRORS = {errno.EIO, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _free_at(path: Path) -> str:
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return human_bytes(shutil.disk_usage(p).free)
    except OSError:
        return "unknown"


def disk_failure(exc: BaseException) -> int | None:
    """The errno when ``exc`` is a disk-full or I/O failure of a write (FAISS's included), else None."""
    if isinstance(exc, OSError) and exc.errno in _FS_ERRORS:
        return exc.errno
    if isinstance(exc, RuntimeError):  # FAISS reports failed writes as RuntimeError with the C errno text
        text = str(exc)
        if "No space left" in text:
            return errno.ENOSPC
        if "Disk quota" in text:
            return errno.EDQUOT
        if "Input/output error" in text or "write error" in text:
            return errno.EIO
    return None


@contextmanager
def disk_errors(where: Path, what: str, intact: str = "") -> Iterator[None]:
    """Turn a disk-full or I/O error of the writes inside into a ``DiskError`` with a specific
    message (``what`` was being written at ``where``; ``intact`` says what is left as it was)."""
    try:
        yield
    except DiskError:
        raise
    except (OSError, RuntimeError) as exc:
        code = disk_failure(exc)
        if code is None:
            raise
        tail = f" {intact}" if intact else ""
        if code in _DISK_FULL:
            raise DiskError(f"disk full while writing {what} in {where} ({_free_at(where)} free); nothing of this write was kept."
                            f"{tail} Free some space and run it again.") from None
        reason = "read-only file system" if code == errno.EROFS else "file too large" if code == errno.EFBIG else "I/O error"
        raise DiskError(f"{reason} while writing {what} in {where}; nothing of this write was kept.{tail} "
                        "Check the disk (dmesg, SMART) before running it again.") from None
