"""The gallery: shards + id map + generation, switched atomically.

Layout of a gallery directory::

    codec/<version>.faiss (+ .json)   trained codecs (one per version)
    codec/<version>.coverage-<h>.json list coverage measured with that codec (coverage.py; sealed,
                                      its SHA-256 in the manifest: h is its first 16 hex digits)
    shards/<name>/                    immutable shards (see shard.py)
    generations/<n>.json              manifests: which shards make generation n
    CURRENT                           the current generation's file name
    lock                              held (flock) by the one writer

A writer builds new shards, writes a new manifest, then replaces ``CURRENT`` with
``os.replace``: a reader sees the old generation or the new one, never a mix, and a crash
at any point leaves the previous generation intact. Old generations (``keep_generations``)
and the shards they use are kept for readers still on them, then garbage-collected.

Integrity: every manifest is sealed (a checksum of its own content) and records its gallery
id, its live row count, the SHA-256 of the list coverage in force (if any) and of each
shard's ``meta.json``, which in turn records
the hash of every shard file (``integrity.py``, ``shard.py``). A gallery is never created
over existing generations, shards or codecs, and a missing ``CURRENT`` beside them is
damage, not an empty gallery. A ``recorder`` (``dedup.index.deployed``: the deployment's
database record) is told before and after each switch and checks each opened generation.
"""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dedup.config import IndexSettings
from dedup.errors import GalleryError, InvalidParameter, ModelMismatch
from dedup.faults import crash_point
from dedup.fsutil import atomic_write_text
from dedup.index.codec import Codec, CodecSpec, choose_pq_m, fit_nlist
from dedup.index.coverage import ListCoverage, load_recorded, recorded_path
from dedup.index.integrity import bytes_digest, disk_errors, seal, unseal
from dedup.index.memory import Budget, check_fits, write_budget
from dedup.index.params import SearchParams
from dedup.index.probes import check_probes
from dedup.index.results import Candidates, concat, merge
from dedup.index.shard import Shard, ShardMeta, ShardWriter

_INTACT = "The previous generation is intact and searchable."
GALLERY_FORMAT = 2  # 2: sealed manifests with gallery id, row count and shard meta hashes
_GENERATION_NAME = re.compile(r"^\d{8}\.json$")


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
    gallery_id: str = ""
    rows: int = 0  # live rows of all shards
    shard_meta: dict[str, str] = field(default_factory=dict)  # shard name -> SHA-256 of its meta.json
    coverage_sha256: str = ""  # the list coverage in force for codec_version ("" for none)
    created_at: float = field(default_factory=time.time)

    def to_json(self) -> str:
        """Sealed JSON text (the generation file, and the database's copy of it)."""
        return seal({**asdict(self), "shards": list(self.shards)})

    @property
    def checksum(self) -> str:
        """The checksum its sealed JSON carries."""
        return str(json.loads(self.to_json())["checksum"])

    @property
    def file_name(self) -> str:
        return f"{self.generation:08d}.json"

    @staticmethod
    def from_json(text: str | bytes, where: str) -> Manifest:
        """Parse and check a sealed manifest (``GalleryError`` when unreadable or changed)."""
        data = unseal(text, f"{where}: gallery manifest")
        if data.get("format") != GALLERY_FORMAT:
            raise GalleryError(f"{where}: gallery format {data.get('format')} not supported (expected {GALLERY_FORMAT})")
        try:
            data["shards"] = tuple(data["shards"])
            return Manifest(**data)
        except (TypeError, ValueError, KeyError) as exc:
            raise GalleryError(f"{where}: unreadable gallery manifest ({exc})") from None


class GalleryRecorder(Protocol):
    """Keeps an outside record of the gallery (the deployment's database) in step with it."""

    def check(self, manifest: Manifest, root: Path) -> None:
        """Raise ``GalleryError`` unless ``manifest`` (just opened) is the generation on record."""

    def prepare(self, manifest: Manifest) -> None:
        """Before ``CURRENT`` is switched to ``manifest``: record it as the expected next generation."""

    def commit(self, manifest: Manifest) -> None:
        """After the switch: record ``manifest`` as the current generation."""


