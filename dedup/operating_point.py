"""The threshold in force: one function answers it for every path (run, bench, eval, calibrate,
the case page, the API, MOSIP mode).

``threshold_in_force(model_id, gallery_size, settings, home)`` decides, in order:

1. ``search.threshold`` when it is not 0 (source ``setting``). It wins, but when the FPIR it
   implies at the gallery's size is above ``calibration.target_fpir`` (or cannot be known,
   with no tail model for the model) the answer carries a warning, which every run reports.
2. the deployment's calibration (``calibration.json`` from ``dedup calibrate --apply``, for
   the same model id): its impostor tail evaluated at N for the target FPIR
   (``deployment-calibration``);
3. the model's card (the deployment's own ``modelcard.json``, else the one dedup ships): its
   tail evaluated at N for the target FPIR (``model-card``).

No card and no calibration: ``NoOperatingPoint``, naming the command that makes one. A model
never borrows another model's threshold, and a card's documented operating point (dlib's LFW
rule, say) is information only.

At N the threshold for a target FPIR is the one whose per-comparison FMR is
``1 - (1 - FPIR)^(1/N)`` (``dedup.evaluation.tail``); by default (``calibration.hold_with_confidence``)
the upper end of that threshold's bootstrap interval, so that the target holds with the tail's
confidence, not only on average; rounded up to a multiple of 1e-4, so it rises in steps as the
gallery grows. Within one tail model it never falls by itself:
``ratchet`` keeps the highest value used so far.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from dedup.config import Settings
from dedup.errors import DedupError, NoOperatingPoint
from dedup.evaluation.tail import TailModel, fmr_for_fpir, fpir_from_fmr
from dedup.modelcards.calibration_file import load_calibration
from dedup.modelcards.registry import load_card

SOURCES = ("setting", "deployment-calibration", "model-card")
STEP = 1e-4      # the threshold in force is a multiple of this


@dataclass(frozen=True)
class TailSource:
    """The impostor tail model that stands for a model's FMR, and what it rests on."""

    tail: TailModel
    source: str            # "deployment-calibration" or "model-card"
    basis: str             # identifies the fit: a change of basis is a new tail, not a fall
    description: str       # in words, for people
    documented_threshold: float | None = None


@dataclass(frozen=True)
class ThresholdInForce:
    """The threshold for a gallery of ``gallery_size`` templates, where it comes from and what it implies."""

    value: float
    source: str                              # one of SOURCES
    gallery_size: int
    fpir: float | None                       # modelled FPIR at ``value`` and N (None: no tail model)
    fpir_ci: tuple[float, float] | None
    target_fpir: float
    model_id: str
    basis: str
    description: str
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with stable keys."""
        d = asdict(self)
        d["fpir_ci"] = None if self.fpir_ci is None else list(self.fpir_ci)
        d["warnings"] = list(self.warnings)
        return d

    def words(self) -> str:
        """One line for people."""
        fpir = "FPIR unknown" if self.fpir is None else f"FPIR {self.fpir:.2e}"
        return (f"threshold {self.value:.4f} ({self.source}: {self.description}; {fpir} at gallery size "
                f"{self.gallery_size:,}, target {self.target_fpir:g})")


def threshold_for_target(tail: TailModel, target_fpir: float, gallery_size: int) -> float:
    """The smallest threshold whose modelled FPIR over ``gallery_size`` comparisons is the target."""
    t = tail.threshold_for_fmr(fmr_for_fpir(min(target_fpir, 1.0 - 1e-9), max(int(gallery_size), 1)))
    return float(min(max(t, -1.0), 1.0))


def held_threshold(tail: TailModel, target_fpir: float, gallery_size: int, with_confidence: bool = True) -> float:
    """The threshold the policy holds the target with: the point estimate, or (``with_confidence``)
    the upper end of its template-bootstrap interval, so that FPIR stays at or below the target
    with the tail's confidence (a tail fitted far from 1e-9 has a wide interval; fail closed)."""
    point = threshold_for_target(tail, target_fpir, gallery_size)
    if not with_confidence:
        return point
    _, hi = tail.threshold_interval(fmr_for_fpir(min(target_fpir, 1.0 - 1e-9), max(int(gallery_size), 1)))
    return float(max(point, hi)) if math.isfinite(hi) else point


def fpir_at(tail: TailModel, threshold: float, gallery_size: int) -> tuple[float, tuple[float, float]]:
    """The modelled FPIR at ``threshold`` over ``gallery_size`` comparisons, and its bootstrap interval."""
    n = max(int(gallery_size), 1)
    lo, hi = tail.fmr_interval(threshold)
    return float(fpir_from_fmr(tail.fmr(threshold), n)), (float(fpir_from_fmr(lo, n)), float(fpir_from_fmr(hi, n)))


