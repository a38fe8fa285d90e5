"""IDENTIFY's ``flags.targetFPIR`` -> the threshold, and the FPIR estimate of a score.

MOSIP's targetFPIR t means FPIR = 10^(-t/10) (30 -> 1e-3; ABIS API "Flags"). The threshold
is the deployment's one policy, ``dedup.operating_point.threshold_in_force``, at the MOSIP
gallery's current size with the request's target (the deployment's
``calibration.target_fpir`` when the request names none): an explicit ``search.threshold``,
else the deployment's calibration, else the model's card. With neither it raises
``NoOperatingPoint`` and the IDENTIFY fails rather than search at a guess (fail closed).

A candidate's FPIR estimate is ``1 - (1 - FMR(score))^N`` from the same impostor tail.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from dedup.deployment import Deployment


@dataclass(frozen=True)
class ThresholdChoice:
    """The threshold for one IDENTIFY and how a score reads at this gallery size."""

    threshold: float
    source: str  # "setting", "deployment-calibration" or "model-card"
    target_fpir: float
    fpir_at: Callable[[float], float | None]
    warnings: tuple[str, ...] = ()


def fpir_of_target(t: float) -> float:
    """MOSIP's targetFPIR value -> FPIR."""
    return float(10.0 ** (-t / 10.0))


# Answers by (settings, model, N, target), kept CACHE_SECONDS: N changes only with INSERT
# and DELETE, so a run of IDENTIFYs asks the policy (which reads and parses the model card
# and calibration files) about once; a new calibration is in force within CACHE_SECONDS.
CACHE_SECONDS = 10.0
_CACHE: dict[tuple[object, ...], tuple[float, ThresholdChoice]] = {}


def choose(dep: Deployment, model_id: str, target: float | None, gallery_size: int) -> ThresholdChoice:
    """The threshold in force for this IDENTIFY (see the module docstring)."""
    key = (str(dep.home), dep.settings, model_id, int(gallery_size), target)
    now = time.monotonic()
    hit = _CACHE.get(key)
    if hit is None or now - hit[0] > CACHE_SECONDS:
        if len(_CACHE) > 64:
            _CACHE.clear()
        hit = _CACHE[key] = (now, _choose(dep, model_id, target, gallery_size))
    return hit[1]


def _choose(dep: Deployment, model_id: str, target: float | None, gallery_size: int) -> ThresholdChoice:
    from dedup.evaluation.tail import fpir_from_fmr
    from dedup.operating_point import impostor_tail, threshold_in_force

    n = max(int(gallery_size), 1)
    tif = threshold_in_force(model_id, n, dep.settings, dep.home,
                             target_fpir=None if target is None else fpir_of_target(target))
    tail = impostor_tail(model_id, dep.home)

    def estimate(score: float) -> float | None:
        # The point estimate only: the bootstrap interval (operating_point.fpir_at) costs
        # milliseconds per candidate and MOSIP reads none of it.
        return None if tail is None else float(fpir_from_fmr(float(tail.tail.fmr(score)), n))

    return ThresholdChoice(tif.value, tif.source, tif.target_fpir, estimate, tif.warnings)