def existing_content(root: Path, own_gallery_id: str | None = None) -> list[str]:
    """What of a gallery is in ``root`` (CURRENT, generations, shards, codecs), in words; empty
    when nothing is. A generation 0 of ``own_gallery_id`` (an interrupted create) does not count."""
    root = Path(root)
    found = []
    if (root / "CURRENT").exists():
        found.append("CURRENT")
    gens = sorted(p for p in (root / "generations").glob("*.json")) if (root / "generations").is_dir() else []
    if own_gallery_id is not None and [p.name for p in gens] == ["00000000.json"]:
        try:
            if Manifest.from_json(gens[0].read_bytes(), str(gens[0])).gallery_id == own_gallery_id:
                gens = []
        except GalleryError:
            pass
    if gens:
        found.append(f"{len(gens)} generation file(s)")
    shards = [p for p in (root / "shards").iterdir() if not p.name.startswith(".tmp-")] if (root / "shards").is_dir() else []
    if shards:
        found.append(f"{len(shards)} shard folder(s)")
    codecs = list((root / "codec").glob("*.faiss")) if (root / "codec").is_dir() else []
    if codecs:
        found.append(f"{len(codecs)} codec(s)")
    return found


def read_current(root: Path) -> Manifest:
    """The manifest ``CURRENT`` names, checked (``GalleryError`` naming what is wrong)."""
    root = Path(root)
    current = root / "CURRENT"
    if not current.exists():
        found = existing_content(root)
        if found:
            raise GalleryError(f"{root}: CURRENT is missing, but the folder holds {', '.join(found)}: "
                               "the gallery is damaged, not absent")
        raise GalleryError(f"no gallery at {root} (create one first)")
    name = current.read_text(errors="replace").strip()
    if not _GENERATION_NAME.match(name):
        raise GalleryError(f"{root}: CURRENT is unreadable (it should name a generation file, e.g. 00000001.json)")
    path = root / "generations" / name
    if not path.exists():
        raise GalleryError(f"{root}: CURRENT names {name}, which is missing")
    manifest = Manifest.from_json(path.read_bytes(), str(path))
    if manifest.file_name != name:
        raise GalleryError(f"{path}: holds generation {manifest.generation}, not the one its name says")
    return manifest


def _coverage_facts(coverage: ListCoverage | None) -> dict[str, Any] | None:
    if coverage is None:
        return None
    return {"pairs": coverage.pairs, "source": coverage.source, "measured_at": coverage.measured_at}