def impostor_tail(model_id: str, home: Path | None = None, notes: list[str] | None = None) -> TailSource | None:
    """The tail that stands for ``model_id``'s FMR: the deployment's calibration, else the card.

    Problems that make a source unusable (a broken file, a calibration of another model) are
    appended to ``notes`` and the next source is tried.
    """
    notes = [] if notes is None else notes
    card = None
    try:
        card = load_card(model_id, home)
    except DedupError as exc:
        notes.append(f"model card not used: {exc}")
    documented = None if card is None else card.documented_threshold
    if home is not None:
        try:
            saved = load_calibration(home)
        except DedupError as exc:
            saved = None
            notes.append(f"calibration not used: {exc}")
        if saved is not None:
            cal, tail = saved
            if cal.get("model_id") == model_id:
                return TailSource(tail, "deployment-calibration", f"deployment-calibration@{cal.get('written_at')}",
                                  f"this deployment's calibration ({tail.n_pairs:,} impostor pairs, written "
                                  f"{str(cal.get('written_at'))[:10]})", documented)
            notes.append(f"calibration.json is for model {cal.get('model_id')!r}, not {model_id!r}: not used")
    if card is not None:
        return TailSource(card.tail, "model-card", f"model-card:{card.model_id}@{card.provenance.fitted_at}",
                          card.describe(), documented)
    return None


def threshold_in_force(model_id: str, gallery_size: int, settings: Settings, home: Path | None = None,
                       target_fpir: float | None = None) -> ThresholdInForce:
    """The threshold in force for ``model_id`` against a gallery of ``gallery_size`` (see the module docstring).

    ``target_fpir`` overrides ``calibration.target_fpir`` (a MOSIP request names its own).
    """
    n = max(int(gallery_size), 1)
    target = settings.calibration.target_fpir if target_fpir is None else float(target_fpir)
    notes: list[str] = []
    found = impostor_tail(model_id, home, notes)
    explicit = settings.search.threshold
    if explicit != 0.0:
        if found is None:
            warn = (f"search.threshold {explicit:.4f} is set, but model {model_id} has no model card or calibration: "
                    "the FPIR it gives is unknown (run `dedup calibrate --apply` to know it)")
            return ThresholdInForce(explicit, "setting", n, None, None, target, model_id, "setting",
                                    "search.threshold", (*notes, warn))
        fpir, ci = fpir_at(found.tail, explicit, n)
        warnings = list(notes)
        if fpir > target * (1 + 1e-9):
            need = threshold_for_target(found.tail, target, n)
            warnings.append(f"search.threshold {explicit:.4f} implies FPIR {fpir:.2e} (CI {ci[0]:.1e}..{ci[1]:.1e}) at "
                            f"gallery size {n:,}, above the target {target:g}: the target needs {need:.4f} "
                            f"({found.description}); set search.threshold = 0 to follow it")
        return ThresholdInForce(explicit, "setting", n, fpir, ci, target, model_id, "setting", "search.threshold",
                                tuple(warnings))
    if found is None:
        raise NoOperatingPoint(
            f"face model {model_id} has no model card and this deployment has no calibration for it, so there is no "
            "threshold to search at (dedup never borrows another model's): run `dedup calibrate --templates "
            "LABELLED.parquet --apply` with labelled templates of this model (or set search.threshold explicitly)"
            + (f" [{'; '.join(notes)}]" if notes else ""))
    value = _step_up(held_threshold(found.tail, target, n, settings.calibration.hold_with_confidence))
    fpir, ci = fpir_at(found.tail, value, n)
    return ThresholdInForce(value, found.source, n, fpir, ci, target, model_id, found.basis, found.description,
                            tuple(notes))


def _step_up(t: float) -> float:
    # Up to the next 1e-4 (the score histograms' resolution): the threshold then rises in
    # steps as the gallery grows, not by a hair at every unit, and rounding up never lets
    # FPIR exceed the target.
    k = math.ceil(t / STEP)
    v = round(k * STEP, 4)
    return float(min(v if v >= t else round((k + 1) * STEP, 4), 1.0))


def ratchet(current: ThresholdInForce, previous_value: float | None, previous_basis: str | None) -> ThresholdInForce:
    """Never let the threshold fall by itself: on the same tail model (basis), keep the highest.

    An explicit setting, or a new calibration or card (another basis), is a decision someone
    made and is taken as it is.
    """
    if current.source == "setting" or previous_value is None or previous_basis != current.basis:
        return current
    if previous_value <= current.value or not math.isfinite(previous_value):
        return current
    return replace(current, value=float(previous_value))
