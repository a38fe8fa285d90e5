"""The six ABIS operations on the MOSIP gallery and the deployment's PostgreSQL.

- INSERT: referenceId already active -> 10 (cheap: nothing is fetched; MOSIP treats 10 as
  success). Else fetch the CBEFF, decrypt, take the face, embed it with dedup's face
  pipeline, add it to the gallery under ``mosip-<referenceId>`` (``Gallery.add`` is
  exactly-once per name), then store the reference and the response in one transaction.
  No de-duplication at insert (ABIS API: "INSERT ... shall not perform de-duplication").
  Consecutive INSERTs come as one batch (:meth:`Handler.insert_batch`): one model call for
  their faces, one ``Gallery.add`` (one generation), one database transaction.
- Failure 1 (internal error): the gallery cannot be opened, verified or written
  (``GalleryError``, e.g. a damaged shard), the face model fails, no threshold is known
  (``NoOperatingPoint``): any ``DedupError`` that is not the request's fault. Never an
  empty candidate list from a gallery that was not searched (fail closed).
- Failure 2 (aborted): the request outlived its TTL before it was taken up (the consumer
  says so with ``expired``); MOSIP's re-processor sends a fresh request later.
- A lost database is no answer at all: ``psycopg.Error`` propagates, the consumer stops, and
  the broker redelivers the request to the next one (the response could not be stored, so
  a redelivery could not be answered the same way).
- IDENTIFY: the probe is the stored template of ``referenceId`` (12 when not active), or the
  CBEFF at ``referenceURL`` when no referenceId is given (not stored). Searched against the
  whole MOSIP gallery, or only ``gallery.referenceIds`` (12 when one is not active), at the
  threshold of :mod:`dedup.mosip.threshold`; the probe's own referenceId never comes back;
  at most ``maxResults`` candidates, best first.
- DELETE: 12 when not active; else the row leaves the gallery (a new generation) and the
  reference is marked deleted with the response.
- PING, PENDING_JOBS, REFERENCE_COUNT: answered from the consumer's state and the table.

A crash between the gallery write and the database commit is repaired by redelivery: the
INSERT is done again and ``Gallery.add`` returns the row it already has; a DELETE finds the
row already removed. Biometric data (CBEFF, images, templates) is never logged or stored
outside the gallery.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from dedup.deployment import Deployment
from dedup.errors import DedupError, MosipFailure
from dedup.faults import crash_point
from dedup.ids import mosip_gallery_name as gallery_name
from dedup.mosip import messages as msg
from dedup.mosip.codes import Failure
from dedup.store import mosip as store

log = logging.getLogger("dedup.mosip")

_DECODE_REASONS = {"not_an_image", "corrupt_image", "unsupported_format", "too_large", "not_found"}


@dataclass
class Timings:
    """Seconds spent per stage (where the time goes; ``dedup abis serve --timings``)."""

    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            self.counts[name] = self.counts.get(name, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {k: {"seconds": round(v, 4), "count": self.counts[k]} for k, v in sorted(self.seconds.items())}


@dataclass(frozen=True)
class Outcome:
    """What one request produced: the response to send and the operator's detail."""

    response: dict[str, Any]
    detail: str
    replayed: bool = False


