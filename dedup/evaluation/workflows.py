"""The two evaluation workflows the CLI wraps: ``evaluate_set`` (``dedup eval``) and
``calibrate_deployment`` (``dedup calibrate``). Each loads its inputs, computes, writes what it
writes and returns a record; printing is the caller's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dedup.config import Settings
from dedup.errors import BadInput, InvalidParameter, NoOperatingPoint
from dedup.evaluation.calibrate import (
    Applied,
    Calibration,
    apply_calibration,
    calibrate,
    calibration_sources,
    deployment_card,
    deployment_gallery_size,
    has_database,
    sample_deployment_impostors,
)
from dedup.evaluation.data import LabelledSet, load_photo_folder, load_templates
from dedup.evaluation.evaluate import EvalOptions, EvalResult, evaluate
from dedup.evaluation.report import write_report
from dedup.evaluation.scores import genuine_scores, impostor_sample
from dedup.evaluation.tail import fit_tail
from dedup.operating_point import ThresholdInForce, threshold_in_force

ProgressFn = Callable[[str, int, int], None]


def load_labelled_set(inputs: list[Path], home: Path | None) -> LabelledSet:
    """Templates Parquet files, or one folder of photos (a subfolder per identity) embedded with
    the face settings of ``home`` (None: the defaults)."""
    if len(inputs) == 1 and inputs[0].is_dir():
        return load_photo_folder(inputs[0], home)
    return load_templates(inputs)


@dataclass
class Evaluation:
    """What ``evaluate_set`` computed and the report files it wrote."""

    result: EvalResult
    files: dict[str, Path]

    def to_dict(self) -> dict[str, Any]:
        return {**self.result.to_dict(), "files": {k: str(v) for k, v in self.files.items()}}


def evaluate_set(inputs: list[Path], out: Path, settings: Settings, home: Path | None, *,
                 threshold: float | None = None, gallery_sizes: tuple[int, ...] | None = None,
                 impostor_pairs: int | None = None, max_searches: int = 10_000, seed: int = 0,
                 progress: ProgressFn | None = None) -> Evaluation:
    """``dedup eval``: the accuracy of a labelled set, with the report written to ``out``."""
    cal = settings.calibration
    options = EvalOptions(
        threshold=threshold, gallery_sizes=gallery_sizes,
        max_impostor_pairs=impostor_pairs or cal.impostor_pairs, max_searches=max_searches,
        confidence=cal.confidence, bootstrap=cal.bootstrap, tail_fraction=cal.tail_fraction, seed=seed,
        target_fpir=cal.target_fpir)
    data = load_labelled_set(inputs, home)

    def in_force(n: int) -> ThresholdInForce | None:
        try:
            return threshold_in_force(data.model_id, n, settings, home)
        except NoOperatingPoint:
            return None

    result = evaluate(data, options, progress=progress, keep_outcome=True, in_force=in_force)
    return Evaluation(result, write_report(result, out))


@dataclass
class DeploymentCalibration:
    """What ``calibrate_deployment`` found, and what it wrote when applied."""

    calibration: Calibration
    impostor_source: str            # "templates" or "deployment gallery"
    applied: Applied | None
    in_force: ThresholdInForce | None = None     # the threshold in force before this calibration
    in_force_error: str | None = None            # why there was none

    def to_dict(self) -> dict[str, Any]:
        applied = None if self.applied is None else {
            "settings": str(self.applied.settings_path), "calibration": str(self.applied.calibration_path),
            "model_card": str(self.applied.card_path),
            "previous_threshold": self.applied.previous_threshold, "by": self.applied.audited_by}
        return {**self.calibration.to_dict(), "impostor_source": self.impostor_source, "applied": applied,
                "threshold_in_force": None if self.in_force is None else self.in_force.to_dict(),
                "threshold_in_force_error": self.in_force_error,
                "sources": calibration_sources(self.calibration)}


def calibrate_deployment(home: Path, settings: Settings, *, target_fpir: float | None = None,
                         gallery_size: int | None = None, enrolments_per_day: float | None = None,
                         duplicate_rate: float = 0.0, templates: list[Path] | None = None,
                         impostor_pairs: int | None = None, seed: int = 0, apply: bool = False,
                         user: str | None = None, progress: ProgressFn | None = None) -> DeploymentCalibration:
    """``dedup calibrate``: the threshold that keeps FPIR at a target for a gallery size.

    Impostor scores come from labelled ``templates`` (whose genuine pairs also give FNIR), else
    from the deployment's own gallery at ``home``. The gallery size defaults to the
    deployment's. With ``apply``, the threshold is written to the deployment (see
    ``apply_calibration``) as ``user``.
    """
    cal = settings.calibration
    target = cal.target_fpir if target_fpir is None else target_fpir
    size_source = "given"
    if gallery_size is None:
        gallery_size = deployment_gallery_size(home)
        if gallery_size is None:
            raise BadInput(f"pass --gallery-size N ({home} is not a deployment with a gallery to read its size from)")
        size_source = "deployment gallery"
    rng = np.random.default_rng(seed)
    max_pairs = impostor_pairs or cal.impostor_pairs
    gen = None
    if templates:
        data = load_templates(list(templates))
        model_id, dim = data.model_id, int(data.vectors.shape[1])
        imp = impostor_sample(data.vectors, data.identity, data.group, data.group_names,
                              max_pairs=max_pairs, rng=rng, progress=progress)
        gen = genuine_scores(data.vectors, data.identity, data.group, rng=rng)
        described = f"labelled templates ({', '.join(p.name for p in templates)}: {data.counts()['identities']:,} identities)"
    else:  # the live gallery: pairs of different accepted identities (no genuine pairs, so no FNIR)
        live = sample_deployment_impostors(home, max_pairs, rng)
        imp, model_id, dim = live.impostor, live.model_id, live.dim
        described = f"this deployment's gallery: pairs of {live.accepted:,} accepted identities"
    try:
        tail = fit_tail(imp, cal.tail_fraction, cal.confidence, cal.bootstrap, rng)
    except InvalidParameter as exc:
        raise BadInput(f"the threshold for FPIR {target:g} at gallery size {gallery_size:,} is not estimable from "
                       f"{imp.n_pairs:,} impostor pairs ({exc})") from None
    in_force, in_force_error = _current(model_id, gallery_size, settings, home)
    result = calibrate(tail, gen, target, gallery_size, model_id, imp, enrolments_per_day, duplicate_rate,
                       None if in_force is None else in_force.value, size_source)
    card = deployment_card(result, tail, dim, described, gen)
    applied = apply_calibration(home, user, result, tail, card) if apply else None
    return DeploymentCalibration(result, "templates" if templates else "deployment gallery", applied,
                                 in_force, in_force_error)


def _current(model_id: str, gallery_size: int, settings: Settings, home: Path) -> tuple[ThresholdInForce | None, str | None]:
    """The threshold in force before this calibration (None, with the reason, when there is none)."""
    try:
        return threshold_in_force(model_id, gallery_size, settings, home if has_database(home) else None), None
    except NoOperatingPoint as exc:
        return None, str(exc)
