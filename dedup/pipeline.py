"""``dedup run``: received enrolments -> templates -> candidates -> UINs or cases -> gallery.

Work goes in **units** of up to ``store.run_batch_size`` enrolments. A unit moves through
three recorded states, and each step is either repeatable or recorded atomically:

1. ``claimed`` (one transaction): enrolments ``received`` -> ``processing``, tied to the unit.
2. embed: the face pipeline's templates and rejects are written to
   ``store/work/unit-N.parquet`` (temporary file, then rename). A rerun reuses the file.
3. search: probes against the gallery (accepted identities and enrolments in adjudication,
   plus synthetic rows), against earlier enrolments of the same unit (so two captures of one
   new person in one batch give one identity and one case), and against the templates of
   other unfinished units (in flight). Nothing is written, so it is repeatable.
4. ``decided`` (one transaction): every enrolment of the unit becomes ``accepted`` (UIN
   issued), ``adjudication`` (case with candidates and exact scores) or ``rejected`` (the face
   pipeline's reason), and the unit is marked decided. Killed before the commit, nothing of
   it happened; after it, it is never done again.
5. ``done``: the unit's templates are added to the gallery (``Gallery.add`` is exactly-once
   per enrolment: a repeat returns the existing rows), then the unit is marked done and its
   work file deleted.

At the start of a run and after each unit enters the gallery, the configured threshold is
checked against the deployment's calibration (``calibration.json``) at the gallery's new
size: when the gallery has outgrown it, the run's report carries a warning (once per run)
and a ``run.threshold_warning`` audit row records it. The run itself goes on.

A rerun first finishes unfinished units in order, then claims new ones. One ``dedup run``
works on a deployment at a time (a PostgreSQL advisory lock held for the run), which is
what makes "searched against everything before it" exact. Crash points
(``DEDUP_CRASH_AT=run.claimed|run.embedded|run.deciding|run.decided|run.added``) let the
tests kill the process between every step.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from dedup.deployment import Deployment
from dedup.errors import Conflict, GalleryError, ModelMismatch
from dedup.faults import crash_point
from dedup.fsutil import atomic_path
from dedup.ids import SYNTHETIC_PREFIX, enrolment_pk_of, gallery_name, is_synthetic
from dedup.ingest.photos import photo_store
from dedup.store import audit, runs
from dedup.store.cases import NewCandidate, open_case
from dedup.store.gallery_members import standing_enrolments
from dedup.store.identities import issue_uin
from dedup.store.locks import try_run_lock
from dedup.store.users import SYSTEM, Actor, authorize

# Face models by settings: loading one takes seconds, so a process loads each once.
_MODELS: dict[Any, Any] = {}


@dataclass
class RunReport:
    """What one ``dedup run`` did."""

    units: int = 0
    enrolments: int = 0
    accepted: int = 0
    cases: int = 0
    rejected: int = 0
    capped_probes: int = 0
    seconds: float = 0.0
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        """Enrolments decided per second of the run."""
        return self.enrolments / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form with stable keys."""
        return {**asdict(self), "enrolments_per_second": round(self.per_second, 3)}


@dataclass
class UnitTemplates:
    """The face pipeline's output for one unit (what ``store/work/unit-N.parquet`` holds)."""

    pks: np.ndarray  # int64, every enrolment of the unit, ascending
    reasons: list[str | None]
    details: list[str]
    vectors: np.ndarray  # float32 (n, dim); zero rows for rejects
    model_id: str

    @property
    def ok(self) -> np.ndarray:
        """Mask of the enrolments that gave a template."""
        return np.array([r is None for r in self.reasons], dtype=bool)


def threshold_of(dep: Deployment) -> float:
    """The candidate threshold: ``search.threshold``, or the face model's operating point when 0."""
    from dedup.face import DEFAULT_COSINE_THRESHOLD

    return dep.settings.search.threshold or DEFAULT_COSINE_THRESHOLD


