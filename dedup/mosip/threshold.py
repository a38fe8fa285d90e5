"""IDENTIFY's ``flags.targetFPIR`` -> the threshold, and the FPIR estimate of a score.

MOSIP's targetFPIR t means FPIR = 10^(-t/10) (30 -> 1e-3; ABIS API "Flags"). The one
threshold policy of MOSIP mode is :func:`choose`:

- the deployment is calibrated (``calibration.json`` from ``dedup calibrate --apply``) and
  the request names a target: the threshold whose modelled FPIR at the MOSIP gallery's
  current size is the target (``FMR = 1 - (1 - FPIR)^(1/N)`` read from the fitted tail);
- otherwise the threshold ``dedup run`` uses (``dedup.pipeline.threshold_of``), and the
  response says so (analytics ``thresholdSource``: ``configured``).

A score's FPIR estimate is ``1 - (1 - FMR(score))^N``, with FMR from the calibration, else
from the documented impostor distribution of the model (``dedup.web.scoring``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from dedup.deployment import Deployment
from dedup.errors import DedupError


@dataclass(frozen=True)
class ThresholdChoice:
    """The threshold for one IDENTIFY and how a score reads at this gallery size."""

    threshold: float
    source: str  # "calibration" or "configured"
    target_fpir: float | None
    fpir_at: Callable[[float], float | None]


def fpir_of_target(t: float) -> float:
    """MOSIP's targetFPIR value -> FPIR."""
    return float(10.0 ** (-t / 10.0))


def choose(dep: Deployment, target: float | None, gallery_size: int) -> ThresholdChoice:
    """The threshold policy of MOSIP mode (see the module docstring)."""
    from dedup.evaluation.calibrate import load_calibration
    from dedup.evaluation.tail import fmr_for_fpir, fpir_from_fmr
    from dedup.pipeline import threshold_of
    from dedup.web.scoring import meaning_function

    n = max(int(gallery_size), 1)
    try:
        saved = load_calibration(dep.home)
    except DedupError:
        saved = None  # a broken calibration file: fall back to the configured threshold
    if saved is not None and target is not None:
        _, tail = saved
        fpir = fpir_of_target(target)
        t = min(float(tail.threshold_for_fmr(fmr_for_fpir(min(fpir, 0.999999), n))), 1.0)
        return ThresholdChoice(t, "calibration", fpir, lambda s: float(fpir_from_fmr(float(tail.fmr(s)), n)))
    meaning = meaning_function(dep.home, dep.settings)

    def fpir_at(score: float) -> float | None:
        fmr = meaning(score).fmr
        return None if fmr is None else float(fpir_from_fmr(fmr, n))

    return ThresholdChoice(float(threshold_of(dep)), "configured", None if target is None else fpir_of_target(target), fpir_at)
