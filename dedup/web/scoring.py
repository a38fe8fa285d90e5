"""What a score means, in words: "at this score about 1 in N different people would match".

N is 1 / FMR(score), the false-match rate of one comparison of two different people at that
score. It comes from, in order:

1. the deployment's calibration (``calibration.json``, written by ``dedup calibrate --apply``):
   the sampled impostor scores and the fitted tail of *this* deployment;
2. else the documented impostor distribution of the model's profile
   (``dedup.bench.synth.TARGETS``: the face-like profile is fitted to dlib's ResNet, the default
   model): a Gaussian with the profile's documented impostor mean, whose spread is set so that
   it gives the documented FMR at the profile's operating point. Only a rough guide far above
   that point, and the page says so;
3. else nothing: the page says that no calibration exists and how to make one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

from dedup.config import Settings
from dedup.errors import DedupError

# Settings face.model -> the synthetic profile fitted to it (where one is documented).
_PROFILE_OF_MODEL = {"dlib": "face-like"}


@dataclass(frozen=True)
class ScoreMeaning:
    """A score with its false-match rate and the words for it."""

    score: float
    fmr: float | None
    one_in: float | None
    words: str
    source: str


def one_in_words(fmr: float | None) -> str:
    """"about 1 in 48,000" style words for a false-match rate."""
    if fmr is None:
        return "unknown"
    if fmr <= 1e-12:
        return "fewer than 1 in a trillion"
    n = 1.0 / fmr
    if n < 1.5:
        return "nearly every"
    digits = max(0, int(math.floor(math.log10(n))) - 1)  # two significant figures
    rounded = round(n, -digits) if digits else round(n)
    return f"about 1 in {int(rounded):,}"


def meaning_function(home: Path, settings: Settings) -> Callable[[float], ScoreMeaning]:
    """The score -> meaning function for a deployment (reads calibration.json once)."""
    from dedup.evaluation.calibrate import load_calibration

    try:
        saved = load_calibration(home)
    except DedupError as exc:
        saved = None
        broken = f" ({exc})"
    else:
        broken = ""
    if saved is not None:
        cal, tail = saved
        source = (f"this deployment's calibration (calibration.json: {tail.n_pairs:,} impostor pairs of model "
                  f"{cal.get('model_id', '?')}, fitted tail above {tail.u:.3f})")

        def from_calibration(score: float) -> ScoreMeaning:
            fmr = float(tail.fmr(score))
            return _meaning(score, fmr, source)

        return from_calibration
    profile_fmr = _profile_fmr(settings.face.model)
    if profile_fmr is not None:
        fmr_of, source = profile_fmr

        def from_profile(score: float) -> ScoreMeaning:
            return _meaning(score, fmr_of(score), source)

        return from_profile
    source = ("no calibration for this deployment and no documented false-match rate for this face model: "
              f"run `dedup calibrate --apply`{broken}")
    return lambda score: ScoreMeaning(score, None, None, "unknown", source)


def _meaning(score: float, fmr: float, source: str) -> ScoreMeaning:
    fmr = min(max(fmr, 0.0), 1.0)
    return ScoreMeaning(score, fmr, (1.0 / fmr) if fmr > 0 else None, one_in_words(fmr), source)


def _profile_fmr(model: str) -> tuple[Callable[[float], float], str] | None:
    """FMR(score) from the documented impostor distribution of the profile fitted to ``model``."""
    from dedup.bench.synth import PROFILES, TARGETS

    name = _PROFILE_OF_MODEL.get(model)
    if name is None:
        return None
    profile, targets = PROFILES[name], TARGETS[name]
    mean = targets["impostor.mean"][0]
    fmr_at_threshold = targets["fmr_at_threshold.all"][0]
    sd = (profile.threshold - mean) / NormalDist().inv_cdf(1.0 - fmr_at_threshold)

    def fmr(score: float) -> float:
        return _upper_tail(score, mean, sd)

    source = (f"the documented false-match rate of the {model} model's profile ({name}: impostor mean {mean:.3f}, "
              f"FMR {fmr_at_threshold:g} at {profile.threshold:.3f}; Gaussian tail, a rough guide far above that); "
              "run `dedup calibrate --apply` for this deployment's own")
    return fmr, source


def _upper_tail(score: float, mean: float, sd: float) -> float:
    # P(X >= score) for X ~ N(mean, sd); erfc keeps precision far into the tail (1 - cdf does not).
    return 0.5 * math.erfc((score - mean) / (sd * math.sqrt(2.0)))


def describe(meaning: ScoreMeaning) -> dict[str, Any]:
    """The meaning as template values."""
    return {"score": f"{meaning.score:.4f}", "words": meaning.words, "source": meaning.source,
            "fmr": None if meaning.fmr is None else f"{meaning.fmr:.2g}"}