def synthetic_sample(dim: int, n: int, seed: int = 7) -> np.ndarray:
    """Face-like synthetic templates in a ``dim``-d model space (for training a codec)."""
    from dedup.bench.synth import SyntheticData, SynthSpec, get_profile

    data = SyntheticData(SynthSpec(get_profile("face-like", dim), gallery_size=n, queries=0, seed=seed))
    return np.concatenate([b.vectors for b in data.blocks()])[:n]


def ensure_gallery(dep: Deployment, model_id: str, dim: int, train_sample: np.ndarray | None = None,
                   root: Path | None = None) -> Any:
    """Open the deployment's gallery, creating it and training its codec when needed.

    A new gallery's codec is trained on ``train_sample``, by default a face-like synthetic
    sample in the model's space (a bootstrap: decisions use exact scores; the codec only
    proposes candidates). ``root`` names another gallery folder of the deployment (MOSIP mode's).
    """
    from dedup.index.gallery import Gallery

    root = root if root is not None else dep.gallery
    if not (root / "CURRENT").exists():
        Gallery.create(root, model_id, dim, dep.settings.index)
    gallery = Gallery.open(root, dep.settings.index)
    if gallery.model_id != model_id:
        raise ModelMismatch(f"the gallery holds templates of model {gallery.model_id!r}, the face pipeline makes {model_id!r}")
    if gallery.codec is None:
        sample = train_sample if train_sample is not None else synthetic_sample(dim, min(dep.settings.index.train_size, 20_000))
        gallery.train(sample)
    return gallery