class Gallery:
    """A gallery opened at one generation (readers) or for writing (``writer``)."""

    def __init__(self, root: Path, manifest: Manifest, settings: IndexSettings, mmap: bool = True,
                 recorder: GalleryRecorder | None = None, verify: bool = True) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self.settings = settings
        self.recorder = recorder
        self._mmap = mmap
        self._verify = verify
        self._shards: dict[str, Shard] = {}
        self._codec: Codec | None = None
        self._coverage: tuple[str, ListCoverage | None] | None = None  # (codec version, what was read)
        self._measured_nprobe: dict[tuple[str, float, float], tuple[int, float | None] | None] = {}
        self._id_map: tuple[np.ndarray, Any] | None = None

    # ------------------------------------------------------------------ opening

    @staticmethod
    def create(root: Path, model_id: str, dim: int, settings: IndexSettings | None = None,
               recorder: GalleryRecorder | None = None, gallery_id: str | None = None) -> Gallery:
        """Create an empty gallery for one face model.

        Refused when anything of a gallery is in ``root`` already (``CURRENT``, generation
        files, shards, codecs): a gallery whose ``CURRENT`` is lost is damaged, not absent,
        and creating over it would hide every enrolment in it.
        """
        root = Path(root)
        found = existing_content(root, own_gallery_id=gallery_id)
        if found:
            raise GalleryError(f"a gallery already exists at {root} ({', '.join(found)}); a new one is never created over it. "
                               "Check it with `dedup gallery verify`")
        if dim < 2:
            raise InvalidParameter(f"dim must be >= 2, got {dim}")
        with disk_errors(root, "a new gallery"):
            for sub in ("codec", "shards", "generations"):
                (root / sub).mkdir(parents=True, exist_ok=True)
            manifest = Manifest(GALLERY_FORMAT, 0, model_id, dim, None, 0, (), gallery_id=gallery_id or uuid.uuid4().hex)
            gallery = Gallery(root, manifest, settings or IndexSettings(), recorder=recorder)
            with gallery._locked():
                gallery._switch(manifest)
        return gallery

    @staticmethod
    def open(root: Path, settings: IndexSettings | None = None, mmap: bool = True,
             recorder: GalleryRecorder | None = None, verify: bool = True) -> Gallery:
        """Open the current generation for reading (its manifest checked; shards on first use).

        ``verify=False`` skips the files' hashes (not the manifest's): only for measuring them.
        """
        gallery = Gallery(root, read_current(root), settings or IndexSettings(), mmap=mmap, recorder=recorder, verify=verify)
        if recorder is not None:
            recorder.check(gallery.manifest, gallery.root)
        return gallery

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

    @property
    def coverage(self) -> ListCoverage | None:
        """The list coverage the current generation records (``None``: not measured). The
        manifest holds its hash, so a missing or changed file is damage (``GalleryError``),
        never a silent fall back to the configured list count."""
        digest = self.manifest.coverage_sha256
        if not digest or not self.manifest.codec_version:
            return None
        if self._coverage is None or self._coverage[0] != digest:
            path = self._coverage_path(self.manifest.codec_version, digest)
            where = f"{self.root}: generation {self.generation}'s list coverage {path.name}"
            again = "measure it again (`dedup gallery coverage`) or clear it (`--clear`)"
            try:
                found = load_recorded(path, digest, self.manifest.codec_version, where)
            except FileNotFoundError:
                raise GalleryError(f"{where} is missing; {again}") from None
            except GalleryError as exc:
                raise GalleryError(f"{exc}; {again}") from None
            self._coverage = (digest, found)
        return self._coverage[1]

    def _coverage_path(self, version: str, digest: str) -> Path:
        return recorded_path(self.root / "codec", version, digest)

    def save_coverage(self, coverage: ListCoverage | None) -> None:
        """Make ``coverage`` the list coverage in force (a new generation); ``None`` clears it.
        It must have been measured with the current codec."""
        with disk_errors(self.root, "the gallery's list coverage", intact=_INTACT), self._locked():
            self._refresh()
            digest = ""
            if coverage is not None:
                if coverage.codec_version != self.manifest.codec_version:
                    raise GalleryError(f"list coverage was measured with codec {coverage.codec_version}; "
                                       f"the gallery's codec is now {self.manifest.codec_version}: measure it again")
                text = seal(coverage.to_dict())
                digest = bytes_digest(text.encode())
                atomic_write_text(self._coverage_path(coverage.codec_version, digest), text)
            self._switch(replace(self.manifest, generation=self.manifest.generation + 1, coverage_sha256=digest),
                         keep_coverage=False)
            self._coverage = None
            self._measured_nprobe.clear()

    def shard_paths(self) -> list[Path]:
        """Directories of the current generation's shards."""
        return [self.root / "shards" / name for name in self.manifest.shards]

    def shards(self) -> list[Shard]:
        """The current generation's shards, loaded (and their files checked) once."""
        for name in self.manifest.shards:
            if name not in self._shards:
                self._shards[name] = self._load_shard(name)
        return [self._shards[name] for name in self.manifest.shards]

    def _load_shard(self, name: str) -> Shard:
        expected = self.manifest.shard_meta.get(name)
        if expected is None and self._verify:
            raise GalleryError(f"{self.root}: generation {self.generation} records no checksum for shard {name}")
        return Shard.load(self.root / "shards" / name, mmap=self._mmap, meta_sha256=expected,
                          verify_on_open_bytes=self.settings.verify_on_open_bytes, verify=self._verify)

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
            "gallery_id": self.manifest.gallery_id,
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
            "vectors_verified": sum(1 for s in shards if s.vectors_verified),
            "list_coverage": _coverage_facts(self.coverage),
        }

    # ------------------------------------------------------------------ searching

    def search(self, probes: np.ndarray, params: SearchParams, block: int = 4096,
               progress: Callable[[int], object] | None = None) -> Candidates:
        """Threshold search of every shard, merged. ``progress(n_done)`` is called per block."""
        from dedup.index.coarse import nearest_lists
        from dedup.index.rotation import to_index_space
        from dedup.index.search import even_blocks

        probes = check_probes(probes, self.dim)
        shards = self.shards()
        params = self.with_measured(params)
        codec = self.codec
        # All shards share the gallery's codec: one coarse step per block serves them all.
        shared = codec is not None and all(s.meta.codec_version == codec.version for s in shards)
        results = []
        for lo, hi in even_blocks(probes.shape[0], block):
            part = probes[lo:hi]
            if shards:
                # Rotated once and coarse-assigned once for every shard (they share the codec).
                coded = coarse = None
                if shared and codec:
                    coded = to_index_space(codec.trained, part)
                    coarse = nearest_lists(codec.trained, coded, params.nprobe, rotated=True)
                results.append(merge([s.search(part, params, coarse=coarse, coded=coded) for s in shards],
                                     params.max_candidates))
            else:
                results.append(Candidates.empty(part.shape[0]))
            if progress is not None:
                progress(part.shape[0])
        return concat(results) if results else Candidates.empty(0)

    def with_measured(self, params: SearchParams) -> SearchParams:
        """``params`` carrying what was measured for the gallery's codec: its search bounds
        (unless they carry their own) and, with a ``recall_target``, the list count its list
        coverage holds at the threshold, and the list gap within which a probe visits them
        (``dedup.index.coverage``; the configured ``nprobe`` and no gap where there is none,
        or too few pairs)."""
        codec = self.codec
        if params.bounds is None and codec is not None and codec.bounds is not None:
            params = replace(params, bounds=codec.bounds)
        if params.recall_target > 0 and params.nprobe_source == "configured":
            coverage = self.coverage
            key = (self.manifest.coverage_sha256, params.threshold, params.recall_target)
            if key not in self._measured_nprobe:  # a search per request must not re-sort the pairs
                self._measured_nprobe[key] = (coverage.search_plan(params.threshold, params.recall_target)
                                              if coverage is not None else None)
            plan = self._measured_nprobe[key]
            if plan is not None:
                params = replace(params, nprobe=plan[0], nprobe_source="measured", list_gap=plan[1])
        return params

    def enrolment_ids(self, row_ids: np.ndarray) -> list[str]:
        """Enrolment id of each gallery row id (``GalleryError`` for an unknown row)."""
        sorted_rows, enrolments = self._load_id_map()
        row_ids = np.asarray(row_ids, dtype=np.int64)
        pos = np.searchsorted(sorted_rows, row_ids)
        ok = (pos < sorted_rows.size) & (sorted_rows[np.minimum(pos, sorted_rows.size - 1)] == row_ids) \
            if sorted_rows.size else np.zeros(row_ids.shape, dtype=bool)
        if not ok.all():
            raise GalleryError(f"unknown gallery row id {int(row_ids[~ok][0])}")
        return enrolments.take(pos).to_pylist()

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
            shard.ensure_verified()
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

    def _load_id_map(self) -> tuple[np.ndarray, Any]:
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
        """Re-read CURRENT (a writer must build on the newest generation, the one on record)."""
        fresh = Gallery.open(self.root, self.settings, self._mmap, recorder=self.recorder, verify=self._verify)
        if fresh.manifest.gallery_id != self.manifest.gallery_id:
            raise GalleryError(f"{self.root}: the gallery was replaced by another one (id {fresh.manifest.gallery_id}) "
                               f"while this process had {self.manifest.gallery_id} open")
        if fresh.manifest.generation != self.manifest.generation:
            self.manifest = fresh.manifest
            self._id_map = None
            self._codec = None

    def _sealed(self, manifest: Manifest, keep_coverage: bool = True) -> Manifest:
        """``manifest`` with this gallery's id, its row count and its shards' meta hashes, and
        (``keep_coverage``) the list coverage in force carried over."""
        metas: dict[str, str] = {}
        rows = 0
        for name in manifest.shards:
            meta_bytes = (self.root / "shards" / name / "meta.json").read_bytes()
            metas[name] = bytes_digest(meta_bytes)
            rows += ShardMeta.from_json(meta_bytes, self.root / "shards" / name).live
        # The list coverage stays in force while the codec does (a writer's new generation
        # keeps it; a new codec, whose lists it did not measure, drops it).
        same_codec = manifest.codec_version == self.manifest.codec_version
        coverage = "" if not same_codec else self.manifest.coverage_sha256 if keep_coverage else manifest.coverage_sha256
        return replace(manifest, gallery_id=self.manifest.gallery_id or manifest.gallery_id, rows=rows, shard_meta=metas,
                       coverage_sha256=coverage)

    def _switch(self, manifest: Manifest, keep_coverage: bool = True) -> None:
        """Write ``manifest`` as a new generation and make it current (atomically); the list
        coverage in force is kept unless ``keep_coverage`` is false (``save_coverage``).

        With a recorder, two phases around the file switch: ``prepare`` (the database
        expects this generation next) before it, ``commit`` (it is current) after. A crash
        between them leaves files and record in a state ``check`` recognises and completes.
        """
        manifest = self._sealed(manifest, keep_coverage)
        if self.recorder is not None:
            self.recorder.prepare(manifest)
        crash_point("gallery.prepared")
        gen_dir = self.root / "generations"
        gen_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(gen_dir / manifest.file_name, manifest.to_json())
        crash_point("gallery.manifest_written")
        atomic_write_text(self.root / "CURRENT", manifest.file_name)
        crash_point("gallery.switched")
        if self.recorder is not None:
            self.recorder.commit(manifest)
        self.manifest = manifest
        self._id_map = None
        # Shards merged or rewritten away are no longer searched: drop them from the cache.
        self._shards = {n: sh for n, sh in self._shards.items() if n in set(manifest.shards)}
        self._collect_garbage()

    def _collect_garbage(self) -> None:
        """Delete generations beyond ``keep_generations`` old ones, unreferenced shards, temp dirs."""
        gen_dir = self.root / "generations"
        gens = sorted(p for p in gen_dir.glob("*.json"))
        # Generations after the current one were written but never switched to (a crash, or
        # an older generation made current again by a repair): kept, with their shards.
        upto = [g for g in gens if g.name <= self.manifest.file_name]
        keep = upto[-(self.settings.keep_generations + 1):] + [g for g in gens if g.name > self.manifest.file_name]
        for old in upto[: max(0, len(upto) - (self.settings.keep_generations + 1))]:
            old.unlink(missing_ok=True)
        referenced: set[str] = set()
        coverages: set[str] = set()
        for g in keep:
            try:
                kept = Manifest.from_json(g.read_bytes(), str(g))
            except GalleryError:
                return  # a damaged generation: which shards it needs is unknown, so none is deleted
            referenced.update(kept.shards)
            if kept.coverage_sha256 and kept.codec_version:
                coverages.add(self._coverage_path(kept.codec_version, kept.coverage_sha256).name)
        for p in (self.root / "codec").glob("*.coverage-*.json"):
            if p.name not in coverages:
                p.unlink(missing_ok=True)
        shard_dir = self.root / "shards"
        for p in shard_dir.iterdir() if shard_dir.exists() else []:
            if p.name.startswith(".tmp-") or p.name not in referenced:
                shutil.rmtree(p, ignore_errors=True)
        for p in (gen_dir.glob("*.tmp")):
            p.unlink(missing_ok=True)

    def train(self, sample: np.ndarray, seed: int = 1234, expected_size: int | None = None) -> Codec:
        """Train the codec on a sample of templates (only while the gallery is empty)."""
        sample = check_probes(sample, self.dim)
        with disk_errors(self.root, "the gallery's codec", intact=_INTACT), self._locked():
            self._refresh()
            if self.manifest.shards:
                raise GalleryError("the gallery already has shards; retrain with `dedup gallery compact --retrain`")
            n_expected = expected_size or sample.shape[0]
            nlist = fit_nlist(self.settings.nlist, n_expected, sample.shape[0])
            spec = CodecSpec(self.dim, nlist, choose_pq_m(self.dim, self.settings.pq_m), self.settings.pq_bits)
            codec = Codec.train(sample, spec, seed=seed, rotation=self.settings.rotation)
            codec.save(self.root / "codec" / f"{codec.version}.faiss")
            self._codec = codec
            self._switch(Manifest(GALLERY_FORMAT, self.manifest.generation + 1, self.model_id, self.dim,
                                  codec.version, self.manifest.next_row_id, self.manifest.shards))
            return codec

    def use_codec(self, codec: Codec) -> None:
        """Adopt an already trained codec (so shards of several galleries or machines match)."""
        if codec.spec.dim != self.dim:
            raise InvalidParameter(f"codec is {codec.spec.dim}-d, gallery is {self.dim}-d")
        with disk_errors(self.root, "the gallery's codec", intact=_INTACT), self._locked():
            self._refresh()
            if self.manifest.shards:
                raise GalleryError("the gallery already has shards; a new codec needs a rebuild")
            codec.save(self.root / "codec" / f"{codec.version}.faiss")
            self._codec = codec
            self._switch(Manifest(GALLERY_FORMAT, self.manifest.generation + 1, self.model_id, self.dim,
                                  codec.version, self.manifest.next_row_id, self.manifest.shards))

    @contextmanager
    def writer(self, model_id: str | None = None, expected_rows: int | None = None) -> Iterator[GalleryWriter]:
        """Add many rows in one new generation: ``with g.writer() as w: w.add(...)``.

        Nothing is visible to readers until the block exits without error; on error the
        partial shards are dropped and the gallery is unchanged. With ``expected_rows``, the
        memory and disk the write creates (new shard files, a merge of small shards it
        triggers) are checked first (``InsufficientResources``). A disk that fills up or fails
        during the write is a ``DiskError``; the previous generation stays current.
        """
        if model_id is not None and model_id != self.model_id:
            raise ModelMismatch(
                f"templates of model {model_id!r} cannot enter a gallery of model {self.model_id!r}")
        with disk_errors(self.root, "new gallery shards", intact=_INTACT), self._locked():
            self._refresh()
            codec = self.codec
            if codec is None:
                raise GalleryError("the gallery has no trained codec yet (train it on a sample first)")
            if expected_rows:
                check_fits(self.write_budget(expected_rows), self.root)
            writer = GalleryWriter(self)
            try:
                yield writer
                shards = writer.finish()  # a full disk here too leaves no partial shard behind
                names = self._merge_small(list(self.manifest.shards) + shards)
            except BaseException:
                writer.abort()
                raise
            crash_point("gallery.shards_written")
            self._switch(Manifest(GALLERY_FORMAT, self.manifest.generation + 1, self.model_id, self.dim,
                                  self.manifest.codec_version, writer.next_row_id, tuple(names)))

    def write_budget(self, n_new: int) -> Budget:
        """What adding ``n_new`` rows creates on disk and in RAM, a merge it triggers included."""
        codec = self.codec
        if codec is None:
            raise GalleryError("the gallery has no trained codec yet (train it on a sample first)")
        small_limit = max(1, self.settings.shard_capacity // 8)
        small = [s for s in self.shards() if s.meta.count < small_limit]
        merging = n_new < small_limit and len(small) + 1 > self.settings.small_shard_limit
        merge_rows = sum(s.meta.live for s in small) + n_new if merging else 0
        merge_bytes = sum(f.stat().st_size for s in small for f in s.path.iterdir()) if merging else 0
        return write_budget(n_new, self.dim, codec.spec.code_bytes, codec.spec.nlist, self.settings.exact_dtype,
                            merge_rows, merge_bytes)

    def _merge_small(self, names: list[str]) -> list[str]:
        """Merge small shards (each write adds one) into one, so searches don't visit hundreds.

        Runs under the writer's lock; the merged shard enters the same new generation.
        """
        small_limit = max(1, self.settings.shard_capacity // 8)
        loaded = {n: self._shards.get(n) or self._load_new_shard(n) for n in names}
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

    def _load_new_shard(self, name: str) -> Shard:
        """A shard this write just made (not in any manifest yet: its meta.json checks itself)."""
        return Shard.load(self.root / "shards" / name, mmap=self._mmap,
                          verify_on_open_bytes=self.settings.verify_on_open_bytes, verify=self._verify)

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
        with disk_errors(self.root, "new shard versions", intact=_INTACT), self._locked():
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
        with disk_errors(self.root, "compacted shards", intact=_INTACT), self._locked():
            self._refresh()
            old = self.shards()
            before = len(old)
            if self.codec is None or not old:
                return {"shards_before": before, "shards_after": before, "codec_version": self.manifest.codec_version}
            if retrain:
                codec = self._train_on_live(old, seed)
                codec.save(self.root / "codec" / f"{codec.version}.faiss")
                self._codec = codec
                # new lists: a list coverage measured on the old ones does not carry over
                self.manifest = replace(self.manifest, codec_version=codec.version, coverage_sha256="")
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

    def replace_shards(self, replacements: dict[str, str]) -> None:
        """A new generation with shards swapped for equivalent ones (repaired: same rows)."""
        with disk_errors(self.root, "a repaired generation", intact=_INTACT), self._locked():
            self._refresh()
            names = tuple(replacements.get(n, n) for n in self.manifest.shards)
            self._switch(replace(self.manifest, generation=self.manifest.generation + 1, shards=names))

    def _train_on_live(self, shards: list[Shard], seed: int) -> Codec:
        for s in shards:
            s.ensure_verified()
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
        spec = CodecSpec(self.dim, nlist, choose_pq_m(self.dim, self.settings.pq_m), self.settings.pq_bits)
        return Codec.train(sample, spec, seed=seed, rotation=self.settings.rotation)


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
        shard.ensure_verified()  # never copy damaged vectors under a fresh hash
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
