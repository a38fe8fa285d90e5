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

**The threshold** is ``dedup.operating_point.threshold_in_force`` at the gallery's size,
asked again for every unit: as the gallery grows it rises (never falls by itself, ``ratchet``),
and a change is a ``threshold.raised`` (or ``threshold.set``) audit row in the unit's decision
transaction, with the old and new value, N and the FPIR. Each unit records the threshold its
enrolments were judged at (``run_units.threshold``, shown by ``dedup status``/``report``). A
run refuses to start, before anything is claimed or searched, when the face model has no
threshold (no model card, no calibration: ``NoOperatingPoint``). An explicit
``search.threshold`` whose FPIR at N is above the target is a warning (once per run: report,
stderr, a ``run.threshold_warning`` audit row); the run goes on.

A rerun first finishes unfinished units in order, then claims new ones. One ``dedup run``
works on a deployment at a time (a PostgreSQL advisory lock held for the run), which is
what makes "searched against everything before it" exact. Crash points
(``DEDUP_CRASH_AT=run.claimed|run.embedded|run.deciding|run.decided|run.added``) let the
tests kill the process between every step.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from dedup.deployment import Deployment
from dedup.errors import Conflict, GalleryError, ModelMismatch
from dedup.evaluation import live
from dedup.faults import crash_point
from dedup.fsutil import atomic_path
from dedup.ids import SYNTHETIC_PREFIX, enrolment_pk_of, gallery_name, is_synthetic
from dedup.ingest.photos import photo_store
from dedup.operating_point import ThresholdInForce
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


def synthetic_sample(dim: int, n: int, seed: int = 7) -> np.ndarray:
    """Face-like synthetic templates in a ``dim``-d model space (for training a codec)."""
    from dedup.bench.synth import SyntheticData, SynthSpec, get_profile

    data = SyntheticData(SynthSpec(get_profile("face-like", dim), gallery_size=n, queries=0, seed=seed))
    return np.concatenate([b.vectors for b in data.blocks()])[:n]


