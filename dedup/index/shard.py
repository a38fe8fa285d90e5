"""A shard: an IVF-PQ index over part of the gallery plus the exact vectors of its rows.

On disk a shard is a directory that never changes once written:

- ``index.faiss``: the IVF-PQ index (a copy of the codec with rows added); FAISS ids are
  the rows' positions in this shard;
- ``vectors.bin``: the exact vectors, raw little-endian float16/float32, memory-mapped for
  re-ranking;
- ``row_ids.npy``: the gallery row id of every position;
- ``rows.parquet``: row id -> enrolment id (``schemas.GALLERY_ROWS_SCHEMA``);
- ``removed.npy``: positions removed from the index (their vectors stay until compaction);
- ``meta.json``: counts, dtype, codec version, model id, format.

A shard is written into a temporary directory and renamed into place when complete, so a
reader never sees a half-written shard; removing rows writes a new shard (the vectors are
hard-linked, not copied).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dedup.errors import GalleryError, InvalidParameter
from dedup.faults import crash_point
from dedup.fsutil import atomic_write_text, fsync_path
from dedup.index.codec import Codec
from dedup.index.params import SearchParams
from dedup.index.results import Candidates

SHARD_FORMAT = 1
_RERANK_BYTES = 64 << 20  # float32 working set of one re-rank chunk


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

    @property
    def live(self) -> int:
        return self.count - self.removed


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
        self._vectors = open(self.tmp / "vectors.bin", "wb")
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
        )
        for f in ("row_ids.npy", "rows.parquet", "index.faiss", "enrolment_keys.npy", "enrolment_order.npy"):
            fsync_path(self.tmp / f)
        atomic_write_text(self.tmp / "meta.json", json.dumps(asdict(meta), indent=2))
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

    def __init__(self, path: Path, meta: ShardMeta, index: "object", vectors: np.ndarray,
                 row_ids: np.ndarray, removed: np.ndarray) -> None:
        self.path = path
        self.meta = meta
        self.index = index
        self.vectors = vectors
        self.row_ids = row_ids
        self.removed_positions = removed

    @property
    def ntotal(self) -> int:
        """Live rows (searchable)."""
        return self.meta.live

    @staticmethod
    def load(path: Path, mmap: bool = True) -> "Shard":
        """Open a shard directory. Missing or inconsistent files raise ``GalleryError``."""
        import faiss

        path = Path(path)
        meta_path = path / "meta.json"
        if not meta_path.exists():
            raise GalleryError(f"shard {path} is missing or incomplete (no meta.json)")
        try:
            meta = ShardMeta(**json.loads(meta_path.read_text()))
        except (TypeError, ValueError) as exc:
            raise GalleryError(f"shard {path}: unreadable meta.json ({exc})") from None
        if meta.format != SHARD_FORMAT:
            raise GalleryError(f"shard {path}: format {meta.format} not supported (expected {SHARD_FORMAT})")
        dtype = np.dtype(meta.exact_dtype).newbyteorder("<")
        vec_path = path / "vectors.bin"
        expected = meta.count * meta.dim * dtype.itemsize
        if not vec_path.exists() or vec_path.stat().st_size != expected:
            raise GalleryError(f"shard {path}: vectors.bin has the wrong size (expected {expected} bytes)")
        if meta.count:
            vectors = np.memmap(vec_path, dtype=dtype, mode="r", shape=(meta.count, meta.dim)) if mmap else \
                np.fromfile(vec_path, dtype=dtype).reshape(meta.count, meta.dim)
        else:
            vectors = np.zeros((0, meta.dim), dtype=dtype)
        row_ids = np.load(path / "row_ids.npy")
        if row_ids.shape != (meta.count,):
            raise GalleryError(f"shard {path}: row_ids.npy does not match meta.json")
        removed_path = path / "removed.npy"
        removed = np.load(removed_path) if removed_path.exists() else np.zeros(0, dtype=np.int64)
        index = faiss.read_index(str(path / "index.faiss"), faiss.IO_FLAG_READ_ONLY)
        if index.ntotal != meta.live:
            raise GalleryError(f"shard {path}: index holds {index.ntotal} rows, meta.json says {meta.live}")
        return Shard(path, meta, index, vectors, row_ids, removed)

    def enrolment_table(self) -> "object":
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

    def exact_scores(self, probes: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Exact cosines of each probe with the rows at ``positions`` (``-1`` gives -inf)."""
        m, k = positions.shape
        out = np.full((m, k), -np.inf, dtype=np.float32)
        per_chunk = max(1, _RERANK_BYTES // (4 * self.meta.dim * max(k, 1)))
        for lo in range(0, m, per_chunk):
            pos = positions[lo:lo + per_chunk]
            valid = pos >= 0
            gathered = np.asarray(self.vectors[np.where(valid, pos, 0)], dtype=np.float32)
            scores = np.einsum("md,mkd->mk", probes[lo:lo + per_chunk], gathered)
            out[lo:lo + per_chunk] = np.where(valid, scores, -np.inf)
        return out

    def search(self, probes: np.ndarray, params: SearchParams) -> Candidates:
        """Every live row with exact cosine >= threshold, per probe (see ``SearchParams``)."""
        import faiss

        probes = np.ascontiguousarray(probes, dtype=np.float32)
        n = probes.shape[0]
        live = self.meta.live
        if live == 0 or n == 0:
            return Candidates.empty(n)
        nlist = int(self.index.nlist)
        depth_cap = min(params.max_depth, live)
        depth = min(params.depth, depth_cap)
        nprobe = min(params.nprobe, nlist)
        todo = np.arange(n)
        capped = np.zeros(n, dtype=bool)
        searched = np.zeros(n, dtype=np.int64)
        found_p: list[np.ndarray] = []
        found_r: list[np.ndarray] = []
        found_s: list[np.ndarray] = []
        while todo.size:
            _, positions = self.index.search(probes[todo], depth, params=faiss.SearchParametersIVF(nprobe=nprobe))
            scores = self.exact_scores(probes[todo], positions)
            searched[todo] = depth
            valid = positions >= 0
            n_valid = valid.sum(axis=1)
            last = scores[np.arange(todo.size), np.maximum(n_valid - 1, 0)]
            near = (n_valid > 0) & (last >= params.threshold - params.deepen_margin)
            # A probe that already has max_candidates rows above the threshold is capped:
            # searching deeper could only swap in rows the PQ ranked lower.
            full = near & ((scores >= params.threshold).sum(axis=1) >= params.max_candidates)
            capped[todo[full]] = True
            can_go_deeper = (depth < depth_cap) or (nprobe < nlist)
            deeper = near & ~full if can_go_deeper else np.zeros_like(near)
            if not can_go_deeper:
                # Depth ran out while rows were still near the threshold: report, don't hide.
                capped[todo[near & (n_valid >= depth) & (depth < live)]] = True
            done = ~deeper
            hit = (scores >= params.threshold) & done[:, None]
            pi, ki = np.nonzero(hit)
            found_p.append(todo[pi])
            found_r.append(self.row_ids[positions[pi, ki]])
            found_s.append(scores[pi, ki])
            todo = todo[deeper]
            depth = min(depth * 4, depth_cap)
            nprobe = min(nprobe * 2, nlist)
        return Candidates.from_pairs(
            n, np.concatenate(found_p), np.concatenate(found_r), np.concatenate(found_s),
            params.max_candidates, capped=capped, searched_depth=searched,
        )

    def without(self, row_ids: np.ndarray, parent: Path) -> Path:
        """Write a new shard equal to this one minus ``row_ids``; returns its path."""
        import faiss

        row_ids = np.asarray(row_ids, dtype=np.int64)
        positions = np.flatnonzero(np.isin(self.row_ids, row_ids))
        positions = np.setdiff1d(positions, self.removed_positions)
        name = f"shard-{uuid.uuid4().hex[:12]}"
        tmp = Path(parent) / f".tmp-{name}"
        tmp.mkdir(parents=True)
        for f in ("vectors.bin", "row_ids.npy", "rows.parquet", "enrolment_keys.npy", "enrolment_order.npy"):
            _link_or_copy(self.path / f, tmp / f)
        index = faiss.clone_index(self.index)
        index.remove_ids(faiss.IDSelectorBatch(positions.astype(np.int64)))
        faiss.write_index(index, str(tmp / "index.faiss"))
        removed = np.union1d(self.removed_positions, positions).astype(np.int64)
        np.save(tmp / "removed.npy", removed)
        meta = ShardMeta(**{**asdict(self.meta), "name": name, "removed": int(removed.size)})
        for f in ("index.faiss", "removed.npy"):
            fsync_path(tmp / f)
        atomic_write_text(tmp / "meta.json", json.dumps(asdict(meta), indent=2))
        final = Path(parent) / name
        os.rename(tmp, final)
        fsync_path(Path(parent))
        return final

    def live_positions(self) -> np.ndarray:
        """Positions not removed."""
        mask = np.ones(self.meta.count, dtype=bool)
        mask[self.removed_positions] = False
        return np.flatnonzero(mask)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
