"""The face pipeline as one library call: photos in, templates and rejects out.

``embed_photos`` runs the per-photo steps (:mod:`dedup.face.prepare`) in worker processes
(spawned; each builds its own dlib models, nothing heavy is pickled), embeds the crops in
torch batches as they arrive (GPU when present), L2-normalises them, and returns one
record per photo, in input order. With RetinaFace and a GPU it takes the batched device
path instead (:func:`embed_photos_on`): workers only decode, and detection, the ArcFace
warp and embedding run in device batches (:mod:`dedup.face.device_batch`). A photo that fails is a record with a reason. When a
worker process dies (a crash in a native decoder), the unfinished photos are retried one
by one, so only the photo that kills a worker becomes ``processing_error``.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dedup.config import FaceSettings
from dedup.errors import BadInput, InvalidParameter, ProcessingFailed
from dedup.face import reasons
from dedup.face.decode import DecodeLimits
from dedup.face.model import FaceModel, ModelSpec, load_model, model_id_for, resolve_device
from dedup.face.prepare import (
    Decoded,
    PhotoInput,
    Prepared,
    Preparer,
    decode_for_detection,
    decode_in_worker,
    init_worker,
    prepare_in_worker,
    source_name,
)
from dedup.face.quality import QualityReport
from dedup.fsutil import atomic_path
from dedup.schemas import REJECTS_SCHEMA, templates_schema

ProgressFn = Callable[[int, int], None]  # (photos done, photos in all)

# Starting a worker process costs about a second of CPU (imports, dlib models), as much as
# preparing 10-30 photos: smaller jobs run in this process.
MIN_PHOTOS_FOR_POOL = 32


@dataclass(frozen=True)
class PhotoResult:
    """What became of one photo."""

    source: str
    reason: str | None  # None: a template was made
    detail: str  # for people: measured value and limit, or what went wrong
    quality: float  # 0..1 (0 for rejects)
    row: int  # row of ``EmbedResult.embeddings``; -1 for rejects
    report: QualityReport | None = None

    @property
    def ok(self) -> bool:
        """True when the photo gave a template."""
        return self.reason is None


@dataclass
class EmbedResult:
    """Templates (L2-normalised, input order of the photos that passed) and every photo's outcome."""

    model_id: str
    dim: int
    embeddings: np.ndarray  # (n_ok, dim) float32
    results: list[PhotoResult] = field(default_factory=list)

    @property
    def accepted(self) -> list[PhotoResult]:
        """Records of the photos that gave a template, in input order."""
        return [r for r in self.results if r.ok]

    @property
    def rejected(self) -> list[PhotoResult]:
        """Records of the photos that did not."""
        return [r for r in self.results if not r.ok]

    def reason_counts(self) -> dict[str, int]:
        """Reject reason -> number of photos."""
        counts: dict[str, int] = {}
        for r in self.rejected:
            counts[r.reason or ""] = counts.get(r.reason or "", 0) + 1
        return dict(sorted(counts.items()))

    def templates_table(self) -> pa.Table:
        """The templates as a table with exactly ``schemas.templates_schema(dim)``."""
        ok = self.accepted
        schema = templates_schema(self.dim)
        flat = pa.array(self.embeddings.reshape(-1).astype(np.float32, copy=False), type=pa.float32())
        columns = [
            pa.array([r.source for r in ok], type=pa.string()),
            pa.array([self.model_id] * len(ok), type=pa.string()),
            pa.FixedSizeListArray.from_arrays(flat, self.dim),
            pa.array([r.quality for r in ok], type=pa.float32()),
            pa.nulls(len(ok), type=pa.string()),
            pa.nulls(len(ok), type=pa.string()),
            pa.array([False] * len(ok), type=pa.bool_()),
        ]
        return pa.Table.from_arrays(columns, schema=schema)

    def rejects_table(self) -> pa.Table:
        """The rejects as a table with exactly ``schemas.REJECTS_SCHEMA``."""
        bad = self.rejected
        return pa.Table.from_arrays(
            [
                pa.array([r.source for r in bad], type=pa.string()),
                pa.array([r.reason for r in bad], type=pa.string()),
                pa.array([r.detail for r in bad], type=pa.string()),
            ],
            schema=REJECTS_SCHEMA,
        )

    def write(self, templates_path: Path, rejects_path: Path) -> None:
        """Write both Parquet files, each atomically (temporary file, then rename)."""
        _write_parquet(self.templates_table(), templates_path)
        _write_parquet(self.rejects_table(), rejects_path)


