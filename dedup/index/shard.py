"""A shard: an IVF-PQ index over part of the gallery plus the exact vectors of its rows.

On disk a shard is a directory that never changes once written:

- ``index.faiss``: the IVF-PQ index (a copy of the codec with rows added); FAISS ids are
  the rows' positions in this shard;
- ``vectors.bin``: the exact vectors, raw little-endian float16/float32, memory-mapped for
  re-ranking;
- ``row_ids.npy``: the gallery row id of every position;
- ``rows.parquet``: row id -> enrolment id (``schemas.GALLERY_ROWS_SCHEMA``);
- ``removed.npy``: positions removed from the index (their vectors stay until compaction);
- ``meta.json``: counts, dtype, codec version, model id, format, and the size and SHA-256
  of every other file (``files``); sealed with a checksum of its own (``integrity.py``).

A shard is written into a temporary directory and renamed into place when complete, so a
reader never sees a half-written shard; removing rows writes a new shard (the vectors are
hard-linked, not copied). Every hash is written before the rename, so before the switch.

Opening a shard checks every file against its hash, except a ``vectors.bin`` larger than
``index.verify_on_open_bytes``: that one is hashed once, before the shard's first search
result (or exact vector) is used (``ensure_verified``). A wrong hash is a ``GalleryError``:
the shard gives no answer rather than a partial one.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from dedup.errors import GalleryError, InvalidParameter
from dedup.faults import crash_point
from dedup.fsutil import atomic_write_text, fsync_path
from dedup.index.codec import Codec
from dedup.index.integrity import check_file, file_record, seal, unseal
from dedup.index.params import SearchParams
from dedup.index.results import Candidates

SHARD_FORMAT = 2  # 2: meta.json sealed, with the size and SHA-256 of every file
# The files whose hashes meta.json records (removed.npy only in shards that removed rows).
SHARD_FILES = ("index.faiss", "vectors.bin", "row_ids.npy", "rows.parquet", "enrolment_keys.npy", "enrolment_order.npy")
DEFAULT_VERIFY_ON_OPEN = 256 << 20


@dataclass(frozen=True)
class ShardMeta:
    """What ``meta.json`` records about a shard."""

    name: str
    format: int
    codec_version: str
    model_id: str
    dim: int
    count: int          # positions (rows ever written to this shard)
    removed: int        # positions removed from the index
    exact_dtype: str
    min_row_id: int
    max_row_id: int
    files: dict[str, dict[str, Any]]  # file name -> {"bytes": n, "sha256": hex}

    @property
    def live(self) -> int:
        return self.count - self.removed

    def to_json(self) -> str:
        """Sealed ``meta.json`` text."""
        return seal(asdict(self))

    @staticmethod
    def from_json(text: bytes | str, where: Path) -> ShardMeta:
        """Parse and check a sealed ``meta.json`` (``GalleryError`` when it fails)."""
        data = unseal(text, f"shard {where}: meta.json")
        if data.get("format") != SHARD_FORMAT:
            raise GalleryError(f"shard {where}: format {data.get('format')} not supported (expected {SHARD_FORMAT})")
        try:
            return ShardMeta(**data)
        except TypeError as exc:
            raise GalleryError(f"shard {where}: unreadable meta.json ({exc})") from None


def write_meta(folder: Path, meta: ShardMeta) -> None:
    """Write the sealed ``meta.json`` into a shard folder (atomically)."""
    atomic_write_text(folder / "meta.json", meta.to_json())


def hash_files(folder: Path, names: tuple[str, ...] | list[str]) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of each named file of a shard folder."""
    return {n: file_record(folder / n) for n in names}


_ROWS_GROUP = 65_536  # rows.parquet row-group size: a lookup reads only the groups it needs