def ensure_gallery(dep: Deployment, model_id: str, dim: int, train_sample: np.ndarray | None = None,
                   root: Path | None = None) -> Any:
    """Open the deployment's gallery, creating it and training its codec when needed.

    The gallery is checked against the database's record of it (``dedup.index.deployed``):
    files and record must agree, else ``GalleryError`` with a repair hint. It is created
    only when the database has no record of one and its folder holds nothing of a gallery,
    never over existing generations or shards (a lost ``CURRENT`` is damage, not emptiness).
    A new gallery's codec is trained on ``train_sample``, by default a face-like synthetic
    sample in the model's space (a bootstrap: decisions use exact scores; the codec only
    proposes candidates). ``root`` names another gallery folder of the deployment (MOSIP mode's).
    """
    from dedup.index import deployed

    root = root if root is not None else dep.gallery
    gallery = deployed.ensure_gallery(dep, root, model_id, dim)
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
        self._in_force: dict[int, ThresholdInForce] = {}   # unit -> the threshold its search used
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
                self._check_gallery()  # before anything is claimed: a damaged gallery decides nothing
                self._check_threshold(conn, self.threshold_now(conn, self.settings_model_id()))  # refuses without one
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

        in_force = self.threshold_now(conn, unit.model_id)
        self._in_force[unit_id] = in_force
        self._check_threshold(conn, in_force)
        threshold = in_force.value
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
        for _unit, other in self._in_flight(conn, unit_id):
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
            in_force = self._in_force[unit_id]
            self._record_threshold(conn, unit_id, in_force)
            runs.mark_unit_decided(conn, unit_id, unit.model_id, runs.UnitThreshold(
                in_force.value, in_force.source, in_force.basis, in_force.gallery_size, in_force.fpir))
            audit.record(conn, SYSTEM.name, "run.decide", "unit", unit_id,
                         {**counts, "capped_probes": capped, "rejected_reasons": reasons, "started_by": self.actor.name,
                          "threshold": in_force.value})
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
            in_force = self.threshold_now(conn, unit.model_id)
            self._check_threshold(conn, in_force)
            live.refresh_if_due(self.dep, conn, self._gallery, in_force.value, SYSTEM.name,  # issue 13: self-measurement
                                self.report.warnings, self.progress)

    def threshold_now(self, conn: psycopg.Connection[Any], model_id: str) -> ThresholdInForce:
        """The threshold in force at the gallery's size now, never below the last unit's on the same basis."""
        return live.in_force_now(self.dep, conn, model_id, self.gallery_size())

    def _record_threshold(self, conn: psycopg.Connection[Any], unit_id: int, in_force: ThresholdInForce) -> None:
        """A changed threshold is an audit row, in the decision's transaction (so exactly once)."""
        last = runs.last_threshold(conn, in_force.model_id)
        if last is not None and last.basis == in_force.basis and abs(last.value - in_force.value) < 1e-12:
            return
        raised = last is not None and last.basis == in_force.basis and in_force.value > last.value
        audit.record(conn, SYSTEM.name, "threshold.raised" if raised else "threshold.set", "settings", "search.threshold", {
            "old": None if last is None else last.value, "new": in_force.value, "gallery_size": in_force.gallery_size,
            "fpir": in_force.fpir, "fpir_ci": None if in_force.fpir_ci is None else list(in_force.fpir_ci),
            "target_fpir": in_force.target_fpir, "source": in_force.source, "basis": in_force.basis,
            "old_basis": None if last is None else last.basis, "unit": unit_id, "model_id": in_force.model_id})
        self.progress(f"unit {unit_id}: threshold {'raised' if raised else 'set'} to {in_force.value:.4f} "
                      f"({in_force.source}, gallery size {in_force.gallery_size:,})")

    def _check_threshold(self, conn: psycopg.Connection[Any], in_force: ThresholdInForce) -> None:
        """Say the threshold's warnings (an explicit threshold above the target FPIR): report, progress, one audit row per run."""
        if self._threshold_warned or not in_force.warnings:
            return
        self._threshold_warned = True
        for message in in_force.warnings:
            self.report.warnings.append(message)
            self.progress(f"warning: {message}")
        with conn.transaction():
            audit.record(conn, SYSTEM.name, "run.threshold_warning", "settings", "search.threshold", {
                "threshold": in_force.value, "source": in_force.source, "target_fpir": in_force.target_fpir,
                "gallery_size": in_force.gallery_size, "fpir": in_force.fpir,
                "fpir_ci": None if in_force.fpir_ci is None else list(in_force.fpir_ci),
                "warnings": list(in_force.warnings), "started_by": self.actor.name})

    def settings_model_id(self) -> str:
        """The model id the face settings make (from the weight file alone, without loading the network)."""
        from dedup.face.model import ModelSpec, model_id_for

        return model_id_for(ModelSpec.from_settings(self.dep.settings.face))

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

    def _check_gallery(self) -> None:
        """The gallery, when the deployment has one, must open and agree with the database's
        record, and its shards must pass their checks: ``GalleryError`` otherwise."""
        from dedup.index import deployed

        if self._gallery is None:
            gallery = deployed.open_gallery(self.dep)
            if gallery is not None and gallery.codec is not None:  # an untrained one is trained on first use
                self._gallery = gallery
                self._warn_if_outgrown(gallery)

    def _warn_if_outgrown(self, gallery: Any) -> None:
        """Say once per run when the gallery has outgrown its codec (``dedup.index.codec.outgrown``)."""
        from dedup.index.codec import outgrown

        message = outgrown(gallery.codec.nlist, len(gallery), self.dep.settings.index.train_size)
        if message is not None:
            self.report.warnings.append(message)
            self.progress(f"warning: {message}")

    def gallery_size(self) -> int:
        """Templates in the deployment's gallery now (0 before it exists)."""
        if self._gallery is not None:
            return len(self._gallery)
        from dedup.index import deployed

        gallery = deployed.open_gallery(self.dep)
        return len(gallery) if gallery is not None else 0

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