class Runner:
    """One ``dedup run`` on a deployment (see the module docstring for the steps)."""

    def __init__(self, dep: Deployment, actor: Actor, scheduler: str | None = None,
                 progress: Callable[[str], None] | None = None) -> None:
        authorize(actor, "pipeline.run")
        self.dep = dep
        self.actor = actor
        self.scheduler = scheduler if scheduler is not None else (dep.settings.runtime.scheduler or None)
        self.progress = progress or (lambda _msg: None)
        self._model: Any = None
        self._gallery: Any = None
        self._client: Any = None
        self._threshold_warned = False
        self.report = RunReport()

    # ------------------------------------------------------------------ the loop

    def run(self, once: bool = True, poll_seconds: float = 2.0) -> RunReport:
        """Process every received enrolment (``once``), or keep polling for more until interrupted."""
        start = time.perf_counter()
        lock_conn = self.dep.database.connect()
        try:
            if not try_run_lock(lock_conn):
                raise Conflict("another `dedup run` is working on this deployment; wait for it or stop it")
            with self.dep.database.session() as conn:
                self._check_threshold(conn)
                while True:
                    worked = self._step(conn)
                    if not worked:
                        if once:
                            break
                        time.sleep(poll_seconds)
        finally:
            lock_conn.close()  # releases the advisory lock
            if self._client is not None:
                self._client.close()
            self.report.seconds = time.perf_counter() - start
        return self.report

    def _step(self, conn: psycopg.Connection[Any]) -> bool:
        """Advance the oldest unfinished unit, or claim a new one; False when there is nothing to do."""
        unfinished = runs.unfinished_unit(conn)
        if unfinished is None:
            claimed = self._claim(conn)
            if claimed is None:
                return False
            unit_id, state = claimed, "claimed"
        else:
            unit_id, state = unfinished
        templates = self._templates(conn, unit_id)
        if state == "claimed":
            candidates, capped = self._search(conn, unit_id, templates)
            self._decide(conn, unit_id, templates, candidates, capped)
        self._add(conn, unit_id, templates)
        return True

    # ------------------------------------------------------------------ steps

    def _claim(self, conn: psycopg.Connection[Any]) -> int | None:
        claimed = runs.claim_unit(conn, self.dep.settings.store.run_batch_size)
        if claimed is None:
            return None
        unit_id, taken = claimed
        crash_point("run.claimed")
        self.progress(f"unit {unit_id}: {taken} enrolments claimed")
        return unit_id

    def _work_file(self, unit_id: int) -> Path:
        return self.dep.store / "work" / f"unit-{unit_id}.parquet"

    def _templates(self, conn: psycopg.Connection[Any], unit_id: int) -> UnitTemplates:
        """The unit's templates: from its work file, or by running the face pipeline once."""
        path = self._work_file(unit_id)
        if path.exists():
            return read_unit(path)
        from dedup.face import embed_photos

        rows = runs.unit_photos(conn, unit_id)
        photos = photo_store(self.dep.store)
        items = [str(photos.path(sha)) for _, sha in rows]
        result = embed_photos(items, self.dep.settings.face, model=self.model())
        dim = result.dim
        vectors = np.zeros((len(rows), dim), dtype=np.float32)
        reasons: list[str | None] = []
        details: list[str] = []
        for i, rec in enumerate(result.results):
            reasons.append(rec.reason)
            details.append(rec.detail)
            if rec.ok:
                vectors[i] = result.embeddings[rec.row]
        unit = UnitTemplates(np.array([pk for pk, _ in rows], dtype=np.int64), reasons, details, vectors, result.model_id)
        write_unit(unit, path)
        crash_point("run.embedded")
        self.progress(f"unit {unit_id}: {int(unit.ok.sum())} templates, {len(rows) - int(unit.ok.sum())} photos rejected")
        return unit

    def _search(self, conn: psycopg.Connection[Any], unit_id: int, unit: UnitTemplates) -> tuple[dict[int, list[NewCandidate]], int]:
        """Candidates per enrolment pk (gallery, same unit, in flight), capped at max_candidates."""
        from dedup.index.params import SearchParams

        threshold = threshold_of(self.dep)
        params = SearchParams.from_settings(self.dep.settings.search, threshold)
        ok = np.flatnonzero(unit.ok)
        found: dict[int, list[NewCandidate]] = {int(unit.pks[i]): [] for i in ok}
        capped = 0
        if ok.size == 0:
            return found, 0
        probes = unit.vectors[ok]
        own = set(int(p) for p in unit.pks)
        gallery = self.gallery(unit.model_id, unit.vectors.shape[1])
        if len(gallery):
            result = self._gallery_search(gallery, probes, params)
            capped += int(result.capped.sum())
            names = gallery.enrolment_ids(result.row_ids) if result.row_ids.size else []
            real = {n: pk for n in names if (pk := enrolment_pk_of(n)) is not None}
            live = standing_enrolments(conn, [pk for pk in real.values() if pk not in own])
            probe_of = result.probe_index()
            for k, (row, score, name) in enumerate(zip(result.row_ids.tolist(), result.scores.tolist(), names)):
                pk_probe = int(unit.pks[ok[probe_of[k]]])
                if is_synthetic(name):
                    found[pk_probe].append(NewCandidate(int(row), None, float(score), "gallery"))
                elif name in real and real[name] in live:
                    found[pk_probe].append(NewCandidate(int(row), real[name], float(score), "gallery"))
                # else: our own rows from an earlier attempt, or rows no longer in the gallery's
                # live set (duplicates, recaptures, rejected): not candidates.
        # The same unit, in enrolment order: a later capture matches an earlier one.
        sims = probes @ probes.T
        for a in range(ok.size):
            for b in np.flatnonzero(sims[a, :a] >= threshold):
                found[int(unit.pks[ok[a]])].append(NewCandidate(None, int(unit.pks[ok[b]]), float(sims[a, b]), "batch"))
        # Other unfinished units (claimed, embedded, not yet in the gallery).
        for other_id, other in self._in_flight(conn, unit_id):
            sel = np.flatnonzero(other.ok)
            scores = probes @ other.vectors[sel].T
            for a, b in zip(*np.nonzero(scores >= threshold)):
                found[int(unit.pks[ok[a]])].append(NewCandidate(None, int(other.pks[sel[b]]), float(scores[a, b]), "in_flight"))
        cap = params.max_candidates
        for pk, cands in found.items():
            if len(cands) > cap:
                cands.sort(key=lambda c: -c.score)
                found[pk] = cands[:cap]
                capped += 1
        return found, capped

    def _gallery_search(self, gallery: Any, probes: np.ndarray, params: Any) -> Any:
        if self.scheduler is None:
            return gallery.search(probes, params, block=self.dep.settings.search.probe_block)
        from dedup import cluster

        if self._client is None:
            self._client = cluster.connect(self.scheduler)
        plan = cluster.plan_for_device(self.dep.settings.runtime.device, self.dep.settings.search.probe_block)
        return cluster.search_shards(self._client, gallery.shard_paths(), probes, params, plan)

    def _in_flight(self, conn: psycopg.Connection[Any], unit_id: int) -> list[tuple[int, UnitTemplates]]:
        out = []
        for other in runs.other_claimed_units(conn, unit_id):
            path = self._work_file(other)
            if path.exists():
                out.append((other, read_unit(path)))
        return out

    def _decide(self, conn: psycopg.Connection[Any], unit_id: int, unit: UnitTemplates,
                candidates: dict[int, list[NewCandidate]], capped: int) -> None:
        counts = {"accepted": 0, "cases": 0, "rejected": 0}
        reasons: dict[str, int] = {}
        with conn.transaction():
            if runs.lock_unit(conn, unit_id) != "claimed":
                return
            for i, pk in enumerate(unit.pks.tolist()):
                reason = unit.reasons[i]
                if reason is not None:
                    runs.reject_enrolment(conn, pk, reason, unit.details[i])
                    counts["rejected"] += 1
                    reasons[reason] = reasons.get(reason, 0) + 1
                elif candidates.get(pk):
                    open_case(conn, pk, candidates[pk])
                    counts["cases"] += 1
                else:
                    issue_uin(conn, pk, SYSTEM.name)
                    counts["accepted"] += 1
                if i == 0:
                    crash_point("run.deciding")  # mid-transaction: nothing of the unit may survive
            runs.mark_unit_decided(conn, unit_id, unit.model_id)
            audit.record(conn, SYSTEM.name, "run.decide", "unit", unit_id,
                         {**counts, "capped_probes": capped, "rejected_reasons": reasons, "started_by": self.actor.name})
        crash_point("run.decided")
        r = self.report
        r.units += 1
        r.enrolments += len(unit.pks)
        r.accepted += counts["accepted"]
        r.cases += counts["cases"]
        r.rejected += counts["rejected"]
        r.capped_probes += capped
        for k, v in reasons.items():
            r.rejected_reasons[k] = r.rejected_reasons.get(k, 0) + v
        self.progress(f"unit {unit_id}: {counts['accepted']} accepted, {counts['cases']} to adjudication, {counts['rejected']} rejected")

    def _add(self, conn: psycopg.Connection[Any], unit_id: int, unit: UnitTemplates) -> None:
        ok = np.flatnonzero(unit.ok)
        if ok.size:
            gallery = self.gallery(unit.model_id, unit.vectors.shape[1])
            gallery.add(unit.vectors[ok], [gallery_name(int(unit.pks[i])) for i in ok], model_id=unit.model_id)
        crash_point("run.added")
        runs.mark_unit_done(conn, unit_id)
        self._work_file(unit_id).unlink(missing_ok=True)  # the templates live in the gallery now
        if ok.size:
            self._check_threshold(conn)

    def _check_threshold(self, conn: psycopg.Connection[Any]) -> None:
        """Warn (report, progress, one audit row per run) when the gallery has outgrown the threshold."""
        from dedup.errors import DedupError
        from dedup.evaluation.calibrate import check_deployment_threshold

        if self._threshold_warned:
            return
        try:
            check = check_deployment_threshold(self.dep.home, self.gallery_size())
        except DedupError as exc:  # a broken calibration.json must not stop enrolment
            self._threshold_warned = True
            self.report.warnings.append(f"threshold not checked: {exc}")
            self.progress(f"warning: threshold not checked: {exc}")
            return
        if check is None or check.ok:
            return
        self._threshold_warned = True
        self.report.warnings.append(check.message)
        self.progress(f"warning: {check.message}")
        with conn.transaction():
            audit.record(conn, SYSTEM.name, "run.threshold_warning", "settings", "search.threshold", {
                "threshold": check.threshold, "target_fpir": check.target_fpir, "gallery_size": check.gallery_size,
                "fpir": check.fpir, "fpir_ci": list(check.fpir_ci), "required_threshold": check.required_threshold,
                "started_by": self.actor.name})

    # ------------------------------------------------------------------ resources

    def model(self) -> Any:
        """The face model, loaded once per process and settings."""
        if self._model is None:
            from dedup.face import load_model

            key = self.dep.settings.face
            if key not in _MODELS:
                _MODELS[key] = load_model(key)
            self._model = _MODELS[key]
        return self._model

    def gallery_size(self) -> int:
        """Templates in the deployment's gallery now (0 before it exists)."""
        if self._gallery is not None:
            return len(self._gallery)
        if not (self.dep.gallery / "CURRENT").exists():
            return 0
        from dedup.index.gallery import Gallery

        return len(Gallery.open(self.dep.gallery, self.dep.settings.index))

    def gallery(self, model_id: str, dim: int) -> Any:
        """The deployment's gallery (created and trained on first use)."""
        if self._gallery is None:
            self._gallery = ensure_gallery(self.dep, model_id, dim)
        elif self._gallery.model_id != model_id:
            raise ModelMismatch(f"the gallery holds templates of model {self._gallery.model_id!r}, not {model_id!r}")
        return self._gallery