def enrolment_keys(enrolment_ids: list[str]) -> np.ndarray:
    """64-bit FNV-1a keys of enrolment ids (vectorised). Equal ids give equal keys; a key
    match is always confirmed against the stored id, so collisions cost a read, not a row."""
    if not enrolment_ids:
        return np.zeros(0, dtype=np.uint64)
    raw = np.array([e.encode("utf-8") for e in enrolment_ids], dtype=object)
    lengths = np.fromiter((len(b) for b in raw), dtype=np.int64, count=raw.size)
    width = max(1, int(lengths.max()))
    padded = np.frombuffer(b"".join(b.ljust(width, b"\0") for b in raw), dtype=np.uint8).reshape(-1, width)
    h = np.full(raw.size, 0xCBF29CE484222325, dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    with np.errstate(over="ignore"):
        for col in range(width):
            live = lengths > col
            mixed = (h ^ padded[:, col].astype(np.uint64)) * prime
            h = np.where(live, mixed, h)
    return h


class ShardWriter:
    """Streams rows into a new shard; ``finish`` makes it visible atomically."""

    def __init__(self, codec: Codec, parent: Path, model_id: str, exact_dtype: str = "float32",
                 name: str | None = None) -> None:
        if exact_dtype not in ("float16", "float32"):
            raise InvalidParameter(f"exact_dtype must be float16 or float32, got {exact_dtype}")
        self.codec = codec
        self.parent = Path(parent)
        self.name = name or f"shard-{uuid.uuid4().hex[:12]}"
        self.model_id = model_id
        self.dtype = np.dtype(exact_dtype).newbyteorder("<")
        self.tmp = self.parent / f".tmp-{self.name}"
        self.tmp.mkdir(parents=True, exist_ok=False)
        self._index = codec.empty_index()
        self._vectors = open(self.tmp / "vectors.bin", "wb")  # noqa: SIM115 (closed by finish or abort)
        self._row_ids: list[np.ndarray] = []
        self._enrolments: list[list[str]] = []
        self.count = 0

    def add(self, vectors: np.ndarray, row_ids: np.ndarray, enrolment_ids: list[str]) -> None:
        """Append rows (unit vectors, their gallery row ids and enrolment ids)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        row_ids = np.asarray(row_ids, dtype=np.int64)
        n = vectors.shape[0]
        if row_ids.shape != (n,) or len(enrolment_ids) != n:
            raise InvalidParameter("vectors, row ids and enrolment ids must have the same length")
        if n == 0:
            return
        self._index.add_with_ids(vectors, np.arange(self.count, self.count + n, dtype=np.int64))
        self._vectors.write(vectors.astype(self.dtype).tobytes())
        self._row_ids.append(row_ids)
        self._enrolments.append(list(enrolment_ids))
        self.count += n

    def finish(self) -> Path:
        """Write the index and id map, fsync, and rename into place. Returns the shard path."""
        import faiss
        import pyarrow as pa
        import pyarrow.parquet as pq

        from dedup.schemas import GALLERY_ROWS_SCHEMA

        self._vectors.flush()
        os.fsync(self._vectors.fileno())
        self._vectors.close()
        row_ids = np.concatenate(self._row_ids) if self._row_ids else np.zeros(0, dtype=np.int64)
        np.save(self.tmp / "row_ids.npy", row_ids)
        enrolments = [e for part in self._enrolments for e in part]
        pq.write_table(pa.Table.from_arrays([pa.array(row_ids), pa.array(enrolments, type=pa.string())],
                                            schema=GALLERY_ROWS_SCHEMA), self.tmp / "rows.parquet",
                       row_group_size=_ROWS_GROUP)
        keys = enrolment_keys(enrolments)
        order = np.argsort(keys, kind="stable").astype(np.int64)
        np.save(self.tmp / "enrolment_keys.npy", keys[order])
        np.save(self.tmp / "enrolment_order.npy", order)
        faiss.write_index(self._index, str(self.tmp / "index.faiss"))
        crash_point("shard.files_written")
        meta = ShardMeta(
            name=self.name, format=SHARD_FORMAT, codec_version=self.codec.version, model_id=self.model_id,
            dim=self.codec.spec.dim, count=self.count, removed=0, exact_dtype=self.dtype.name,
            min_row_id=int(row_ids.min()) if row_ids.size else -1,
            max_row_id=int(row_ids.max()) if row_ids.size else -1,
            files=hash_files(self.tmp, SHARD_FILES),
        )
        for f in SHARD_FILES:
            if f != "vectors.bin":
                fsync_path(self.tmp / f)
        write_meta(self.tmp, meta)
        final = self.parent / self.name
        os.rename(self.tmp, final)
        fsync_path(self.parent)
        crash_point("shard.renamed")
        return final

    def abort(self) -> None:
        """Drop the partial shard."""
        if not self._vectors.closed:
            self._vectors.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class Shard:
    """A loaded shard: PQ codes in RAM, exact vectors memory-mapped."""

    def __init__(self, path: Path, meta: ShardMeta, index: Any, vectors: np.ndarray,
                 row_ids: np.ndarray, removed: np.ndarray, vectors_verified: bool = True) -> None:
        self.path = path
        self.meta = meta
        self.index = index
        self.vectors = vectors
        self.row_ids = row_ids
        self.removed_positions = removed
        self.vectors_verified = vectors_verified

    def ensure_verified(self) -> None:
        """Hash ``vectors.bin`` once if opening left it unchecked; ``GalleryError`` when it fails."""
        if not self.vectors_verified:
            check_file(self.path / "vectors.bin", self.meta.files["vectors.bin"], f"shard {self.path}")
            self.vectors_verified = True

    @property
    def ntotal(self) -> int:
        """Live rows (searchable)."""
        return self.meta.live

    @staticmethod
    def load(path: Path, mmap: bool = True, meta_sha256: str | None = None,
             verify_on_open_bytes: int = DEFAULT_VERIFY_ON_OPEN, verify: bool = True) -> Shard:
        """Open a shard directory, checking its files' hashes (see the module docstring).

        ``meta_sha256``: the hash of ``meta.json`` its generation manifest records. Missing,
        changed or inconsistent files raise ``GalleryError``. ``verify=False`` skips the
        hashes (sizes and counts are still checked): only for measuring what they cost.
        """
        path = Path(path)
        meta_path = path / "meta.json"
        if not path.is_dir():
            raise GalleryError(f"shard {path} is missing (its folder is gone)")
        if not meta_path.exists():
            raise GalleryError(f"shard {path} is missing or incomplete (no meta.json)")
        meta_bytes = meta_path.read_bytes()
        if verify and meta_sha256 is not None:
            from dedup.index.integrity import bytes_digest

            if bytes_digest(meta_bytes) != meta_sha256:
                raise GalleryError(f"shard {path}: meta.json is not the one its generation manifest records")
        meta = ShardMeta.from_json(meta_bytes, path)
        where = f"shard {path}"
        dtype = np.dtype(meta.exact_dtype).newbyteorder("<")
        vec_path = path / "vectors.bin"
        expected = meta.count * meta.dim * dtype.itemsize
        if not vec_path.exists() or vec_path.stat().st_size != expected:
            raise GalleryError(f"shard {path}: vectors.bin has the wrong size (expected {expected} bytes; truncated?)")
        names = [*SHARD_FILES, *(["removed.npy"] if "removed.npy" in meta.files else [])]
        missing = [n for n in names if n not in meta.files]
        if missing:
            raise GalleryError(f"{where}: meta.json records no checksum for {', '.join(missing)}")
        vectors_verified = not verify
        if verify:
            for name in names:
                if name in ("index.faiss", "vectors.bin"):
                    continue
                check_file(path / name, meta.files[name], where)
            if meta.files["vectors.bin"]["bytes"] <= verify_on_open_bytes:
                check_file(vec_path, meta.files["vectors.bin"], where)
                vectors_verified = True
        if meta.count:
            vectors = np.memmap(vec_path, dtype=dtype, mode="r", shape=(meta.count, meta.dim)) if mmap else \
                np.fromfile(vec_path, dtype=dtype).reshape(meta.count, meta.dim)
        else:
            vectors = np.zeros((0, meta.dim), dtype=dtype)
        try:
            row_ids = np.load(path / "row_ids.npy")
            removed_path = path / "removed.npy"
            removed = np.load(removed_path) if "removed.npy" in meta.files else np.zeros(0, dtype=np.int64)
        except (OSError, ValueError) as exc:
            raise GalleryError(f"{where}: unreadable row ids ({exc})") from None
        if row_ids.shape != (meta.count,):
            raise GalleryError(f"shard {path}: row_ids.npy does not match meta.json")
        index = read_index_checked(path / "index.faiss", meta.files["index.faiss"] if verify else None, where)
        if index.ntotal != meta.live:
            raise GalleryError(f"shard {path}: index holds {index.ntotal} rows, meta.json says {meta.live}")
        return Shard(path, meta, index, vectors, row_ids, removed, vectors_verified)

    def enrolment_table(self) -> Any:
        """The shard's ``rows.parquet`` as a pyarrow Table (row_id, enrolment_id)."""
        import pyarrow.parquet as pq

        return pq.read_table(self.path / "rows.parquet")

    def find_enrolments(self, enrolment_ids: list[str]) -> dict[str, int]:
        """Which of these enrolment ids are live rows of this shard (id -> row id).

        Keys are looked up in the sorted key file; only row groups of ``rows.parquet`` that
        hold a key match are read, to confirm the id (new enrolments usually read nothing).
        """
        import pyarrow.parquet as pq

        keys = np.load(self.path / "enrolment_keys.npy", mmap_mode="r")
        order = np.load(self.path / "enrolment_order.npy", mmap_mode="r")
        wanted = enrolment_keys(enrolment_ids)
        lo = np.searchsorted(keys, wanted, side="left")
        hi = np.searchsorted(keys, wanted, side="right")
        positions = np.concatenate([np.asarray(order[a:b]) for a, b in zip(lo, hi) if b > a] or
                                   [np.zeros(0, dtype=np.int64)])
        positions = np.setdiff1d(positions, self.removed_positions)
        if positions.size == 0:
            return {}
        groups = np.unique(positions // _ROWS_GROUP)
        table = pq.ParquetFile(self.path / "rows.parquet").read_row_groups(groups.tolist())
        starts = groups * _ROWS_GROUP
        local = np.searchsorted(starts, positions, side="right") - 1
        offsets = np.concatenate([[0], np.cumsum([min(_ROWS_GROUP, self.meta.count - g) for g in starts])])
        rows = offsets[local] + (positions - starts[local])
        want = set(enrolment_ids)
        ids = table["enrolment_id"].take(rows).to_pylist()
        row_ids = self.row_ids[positions]
        return {e: int(r) for e, r in zip(ids, row_ids) if e in want}

    def search(self, probes: np.ndarray, params: SearchParams,
               coarse: tuple[np.ndarray, np.ndarray] | None = None, coded: np.ndarray | None = None) -> Candidates:
        """Every live row with exact cosine >= threshold, per probe (see ``SearchParams`` and
        ``dedup.index.search``; ``coarse``: the probes' nearest lists, and ``coded``: the
        probes in the index's space, when already known)."""
        from dedup.index.search import threshold_search

        self.ensure_verified()  # no result from exact vectors that fail their hash
        probes = np.ascontiguousarray(probes, dtype=np.float32)
        if self.meta.live == 0 or probes.shape[0] == 0:
            return Candidates.empty(probes.shape[0])
        return threshold_search(self, probes, params, coarse, coded)

    def without(self, row_ids: np.ndarray, parent: Path) -> Path:
        """Write a new shard equal to this one minus ``row_ids``; returns its path."""
        import faiss

        row_ids = np.asarray(row_ids, dtype=np.int64)
        positions = np.flatnonzero(np.isin(self.row_ids, row_ids))
        positions = np.setdiff1d(positions, self.removed_positions)
        with derived_shard(Path(parent)) as (tmp, name):
            for f in ("vectors.bin", "row_ids.npy", "rows.parquet", "enrolment_keys.npy", "enrolment_order.npy"):
                _link_or_copy(self.path / f, tmp / f)
            index = faiss.clone_index(self.index)
            index.remove_ids(faiss.IDSelectorBatch(positions.astype(np.int64)))
            faiss.write_index(index, str(tmp / "index.faiss"))
            removed = np.union1d(self.removed_positions, positions).astype(np.int64)
            np.save(tmp / "removed.npy", removed)
            files = {**self.meta.files, **hash_files(tmp, ("index.faiss", "removed.npy"))}
            meta = replace(self.meta, name=name, removed=int(removed.size), files=files)
            for f in ("index.faiss", "removed.npy"):
                fsync_path(tmp / f)
            write_meta(tmp, meta)
        return Path(parent) / name

    def live_positions(self) -> np.ndarray:
        """Positions not removed."""
        mask = np.ones(self.meta.count, dtype=bool)
        mask[self.removed_positions] = False
        return np.flatnonzero(mask)


def read_index_checked(path: Path, record: dict[str, Any] | None, where: str) -> Any:
    """Read ``index.faiss`` once: its bytes are hashed (``record``) and then deserialised."""
    import faiss

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise GalleryError(f"{where}: index.faiss is missing") from None
    if record is not None:
        check_file(path, record, where, data=data)
    try:
        return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as exc:
        raise GalleryError(f"{where}: index.faiss is unreadable ({str(exc).splitlines()[0][:200]})") from None


def rebuild_index(path: Path, codec: Codec, parent: Path) -> Path:
    """A new shard equal to the one at ``path`` with its FAISS index rebuilt from its exact
    vectors and the codec (the repair for a damaged ``index.faiss``); returns its path.

    Every other file must pass its hash (they are hard-linked into the new shard); the
    vectors are added in position order, live positions only, as the writer added them, so
    a shard written from float32 vectors gets the same index back.
    """
    import faiss

    path = Path(path)
    where = f"shard {path}"
    meta = ShardMeta.from_json((path / "meta.json").read_bytes(), path)
    if meta.codec_version != codec.version:
        raise GalleryError(f"{where}: built with codec {meta.codec_version}, the gallery's is {codec.version}")
    others = [n for n in meta.files if n != "index.faiss"]
    for name in others:
        check_file(path / name, meta.files[name], where)
    dtype = np.dtype(meta.exact_dtype).newbyteorder("<")
    vectors = np.memmap(path / "vectors.bin", dtype=dtype, mode="r", shape=(meta.count, meta.dim)) if meta.count else \
        np.zeros((0, meta.dim), dtype=dtype)
    removed = np.load(path / "removed.npy") if "removed.npy" in meta.files else np.zeros(0, dtype=np.int64)
    live = np.setdiff1d(np.arange(meta.count, dtype=np.int64), removed)
    index = codec.empty_index()
    for lo in range(0, live.size, 65_536):
        pos = live[lo:lo + 65_536]
        index.add_with_ids(np.ascontiguousarray(vectors[pos], dtype=np.float32), pos)
    with derived_shard(Path(parent)) as (tmp, name):
        for f in others:
            _link_or_copy(path / f, tmp / f)
        faiss.write_index(index, str(tmp / "index.faiss"))
        fsync_path(tmp / "index.faiss")
        write_meta(tmp, replace(meta, name=name, files={**meta.files, **hash_files(tmp, ("index.faiss",))}))
    return Path(parent) / name


@contextmanager
def derived_shard(parent: Path) -> Iterator[tuple[Path, str]]:
    """A temporary folder and a new name for a shard made from another (rows removed, index
    rebuilt): renamed into place when the body succeeds, removed when it fails."""
    name = f"shard-{uuid.uuid4().hex[:12]}"
    tmp = parent / f".tmp-{name}"
    tmp.mkdir(parents=True)
    try:
        yield tmp, name
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.rename(tmp, parent / name)
    fsync_path(parent)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
