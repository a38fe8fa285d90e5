"""The gallery: shards + id map + generation, switched atomically.

Layout of a gallery directory::

    codec/<version>.faiss (+ .json)   trained codecs (one per version)
    shards/<name>/                    immutable shards (see shard.py)
    generations/<n>.json              manifests: which shards make generation n
    CURRENT                           the current generation's file name
    lock                              held (flock) by the one writer

A writer builds new shards, writes a new manifest, then replaces ``CURRENT`` with
``os.replace``: a reader sees the old generation or the new one, never a mix, and a crash
at any point leaves the previous generation intact. Old generations (``keep_generations``)
and the shards they use are kept for readers still on them, then garbage-collected.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from dedup.config import IndexSettings
from dedup.errors import GalleryError, InvalidParameter, ModelMismatch
from dedup.faults import crash_point
from dedup.fsutil import atomic_write_text
from dedup.index.codec import Codec, CodecSpec, choose_pq_m, fit_nlist
from dedup.index.memory import check_fits, gallery_budget
from dedup.index.params import SearchParams
from dedup.index.probes import check_probes
from dedup.index.results import Candidates, concat, merge
from dedup.index.shard import Shard, ShardWriter

GALLERY_FORMAT = 1


@dataclass(frozen=True)
class Manifest:
    """One generation of the gallery."""

    format: int
    generation: int
    model_id: str
    dim: int
    codec_version: str | None
    next_row_id: int
    shards: tuple[str, ...]
    created_at: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "shards": list(self.shards)}, indent=2)

    @staticmethod
    def from_json(text: str, where: str) -> "Manifest":
        try:
            data = json.loads(text)
            data["shards"] = tuple(data["shards"])
            return Manifest(**data)
        except (TypeError, ValueError, KeyError) as exc:
            raise GalleryError(f"{where}: unreadable gallery manifest ({exc})") from None


class Gallery:
    """A gallery opened at one generation (readers) or for writing (``writer``)."""

    def __init__(self, root: Path, manifest: Manifest, settings: IndexSettings, mmap: bool = True) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self.settings = settings
        self._mmap = mmap
        self._shards: dict[str, Shard] = {}
        self._codec: Codec | None = None
        self._id_map: tuple[np.ndarray, object] | None = None

    # ------------------------------------------------------------------ opening

    @staticmethod
    def create(root: Path, model_id: str, dim: int, settings: IndexSettings | None = None) -> "Gallery":
        """Create an empty gallery for one face model. Fails if one exists already."""
        root = Path(root)
        if (root / "CURRENT").exists():
            raise GalleryError(f"a gallery already exists at {root}")
        if dim < 2:
            raise InvalidParameter(f"dim must be >= 2, got {dim}")
        for sub in ("codec", "shards", "generations"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        manifest = Manifest(GALLERY_FORMAT, 0, model_id, dim, None, 0, ())
        gallery = Gallery(root, manifest, settings or IndexSettings())
        with gallery._locked():
            gallery._switch(manifest)
        return gallery

    @staticmethod
    def open(root: Path, settings: IndexSettings | None = None, mmap: bool = True) -> "Gallery":
        """Open the current generation for reading."""
        root = Path(root)
        current = root / "CURRENT"
        if not current.exists():
            raise GalleryError(f"no gallery at {root} (create one first)")
        name = current.read_text().strip()
        path = root / "generations" / name
        if not path.exists():
            raise GalleryError(f"{root}: CURRENT names {name}, which is missing")
        manifest = Manifest.from_json(path.read_text(), str(path))
        if manifest.format != GALLERY_FORMAT:
            raise GalleryError(f"{root}: gallery format {manifest.format} not supported")
        return Gallery(root, manifest, settings or IndexSettings(), mmap=mmap)

    # ------------------------------------------------------------------ facts

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def model_id(self) -> str:
        return self.manifest.model_id

    @property
    def generation(self) -> int:
        return self.manifest.generation

    @property
    def codec(self) -> Codec | None:
        if self._codec is None and self.manifest.codec_version:
            self._codec = Codec.load(self.root / "codec" / f"{self.manifest.codec_version}.faiss")
        return self._codec

    def shard_paths(self) -> list[Path]:
        """Directories of the current generation's shards."""
        return [self.root / "shards" / name for name in self.manifest.shards]

    def shards(self) -> list[Shard]:
        """The current generation's shards, loaded once."""
        for name in self.manifest.shards:
            if name not in self._shards:
                self._shards[name] = Shard.load(self.root / "shards" / name, mmap=self._mmap)
        return [self._shards[name] for name in self.manifest.shards]

    def __len__(self) -> int:
        return sum(s.ntotal for s in self.shards())

    def stats(self) -> dict:
        """Counts and sizes, for ``dedup gallery stats`` and the bench."""
        shards = self.shards()
        index_bytes = sum((s.path / "index.faiss").stat().st_size for s in shards)
        disk = sum(f.stat().st_size for s in shards for f in s.path.iterdir())
        live = sum(s.ntotal for s in shards)
        return {
            "generation": self.generation,
            "model_id": self.model_id,
            "dim": self.dim,
            "codec_version": self.manifest.codec_version,
            "codec": asdict(self.codec.spec) if self.codec else None,
            "shards": len(shards),
            "templates": live,
            "removed": sum(s.meta.removed for s in shards),
            "index_bytes": index_bytes,
            "disk_bytes": disk,
            "index_bytes_per_template": index_bytes / live if live else 0.0,
            "disk_bytes_per_template": disk / live if live else 0.0,
        }

    # ------------------------------------------------------------------ searching

    def search(self, probes: np.ndarray, params: SearchParams, block: int = 4096,
               progress: "object | None" = None) -> Candidates:
        """Threshold search of every shard, merged. ``progress(n_done)`` is called per block."""
        probes = check_probes(probes, self.dim)
        shards = self.shards()
        results = []
        for lo in range(0, probes.shape[0], block):
            part = probes[lo:lo + block]
            if shards:
                results.append(merge([s.search(part, params) for s in shards], params.max_candidates))
            else:
                results.append(Candidates.empty(part.shape[0]))
            if progress is not None:
                progress(part.shape[0])
        return concat(results) if results else Candidates.empty(0)

    def enrolment_ids(self, row_ids: np.ndarray) -> list[str]:
        """Enrolment id of each gallery row id (``GalleryError`` for an unknown row)."""
        sorted_rows, enrolments = self._load_id_map()
        row_ids = np.asarray(row_ids, dtype=np.int64)
        pos = np.searchsorted(sorted_rows, row_ids)
        ok = (pos < sorted_rows.size) & (sorted_rows[np.minimum(pos, sorted_rows.size - 1)] == row_ids) \
            if sorted_rows.size else np.zeros(row_ids.shape, dtype=bool)
        if not ok.all():
            raise GalleryError(f"unknown gallery row id {int(row_ids[~ok][0])}")
        return enrolments.take(pos).to_pylist()  # type: ignore[attr-defined]

    def find_enrolments(self, enrolment_ids: Sequence[str]) -> dict[str, int]:
        """Enrolment ids already in the (live) gallery, with their row ids."""
        if not enrolment_ids:
            return {}
        wanted = [str(e) for e in enrolment_ids]
        found: dict[str, int] = {}
        for shard in self.shards():
            found.update(shard.find_enrolments(wanted))
        return found

    def exact_vectors(self, row_ids: np.ndarray) -> np.ndarray:
        """The stored exact vectors (float32) of some gallery rows."""
        row_ids = np.asarray(row_ids, dtype=np.int64)
        out = np.zeros((row_ids.size, self.dim), dtype=np.float32)
        done = np.zeros(row_ids.size, dtype=bool)
        for shard in self.shards():
            sorter = np.argsort(shard.row_ids, kind="stable")
            pos = np.searchsorted(shard.row_ids, row_ids, sorter=sorter)
            pos = np.minimum(pos, shard.row_ids.size - 1)
            if shard.row_ids.size == 0:
                continue
            local = sorter[pos]
            hit = (shard.row_ids[local] == row_ids) & ~done
            out[hit] = np.asarray(shard.vectors[local[hit]], dtype=np.float32)
            done |= hit
        if not done.all():
            raise GalleryError(f"unknown gallery row id {int(row_ids[~done][0])}")
        return out

    def _load_id_map(self) -> tuple[np.ndarray, object]:
        import pyarrow as pa

        if self._id_map is None:
            tables = [s.enrolment_table() for s in self.shards()]
            if tables:
                table = pa.concat_tables(tables)
                rows = table["row_id"].to_numpy()
                order = np.argsort(rows, kind="stable")
                self._id_map = (rows[order], table["enrolment_id"].combine_chunks().take(pa.array(order)))
            else:
                self._id_map = (np.zeros(0, dtype=np.int64), pa.array([], type=pa.string()))
        return self._id_map

    # ------------------------------------------------------------------ writing

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "lock", "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise GalleryError(f"{self.root}: another process is writing this gallery") from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _refresh(self) -> None:
        """Re-read CURRENT (a writer must build on the newest generation)."""
        fresh = Gallery.open(self.root, self.settings, self._mmap)
        if fresh.manifest.generation != self.manifest.generation:
            self.manifest = fresh.manifest
            self._id_map = None
            self._codec = None

    def _switch(self, manifest: Manifest) -> None:
        """Write ``manifest`` as a new generation and make it current (atomically)."""
        gen_dir = self.root / "generations"
        gen_dir.mkdir(parents=True, exist_ok=True)
        name = f"{manifest.generation:08d}.json"
        atomic_write_text(gen_dir / name, manifest.to_json())
        crash_point("gallery.manifest_written")
        atomic_write_text(self.root / "CURRENT", name)
        crash_point("gallery.switched")
        self.manifest = manifest
        self._id_map = None
        # Shards merged or rewritten away are no longer searched: drop them from the cache.
        self._shards = {n: sh for n, sh in self._shards.items() if n in set(manifest.shards)}
        self._collect_garbage()

    def _collect_garbage(self) -> None:
        """Delete generations beyond ``keep_generations`` old ones, unreferenced shards, temp dirs."""
        gen_dir = self.root / "generations"
        gens = sorted(p for p in gen_dir.glob("*.json"))
        keep = gens[-(self.settings.keep_generations + 1):]
        for old in gens[: len(gens) - len(keep)]:
            old.unlink(missing_ok=True)
        referenced: set[str] = set()
        for g in keep:
            referenced.update(Manifest.from_json(g.read_text(), str(g)).shards)
        shard_dir = self.root / "shards"
        for p in shard_dir.iterdir() if shard_dir.exists() else []:
            if p.name.startswith(".tmp-") or p.name not in referenced:
                shutil.rmtree(p, ignore_errors=True)
        for p in (gen_dir.glob("*.tmp")):
            p.unlink(missing_ok=True)

    def train(self, sample: np.ndarray, seed: int = 1234, expected_size: int | None = None) -> Codec:
        """Train the codec on a sample of templates (only while the gallery is empty)."""
        sample = check_probes(sample, self.dim)
        with self._locked():
            self._refresh()
            if self.manifest.shards:
                raise GalleryError("the gallery already has shards; retrain with `dedup gallery compact --retrain`")
            n_expected = expected_size or sample.shape[0]
            nlist = fit_nlist(self.settings.nlist, n_expected, sample.shape[0])
            spec = CodecSpec(self.dim, nlist, choose_pq_m(self.dim, self.settings.pq_m), self.settings.pq_bits)
            codec = Codec.train(sample, spec, seed=seed)
            codec.save(self.root / "codec" / f"{codec.version}.faiss")
            self._codec = codec
            self._switch(Manifest(GALLERY_FORMAT, self.manifest.generation + 1, self.model_id, self.dim,
                                  codec.version, self.manifest.next_row_id, self.manifest.shards))
            return codec

    def use_codec(self, codec: Codec) -> None:
        """Adopt an already trained codec (so shards of several galleries or machines match)."""
        if codec.spec.dim != self.dim:
            raise InvalidParameter(f"codec is {codec.spec.dim}-d, gallery is {self.dim}-d")
        with self._locked():
            self._refresh()
            if self.manifest.shards:
                raise GalleryError("the gallery already has shards; a new codec needs a rebuild")
            codec.save(self.root / "codec" / f"{codec.version}.faiss")
            self._codec = codec
            self._switch(Manifest(GALLERY_FORMAT, self.manifest.generation + 1, self.model_id, self.dim,
                                  codec.version, self.manifest.next_row_id, self.manifest.shards))

    @contextmanager
    def writer(self, model_id: str | None = None, expected_rows: int | None = None) -> Iterator["GalleryWriter"]:
        """Add many rows in one new generation: ``with g.writer() as w: w.add(...)``.

        Nothing is visible to readers until the block exits without error; on error the
        partial shards are dropped and the gallery is unchanged. With ``expected_rows``, the
        memory and disk they need are checked first (``InsufficientResources``).
        """
        if model_id is not None and model_id != self.model_id:
            raise ModelMismatch(
                f"templates of model {model_id!r} cannot enter a gallery of model {self.model_id!r}")
        with self._locked():
            self._refresh()
            codec = self.codec
            if codec is None:
                raise GalleryError("the gallery has no trained codec yet (train it on a sample first)")
            if expected_rows:
                check_fits(gallery_budget(expected_rows, self.dim, codec.spec.code_bytes, codec.spec.nlist,
                                          self.settings.exact_dtype, 0, self.settings.shard_capacity), self.root)
            writer = GalleryWriter(self)
            try:
                yield writer
            except BaseException:
                writer.abort()
                raise
            shards = writer.finish()
            names = self._merge_small(list(self.manifest.shards) + shards)
            crash_point("gallery.shards_written")
            self._switch(Manifest(GALLERY_FORMAT, self.manifest.generation + 1, self.model_id, self.dim,
                                  self.manifest.codec_version, writer.next_row_id, tuple(names)))

    def _merge_small(self, names: list[str]) -> list[str]:
        """Merge small shards (each write adds one) into one, so searches don't visit hundreds.

        Runs under the writer's lock; the merged shard enters the same new generation.
        """
        small_limit = max(1, self.settings.shard_capacity // 8)
        loaded = {n: self._shards.get(n) or Shard.load(self.root / "shards" / n, mmap=self._mmap) for n in names}
        small = [n for n in names if loaded[n].meta.count < small_limit]
        if len(small) <= self.settings.small_shard_limit:
            return names
        writer = GalleryWriter(self, keep_row_ids=True)
        try:
            for n in small:
                writer.copy_live_rows(loaded[n])
            merged = writer.finish()
        except BaseException:
            writer.abort()
            raise
        return [n for n in names if n not in set(small)] + merged

    def add(self, vectors: np.ndarray, enrolment_ids: Sequence[str], model_id: str | None = None) -> np.ndarray:
        """Add templates; returns their gallery row ids.

        Exactly once: an enrolment already in the gallery is not added again, and its
        existing row id is returned (so a resumed run that repeats an add changes nothing).
        """
        with self.writer(model_id, expected_rows=len(enrolment_ids)) as w:
            return w.add(vectors, enrolment_ids)

    def remove(self, row_ids: np.ndarray) -> int:
        """Remove rows from search (new shard versions, one new generation). Returns rows removed."""
        row_ids = np.unique(np.asarray(row_ids, dtype=np.int64))
        with self._locked():
            self._refresh()
            names = list(self.manifest.shards)
            removed = 0
            for i, shard in enumerate(self.shards()):
                hit = np.isin(shard.row_ids, row_ids)
                hit[shard.removed_positions] = False
                if hit.any():
                    names[i] = shard.without(row_ids, self.root / "shards").name
                    removed += int(hit.sum())
            if removed:
                self._switch(Manifest(GALLERY_FORMAT, self.manifest.generation + 1, self.model_id, self.dim,
                                      self.manifest.codec_version, self.manifest.next_row_id, tuple(names)))
            return removed

    def compact(self, retrain: bool = False, seed: int = 1234) -> dict:
        """Rewrite shards so every shard but the last is full and removed rows are dropped.

        ``retrain`` first trains a new codec on a uniform sample of the live templates (for a
        gallery whose codec was trained on a bootstrap sample, or that has grown a lot), and
        writes every shard with it. Readers keep the old generation until the switch.
        """
        with self._locked():
            self._refresh()
            old = self.shards()
            before = len(old)
            if self.codec is None or not old:
                return {"shards_before": before, "shards_after": before, "codec_version": self.manifest.codec_version}
            if retrain:
                codec = self._train_on_live(old, seed)
                codec.save(self.root / "codec" / f"{codec.version}.faiss")
                self._codec = codec
                self.manifest = replace(self.manifest, codec_version=codec.version)
            writer = GalleryWriter(self, keep_row_ids=True)
            try:
                for shard in old:
                    writer.copy_live_rows(shard)
            except BaseException:
                writer.abort()
                raise
            shards = writer.finish()
            self._switch(Manifest(GALLERY_FORMAT, self.manifest.generation + 1, self.model_id, self.dim,
                                  self.manifest.codec_version, self.manifest.next_row_id, tuple(shards)))
            return {"shards_before": before, "shards_after": len(shards), "codec_version": self.manifest.codec_version}

    def _train_on_live(self, shards: list[Shard], seed: int) -> Codec:
        live = [s.live_positions() for s in shards]
        total = sum(p.size for p in live)
        want = min(self.settings.train_size, total)
        rng = np.random.default_rng(seed)
        picks = np.sort(rng.choice(total, size=want, replace=False))
        sample = np.zeros((want, self.dim), dtype=np.float32)
        start = 0
        filled = 0
        for shard, pos in zip(shards, live):
            mine = picks[(picks >= start) & (picks < start + pos.size)] - start
            sample[filled:filled + mine.size] = np.asarray(shard.vectors[pos[mine]], dtype=np.float32)
            filled += mine.size
            start += pos.size
        # float16 storage: renormalise so the sample is unit-length again.
        sample /= np.maximum(np.linalg.norm(sample, axis=1, keepdims=True), 1e-12)
        nlist = fit_nlist(self.settings.nlist, total, want)
        return Codec.train(sample, CodecSpec(self.dim, nlist, choose_pq_m(self.dim, self.settings.pq_m), self.settings.pq_bits), seed=seed)


class GalleryWriter:
    """Fills new shards up to ``shard_capacity`` rows each. Use through ``Gallery.writer``."""

    def __init__(self, gallery: Gallery, keep_row_ids: bool = False) -> None:
        self.gallery = gallery
        self.next_row_id = gallery.manifest.next_row_id
        self._current: ShardWriter | None = None
        self._finished: list[str] = []
        self._pending: set[str] = set()
        self._keep_row_ids = keep_row_ids

    def add(self, vectors: np.ndarray, enrolment_ids: Sequence[str]) -> np.ndarray:
        """Add new templates (unit vectors); returns their row ids (existing ones for repeats)."""
        vectors = check_probes(vectors, self.gallery.dim)
        enrolment_ids = [str(e) for e in enrolment_ids]
        if len(enrolment_ids) != vectors.shape[0]:
            raise InvalidParameter("one enrolment id is needed per template")
        if len(set(enrolment_ids)) != len(enrolment_ids):
            raise InvalidParameter("an enrolment id appears twice in one add")
        dup = set(enrolment_ids) & self._pending
        if dup:
            raise InvalidParameter(f"enrolment {sorted(dup)[0]!r} was already added in this write")
        existing = self.gallery.find_enrolments(enrolment_ids)
        row_ids = np.empty(len(enrolment_ids), dtype=np.int64)
        new = np.array([e not in existing for e in enrolment_ids], dtype=bool)
        for i, e in enumerate(enrolment_ids):
            if e in existing:
                row_ids[i] = existing[e]
        n_new = int(new.sum())
        row_ids[new] = np.arange(self.next_row_id, self.next_row_id + n_new, dtype=np.int64)
        self.next_row_id += n_new
        new_ids = [e for e, keep in zip(enrolment_ids, new) if keep]
        self.add_rows(vectors[new], row_ids[new], new_ids)
        self._pending.update(new_ids)
        return row_ids

    def add_rows(self, vectors: np.ndarray, row_ids: np.ndarray, enrolment_ids: list[str]) -> None:
        """Write rows with given row ids into shards of at most ``shard_capacity``."""
        cap = self.gallery.settings.shard_capacity
        start = 0
        while start < vectors.shape[0]:
            if self._current is None:
                codec = self.gallery.codec
                assert codec is not None
                self._current = ShardWriter(codec, self.gallery.root / "shards", self.gallery.model_id,
                                            self.gallery.settings.exact_dtype)
            room = cap - self._current.count
            stop = min(vectors.shape[0], start + room)
            self._current.add(vectors[start:stop], row_ids[start:stop], enrolment_ids[start:stop])
            start = stop
            if self._current.count >= cap:
                self._finished.append(self._current.finish().name)
                self._current = None

    def copy_live_rows(self, shard: Shard, block: int = 65_536) -> None:
        """Re-add a shard's live rows (same row and enrolment ids) into new shards."""
        enrol = shard.enrolment_table()["enrolment_id"]
        live = shard.live_positions()
        for lo in range(0, live.size, block):
            pos = live[lo:lo + block]
            self.add_rows(np.asarray(shard.vectors[pos], dtype=np.float32), shard.row_ids[pos],
                          enrol.take(pos).to_pylist())

    def finish(self) -> list[str]:
        if self._current is not None:
            if self._current.count:
                self._finished.append(self._current.finish().name)
            else:
                self._current.abort()
            self._current = None
        return self._finished

    def abort(self) -> None:
        if self._current is not None:
            self._current.abort()
            self._current = None
        for name in self._finished:
            shutil.rmtree(self.gallery.root / "shards" / name, ignore_errors=True)
        self._finished = []