class Handler:
    """Answers parsed requests (one at a time, in queue order)."""

    def __init__(self, dep: Deployment, conn: psycopg.Connection[Any], fetch: Callable[[str], bytes],
                 decrypt: Callable[[bytes], bytes] | None, pending_jobs: Callable[[], int] = lambda: 0) -> None:
        self.dep = dep
        self.conn = conn
        self.fetch = fetch
        self.decrypt = decrypt
        self.pending_jobs = pending_jobs
        face = dep.settings.face
        formats = face.format_list if "JPEG2000" in face.format_list else (*face.format_list, "JPEG2000")
        self.face_settings = dep.settings.replace("face", formats=",".join(formats)).face
        self.gallery_root = dep.home / dep.settings.mosip.gallery_dir
        self._model: Any = None
        self._preparer: Any = None
        self._gallery: Any = None
        self._count: int | None = None  # active references; this consumer is the only writer (advisory lock)
        self.timings = Timings()

    # ------------------------------------------------------------------ entry

    def handle(self, parsed: msg.Parsed, message_type: str, received_at: datetime, expired: bool = False) -> Outcome:
        """The response to one message (stored before it is returned, when it has a requestId).

        ``expired``: the request outlived its TTL before it was taken up; it is answered
        "aborted" (2) unless it was answered before or is invalid (its own code is more specific).
        """
        if parsed.request_id:
            stored = store.stored_response(self.conn, parsed.request_id)
            if stored is not None:
                return Outcome(stored[0], "answered before", replayed=True)
        if parsed.failure is not None or parsed.request is None:
            exc = parsed.failure or MosipFailure(Failure.INVALID_STRUCTURE, "unreadable request")
            return self._fail(parsed, None, exc, message_type, received_at)
        req = parsed.request
        if expired:
            return self._fail(parsed, req, MosipFailure(Failure.ABORTED, "the request outlived its TTL before it was taken up"),
                              message_type, received_at)
        try:
            if req.op == msg.INSERT:
                return self.insert_batch([(parsed, message_type, received_at)])[0]
            if req.op == msg.IDENTIFY:
                extra = self._identify(req)
            elif req.op == msg.DELETE:
                return self._delete(parsed, req, message_type, received_at)
            elif req.op == msg.PING:
                extra = {}
            elif req.op == msg.PENDING_JOBS:
                extra = {"jobscount": str(int(self.pending_jobs()))}
            else:
                extra = {"count": str(self.reference_count())}
        except MosipFailure as exc:
            return self._fail(parsed, req, exc, message_type, received_at)
        except psycopg.Error:
            raise  # the database is gone: nothing can be stored, so nothing is answered (redelivered later)
        except DedupError as exc:
            return self._fail(parsed, req, MosipFailure(Failure.INTERNAL_ERROR, str(exc)), message_type, received_at)
        response = msg.success(parsed.echo_id, req.request_id, **extra)
        return self._answer(parsed, req, response, "", message_type, received_at)

    def _answer(self, parsed: msg.Parsed, req: msg.Request | None, response: dict[str, Any], detail: str,
                message_type: str, received_at: datetime) -> Outcome:
        if not parsed.request_id:
            return Outcome(response, detail)  # no key to store it under; MOSIP cannot correlate it anyway
        answer = store.Answer(parsed.request_id, parsed.echo_id or "?", req.reference_id if req else None,
                              response, detail, message_type, received_at)
        return Outcome(store.record_answer(self.conn, answer), detail)

    def _fail(self, parsed: msg.Parsed, req: msg.Request | None, exc: MosipFailure, message_type: str,
              received_at: datetime) -> Outcome:
        response = msg.failure(parsed.echo_id, parsed.request_id, exc.code)
        return self._answer(parsed, req, response, f"{exc.code}: {exc}", message_type, received_at)

    # ------------------------------------------------------------------ operations

    def insert_batch(self, items: list[tuple[msg.Parsed, str, datetime]]) -> list[Outcome]:
        """Consecutive INSERTs (valid, distinct requestIds and referenceIds), answered in order.

        Each is replayed, refused (10, or its fetch/CBEFF/photo failure) or embedded; the
        embedded ones go through the model in one call, into the gallery in one ``add`` (one
        generation) and into the database in one transaction. A crash between the gallery
        and the database is repaired by redelivery, as for one INSERT: ``Gallery.add``
        returns the rows it already has.
        """
        outcomes: list[Outcome | None] = [None] * len(items)
        chips: list[tuple[int, Any]] = []  # (item index, aligned face chip)
        for i, (parsed, message_type, received_at) in enumerate(items):
            req = parsed.request
            assert req is not None and req.op == msg.INSERT and req.reference_id is not None and req.reference_url is not None
            stored = store.stored_response(self.conn, req.request_id)
            if stored is not None:
                outcomes[i] = Outcome(stored[0], "answered before", replayed=True)
                continue
            try:
                if store.active_row(self.conn, req.reference_id) is not None:
                    raise MosipFailure(Failure.REFERENCE_ID_EXISTS, "the referenceId is already in the gallery")
                chips.append((i, self.face_chip(req.reference_url)))
            except MosipFailure as exc:
                outcomes[i] = self._fail(parsed, req, exc, message_type, received_at)
            except DedupError as exc:
                outcomes[i] = self._fail(parsed, req, MosipFailure(Failure.INTERNAL_ERROR, str(exc)), message_type, received_at)
        if chips:
            done = self._add_batch(items, chips)
            for i, outcome in done.items():
                outcomes[i] = outcome
        assert all(o is not None for o in outcomes)
        return [o for o in outcomes if o is not None]

    def _add_batch(self, items: list[tuple[msg.Parsed, str, datetime]], chips: list[tuple[int, Any]]) -> dict[int, Outcome]:
        from dedup.face.embed import l2_normalise

        reqs = [items[i][0].request for i, _ in chips]
        try:
            model = self.model()
            with self.timings.stage("face_model"):
                vectors = l2_normalise(model.embed(np.stack([c for _, c in chips]), max(len(chips), 1)))
            gallery = self.gallery(vectors.shape[1])
            with self.timings.stage("gallery_add"):
                rows = gallery.add(vectors, [gallery_name(r.reference_id or "") for r in reqs if r is not None], model_id=model.model_id)
        except DedupError as exc:  # the gallery cannot be opened or written, the model fails: 1 for each
            return {i: self._fail(items[i][0], items[i][0].request, MosipFailure(Failure.INTERNAL_ERROR, str(exc)),
                                  items[i][1], items[i][2]) for i, _ in chips}
        crash_point("abis.inserted")  # in the gallery, not yet in the database: redelivery repairs it
        done: list[tuple[int, store.Answer, int]] = []
        for (i, _), row in zip(chips, rows.tolist()):
            parsed, message_type, received_at = items[i]
            req = parsed.request
            assert req is not None and req.reference_id is not None
            response = msg.success(parsed.echo_id, req.request_id)
            done.append((i, store.Answer(req.request_id, req.op, req.reference_id, response, "", message_type, received_at),
                         int(row)))
        with self.timings.stage("database"):
            stored = store.record_inserts(self.conn, [(a, a.reference_id or "", row) for _, a, row in done])
        out: dict[int, Outcome] = {}
        for (i, answer, _), response in zip(done, stored):
            if response is answer.response and self._count is not None:
                self._count += 1
            out[i] = Outcome(response, "")
        return out

    def _delete(self, parsed: msg.Parsed, req: msg.Request, message_type: str, received_at: datetime) -> Outcome:
        assert req.reference_id is not None
        row = store.active_row(self.conn, req.reference_id)
        if row is None:
            return self._fail(parsed, req, MosipFailure(Failure.REFERENCE_ID_NOT_FOUND, "the referenceId is not in the gallery"),
                              message_type, received_at)
        try:
            self.open_gallery().remove(np.array([row], dtype=np.int64))
        except DedupError as exc:
            return self._fail(parsed, req, MosipFailure(Failure.INTERNAL_ERROR, str(exc)), message_type, received_at)
        crash_point("abis.deleted")
        response = msg.success(parsed.echo_id, req.request_id)
        answer = store.Answer(req.request_id, req.op, req.reference_id, response, "", message_type, received_at)
        stored = store.record_delete(self.conn, answer, req.reference_id)
        if stored is response and self._count is not None:
            self._count -= 1
        return Outcome(stored, "")

    def _identify(self, req: msg.Request) -> dict[str, Any]:
        from dedup.index.params import SearchParams
        from dedup.mosip.threshold import choose

        probe_ref = req.reference_id
        if probe_ref is not None:
            row = store.active_row(self.conn, probe_ref)
            if row is None:
                raise MosipFailure(Failure.REFERENCE_ID_NOT_FOUND, "the probe's referenceId is not in the gallery")
            with self.timings.stage("probe_vector"):
                probe = self.open_gallery().exact_vectors(np.array([row], dtype=np.int64))[0]
        else:
            assert req.reference_url is not None
            probe = self.template(req.reference_url)
        restricted: dict[str, int] | None = None
        if req.gallery is not None:
            restricted = store.active_rows(self.conn, req.gallery)
            missing = [r for r in req.gallery if r not in restricted]
            if missing:
                raise MosipFailure(Failure.REFERENCE_ID_NOT_FOUND, f"{len(missing)} gallery referenceId(s) are not in the gallery")
        settings = self.dep.settings
        max_results = req.max_results or settings.mosip.max_results
        with self.timings.stage("threshold"):
            choice = choose(self.dep, self.model().model_id, req.target_fpir, self.reference_count())
        found: dict[str, float] = {}
        if restricted is not None:
            if restricted:
                refs = list(restricted)
                vectors = self.open_gallery().exact_vectors(np.array([restricted[r] for r in refs], dtype=np.int64))
                scores = vectors @ probe.astype(np.float32)
                found = {r: float(s) for r, s in zip(refs, scores.tolist()) if s >= choice.threshold}
        elif self.reference_count() > 0 or (Path(self.gallery_root) / "CURRENT").exists():
            # References without a readable gallery raise GalleryError (failure 1), never "0 candidates".
            gallery = self.open_gallery()
            if len(gallery):
                params = SearchParams.from_settings(settings.search, choice.threshold)
                # search.early_exit follows the deployment's setting (off by default: its bounds
                # come from the codec's training sample, see dedup.index.params).
                params = dataclasses.replace(params, max_candidates=max(params.max_candidates, max_results + 1))
                with self.timings.stage("gallery_search"):
                    result = gallery.search(probe[None, :].astype(np.float32), params)
                with self.timings.stage("database"):
                    refs_of = store.references_of_rows(self.conn, result.row_ids.tolist())
                for row_id, score in zip(result.row_ids.tolist(), result.scores.tolist()):
                    ref = refs_of.get(int(row_id))
                    if ref is not None:  # rows of deleted references, or never committed, are not candidates
                        found[ref] = max(found.get(ref, -2.0), float(score))
        if probe_ref is not None:
            found.pop(probe_ref, None)  # never the probe itself
        best = sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))[:max_results]
        return {"candidateList": {"count": str(len(best)), "candidates": [self._candidate(r, s, choice) for r, s in best]}}

    @staticmethod
    def _candidate(reference_id: str, score: float, choice: Any) -> dict[str, Any]:
        fpir = choice.fpir_at(score)
        analytics = {
            "internalScore": f"{score:.6f}",
            "confidence": f"{100.0 * (1.0 - fpir):.2f}" if fpir is not None else f"{100.0 * max(score, 0.0):.2f}",
            "fpir": "" if fpir is None else f"{fpir:.3g}",
            "threshold": f"{choice.threshold:.6f}",
            "thresholdSource": choice.source,
        }
        return {"referenceId": reference_id, "analytics": analytics,
                "modalities": [{"biometricType": "FID", "analytics": dict(analytics)}]}

    def reference_count(self) -> int:
        """Active references (REFERENCE_COUNT; N for the threshold), counted once, then kept."""
        if self._count is None:
            self._count = store.active_count(self.conn)
        return self._count

    # ------------------------------------------------------------------ biometrics

    def template(self, url: str) -> np.ndarray:
        """The face template of the CBEFF at ``url`` (fetch, decrypt, parse, embed)."""
        from dedup.face.embed import l2_normalise

        chip = self.face_chip(url)
        with self.timings.stage("face_model"):
            return l2_normalise(self.model().embed(chip[None, ...], 1))[0]

    def face_chip(self, url: str) -> np.ndarray:
        """The aligned face chip of the CBEFF at ``url`` (fetch, decrypt, parse, prepare).

        The face pipeline's own per-photo steps (``Preparer``: decode with its limits, detect,
        align, quality), with the detector built once per process rather than per request
        (``embed_photos`` builds one per call: 0.35 s, more than the photo itself). The model
        runs apart, so a batch of INSERTs embeds its chips in one call.
        """
        from dedup.face.prepare import PhotoBytes
        from dedup.mosip.cbeff import face_segments
        from dedup.mosip.iso19794_5 import face_image

        with self.timings.stage("fetch"):
            body = self.fetch(url)
        with self.timings.stage("decrypt"):
            document = self.decrypt(body) if self.decrypt is not None else body
        with self.timings.stage("cbeff_parse"):
            segments = face_segments(document)
            images = [face_image(s.bdb) for s in segments]
        preparer = self.preparer()
        with self.timings.stage("face_pipeline"):
            prepared = [preparer.prepare(PhotoBytes(f"cbeff-face-{s.index}", im.data)) for s, im in zip(segments, images)]
            passed = [p for p in prepared if p.reason is None and p.chip is not None]
            if passed:
                best = max(passed, key=lambda p: p.quality)
                assert best.chip is not None
                return np.asarray(best.chip)
        first = prepared[0]
        if first.reason in _DECODE_REASONS:
            raise MosipFailure(Failure.INVALID_CBEFF_FORMAT, f"the face image cannot be decoded ({first.reason})")
        if first.reason == "processing_error":
            raise MosipFailure(Failure.INTERNAL_ERROR, "the face pipeline failed on the image")
        raise MosipFailure(Failure.QUALITY_CHECK_FAILED, f"the face image fails the quality check ({first.reason}: {first.detail})")

    def preparer(self) -> Any:
        """The face pipeline's per-photo steps (decode, detect, align, quality), built once."""
        if self._preparer is None:
            from dedup.face.prepare import Preparer

            self._preparer = Preparer(self.face_settings)
        return self._preparer

    def model(self) -> Any:
        """The face model, loaded once."""
        if self._model is None:
            from dedup.face import load_model

            self._model = load_model(self.face_settings)
        return self._model

    def gallery(self, dim: int) -> Any:
        """The MOSIP gallery (created and trained on first use)."""
        if self._gallery is None:
            from dedup.pipeline import ensure_gallery

            self._gallery = ensure_gallery(self.dep, self.model().model_id, dim, root=self.gallery_root)
        return self._gallery

    def open_gallery(self) -> Any:
        """The MOSIP gallery for reading (it exists once anything was inserted)."""
        if self._gallery is None:
            if not (Path(self.gallery_root) / "CURRENT").exists():
                from dedup.errors import GalleryError

                raise GalleryError(f"{self.gallery_root}: no MOSIP gallery yet")
            return self.gallery(self.face_settings.output_dim)
        return self._gallery