def write_unit(unit: UnitTemplates, path: Path) -> None:
    """Write a unit's templates atomically (biometric data: inside the store only)."""
    dim = unit.vectors.shape[1]
    table = pa.table(
        {
            "enrolment_pk": pa.array(unit.pks, type=pa.int64()),
            "reason": pa.array(unit.reasons, type=pa.string()),
            "detail": pa.array(unit.details, type=pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(unit.vectors.reshape(-1), type=pa.float32()), dim),
        }
    ).replace_schema_metadata({"dedup.schema": "run_unit", "dedup.model_id": unit.model_id})
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
        os.chmod(tmp, 0o600)


def read_unit(path: Path) -> UnitTemplates:
    """Read a unit's work file back."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise GalleryError(f"{path}: unreadable run work file ({exc}); delete it to embed the unit again") from None
    meta = table.schema.metadata or {}
    dim = table.schema.field("embedding").type.list_size
    vectors = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, dim).astype(np.float32)
    return UnitTemplates(table.column("enrolment_pk").to_numpy().astype(np.int64), table.column("reason").to_pylist(),
                         table.column("detail").to_pylist(), vectors, meta.get(b"dedup.model_id", b"").decode())


def fill_synthetic(dep: Deployment, n: int, model_id: str, dim: int, seed: int = 11,
                   progress: Callable[[int], None] | None = None) -> int:
    """Add ``n`` synthetic face-like templates (ids ``synth-<row>``) to the gallery; returns the gallery size.

    They are marked synthetic by their ids everywhere they appear (candidates, cases) and
    never become enrolments. Repeating the call adds nothing (ids are the same).
    """
    from dedup.bench.synth import SyntheticData, SynthSpec, get_profile

    data = SyntheticData(SynthSpec(get_profile("face-like", dim), gallery_size=n, queries=0, seed=seed))
    first = next(data.blocks())
    gallery = ensure_gallery(dep, model_id, dim, train_sample=first.vectors[: min(len(first.vectors), 50_000)])
    with gallery.writer() as writer:  # one new generation for the whole fill
        for block in data.blocks():
            writer.add(block.vectors, [f"{SYNTHETIC_PREFIX}-{r}" for r in block.row_ids.tolist()])
            if progress is not None:
                progress(len(block.row_ids))
    return len(gallery)
