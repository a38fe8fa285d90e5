"""The one durable, atomic file write: a reader sees the old content or the new, never a mix,
and after a crash (power cut, kill -9) the new content is either whole on disk or absent.

A temporary file with a unique name in the target's folder (so concurrent writers never
clash and ``os.replace`` stays within one filesystem), written, flushed and fsync'ed, then
renamed over the target, then the folder fsync'ed so the rename itself is durable.
Leftover temporaries end in ``.tmp``; cleanups may remove ``.*.tmp`` files.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush a file's or a directory's contents to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path_for(path: Path) -> Path:
    """A unique temporary name next to ``path``, ending in ``.tmp`` (writers that infer a
    format from the name must be told it)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` durably.

    For writers that take a file name (Parquet, FAISS, ``np.save``, PNG): the body writes
    the yielded path completely, and on an exception the temporary is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically and durably (``mode``: the file's permissions)."""
    with atomic_path(path) as tmp:
        # created with the final permissions, so the data is never readable more widely
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
        if mode is not None:
            os.chmod(tmp, mode)  # exactly ``mode``, whatever the umask


def atomic_write_text(path: Path, text: str, mode: int | None = None) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically and durably."""
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def existing_mode(path: Path, default: int) -> int:
    """The permissions of ``path`` when it exists (a rewrite keeps them), else ``default``."""
    return path.stat().st_mode & 0o777 if path.exists() else default