def _write_parquet(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror or exc}") from None


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); an all-zero row stays zero."""
    norms = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def worker_count(settings: FaceSettings) -> int:
    """Processes for the per-photo steps: ``settings.workers``, 0 meaning one per CPU."""
    if settings.workers:
        return settings.workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


T = TypeVar("T")


def iter_prepared(items: Sequence[PhotoInput], settings: FaceSettings, workers: int) -> Iterator[tuple[int, Prepared]]:
    """Yield ``(index, Prepared)`` for every item, in completion order.

    ``workers == 1`` works in this process. Otherwise a spawned process pool does the work
    with a bounded number of photos in flight. If a worker dies (a crash inside a native
    decoder), the unfinished photos are retried one at a time in a one-worker pool, so the
    photo that kills a worker is found and recorded as ``processing_error`` while every
    other photo is still processed.
    """
    if workers <= 1:
        preparer = Preparer(settings)
        for i, item in enumerate(items):
            yield i, preparer.prepare(item)
        return

    def died(name: str) -> Prepared:
        return Prepared(name, reasons.PROCESSING_ERROR, _DIED, None, 0.0, None, None)

    yield from _iter_pool(items, settings, workers, prepare_in_worker, died, decode_only=False)


def iter_decoded(items: Sequence[PhotoInput], settings: FaceSettings, workers: int) -> Iterator[tuple[int, Decoded]]:
    """Yield ``(index, Decoded)`` for every item, in completion order (the batched path's CPU
    part), with the same pool and worker-death handling as :func:`iter_prepared`."""
    if workers <= 1:
        limits = DecodeLimits(settings.max_bytes, settings.max_pixels, settings.format_list)
        for i, item in enumerate(items):
            yield i, decode_for_detection(item, limits, settings.retinaface_max_side)
        return

    def died(name: str) -> Decoded:
        return Decoded(name, reasons.PROCESSING_ERROR, _DIED, None, None, 0.0)

    yield from _iter_pool(items, settings, workers, decode_in_worker, died, decode_only=True)


_DIED = "the worker process died on this photo"


def _iter_pool(items: Sequence[PhotoInput], settings: FaceSettings, workers: int, task: Callable[[PhotoInput], T],
               died: Callable[[str], T], decode_only: bool) -> Iterator[tuple[int, T]]:
    """``task`` over the items in a spawned pool, at most ``4 x workers`` in flight; photos left
    unfinished by a dead worker go to :func:`_isolate`."""
    done: set[int] = set()
    with _pool(settings, workers, decode_only) as pool:
        in_flight: dict[cf.Future[T], int] = {}
        queue = iter(range(len(items)))
        broken = False
        while True:
            while not broken and len(in_flight) < workers * 4:
                nxt = next(queue, None)
                if nxt is None:
                    break
                try:
                    in_flight[pool.submit(task, items[nxt])] = nxt
                except BrokenProcessPool:
                    broken = True
            if not in_flight:
                break
            finished, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                i = in_flight.pop(fut)
                try:
                    result = fut.result()
                except BrokenProcessPool:
                    broken = True
                    continue
                done.add(i)
                yield i, result
    pending = [i for i in range(len(items)) if i not in done]
    if pending:
        yield from _isolate(items, pending, settings, task, died, decode_only)


def _isolate(items: Sequence[PhotoInput], pending: list[int], settings: FaceSettings, task: Callable[[PhotoInput], T],
             died: Callable[[str], T], decode_only: bool) -> Iterator[tuple[int, T]]:
    """Run ``task`` on photos one at a time in a one-worker pool, replacing the pool when one dies."""
    deaths_in_a_row = 0
    pool = _pool(settings, 1, decode_only)
    try:
        for i in pending:
            try:
                result = pool.submit(task, items[i]).result()
                deaths_in_a_row = 0
                yield i, result
            except BrokenProcessPool:
                deaths_in_a_row += 1
                if deaths_in_a_row >= _MAX_DEATHS_IN_A_ROW:
                    raise ProcessingFailed(
                        f"face worker processes died on {deaths_in_a_row} photos in a row; "
                        "the workers cannot run here (try face.workers = 1 to see the error)"
                    ) from None
                yield i, died(source_name(items[i]))
                pool.shutdown(wait=True)
                pool = _pool(settings, 1, decode_only)
    finally:
        pool.shutdown(wait=True)


_MAX_DEATHS_IN_A_ROW = 3


def _pool(settings: FaceSettings, workers: int, decode_only: bool = False) -> cf.ProcessPoolExecutor:
    # spawn, not fork: forking a process that holds torch threads (or CUDA) is unsafe.
    ctx = multiprocessing.get_context("spawn")
    return cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=init_worker,
                                  initargs=(settings, decode_only))


def uses_device_batches(settings: FaceSettings) -> bool:
    """True when ``embed_photos`` takes the batched device path: RetinaFace and a GPU to run it on."""
    return settings.detector == "retinaface" and resolve_device(settings.device) == "cuda"


def embed_photos(
    items: Sequence[PhotoInput],
    settings: FaceSettings | None = None,
    *,
    model: FaceModel | None = None,
    progress: ProgressFn | None = None,
) -> EmbedResult:
    """Templates for the photos that pass, and a record (with reason) for every photo.

    ``items`` are paths (reported as given) or :class:`PhotoBytes`. ``model`` reuses an
    already loaded model (it must match ``settings``); by default one is built. Records come
    back in input order; ``embeddings[r.row]`` is the L2-normalised template of record ``r``.
    """
    settings = settings or FaceSettings()
    if not items:
        raise InvalidParameter("no photos to embed")
    model = model or load_model(settings)
    _check_model(model, settings)
    if uses_device_batches(settings):
        return embed_photos_on(items, settings, "cuda", model=model, progress=progress)
    total = len(items)
    prepared: list[Prepared | None] = [None] * total
    raw: dict[int, np.ndarray] = {}
    batch: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if batch:
            vectors = model.embed(np.stack([chip for _, chip in batch]), settings.batch_size)
            for (i, _), vec in zip(batch, vectors):
                raw[i] = vec
            batch.clear()

    workers = worker_count(settings) if total >= MIN_PHOTOS_FOR_POOL else 1
    done = 0
    for i, prep in iter_prepared(items, settings, min(workers, total)):
        # Keep the crop only until its batch is embedded (crops are biometric data too).
        prepared[i] = Prepared(prep.source, prep.reason, prep.detail, None, prep.quality, prep.report, prep.landmarks)
        if prep.chip is not None:
            batch.append((i, prep.chip))
            if len(batch) >= settings.batch_size:
                flush()
        done += 1
        if progress is not None:
            progress(done, total)
    flush()
    return _result(model, prepared, raw)


# A group of decoded photos waits in memory for its device batch: at most this many
# photos, and fewer when their full-resolution pixels reach _GROUP_PIXELS (about 0.8 GB).
_GROUP_PHOTOS_PER_BATCH = 4
_GROUP_PIXELS = 256_000_000


def embed_photos_on(
    items: Sequence[PhotoInput],
    settings: FaceSettings,
    device: str,
    *,
    model: FaceModel | None = None,
    progress: ProgressFn | None = None,
) -> EmbedResult:
    """:func:`embed_photos` by the batched device path, on ``device`` (``"cuda"``, or ``"cpu"``
    to test it): CPU workers decode; RetinaFace detection (photos stacked by size), SFace's
    ArcFace warp and the model run in batches of ``settings.batch_size`` on the device.
    Same templates and reasons as the per-photo path (tests/face/test_gpu_batch_path.py).
    """
    from dedup.face.device_batch import DeviceBatch

    if settings.detector != "retinaface":
        raise InvalidParameter("the batched device path needs face.detector = retinaface")
    if not items:
        raise InvalidParameter("no photos to embed")
    model = model or load_model(settings)
    _check_model(model, settings)
    stage = DeviceBatch(settings, model, device)
    total = len(items)
    prepared: list[Prepared | None] = [None] * total
    raw: dict[int, np.ndarray] = {}
    group: list[tuple[int, Decoded]] = []
    pixels = 0
    done = 0

    def flush() -> None:
        nonlocal pixels, done
        for i, prep, vec in stage.run(group):
            prepared[i] = prep
            if vec is not None:
                raw[i] = vec
            done += 1
            if progress is not None:
                progress(done, total)
        group.clear()
        pixels = 0

    workers = worker_count(settings) if total >= MIN_PHOTOS_FOR_POOL else 1
    for i, dec in iter_decoded(items, settings, min(workers, total)):
        group.append((i, dec))
        pixels += dec.rgb.shape[0] * dec.rgb.shape[1] if dec.rgb is not None else 0
        if len(group) >= _GROUP_PHOTOS_PER_BATCH * settings.batch_size or pixels >= _GROUP_PIXELS:
            flush()
    flush()
    return _result(model, prepared, raw)


def _check_model(model: FaceModel, settings: FaceSettings) -> None:
    if model.model_id != model_id_for(ModelSpec.from_settings(settings)):
        raise InvalidParameter(f"the model given ({model.model_id}) is not the one the face settings describe")


def _result(model: FaceModel, prepared: Sequence[Prepared | None], raw: dict[int, np.ndarray]) -> EmbedResult:
    """The EmbedResult in input order: every photo's record, and the templates L2-normalised."""
    results: list[PhotoResult] = []
    rows: list[np.ndarray] = []
    for i, done_prep in enumerate(prepared):
        assert done_prep is not None
        prep = done_prep
        if prep.reason is None:
            results.append(PhotoResult(prep.source, None, "", prep.quality, len(rows), prep.report))
            rows.append(raw[i])
        else:
            results.append(PhotoResult(prep.source, prep.reason, prep.detail, 0.0, -1, prep.report))
    dim = model.spec.output_dim
    embeddings = l2_normalise(np.stack(rows)) if rows else np.zeros((0, dim), dtype=np.float32)
    return EmbedResult(model.model_id, dim, embeddings, results)
