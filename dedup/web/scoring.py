"""What a score means, in words: "at this score about 1 in N different people would match".

N is 1 / FMR(score), the false-match rate of one comparison of two different people at that
score, read from the same impostor tail model the threshold in force rests on
(``dedup.operating_point.impostor_tail``): the deployment's calibration, else the face
model's card. A model with neither has no known rate: the page says so and how to make one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dedup.config import Settings
from dedup.errors import DedupError


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


def meaning_function(home: Path, settings: Settings, model_id: str | None = None) -> Callable[[float], ScoreMeaning]:
    """The score -> meaning function for a deployment (its tail model is read once).

    ``model_id`` defaults to the gallery's model, else the one the face settings make.
    """
    from dedup.operating_point import impostor_tail

    notes: list[str] = []
    try:
        found = impostor_tail(model_id or _model_id(home, settings), home, notes)
    except DedupError as exc:
        found, notes = None, [str(exc)]
    if found is not None:
        tail = found.tail
        source = f"{found.description}; the tail model behind the threshold in force"

        def from_tail(score: float) -> ScoreMeaning:
            return _meaning(score, float(tail.fmr(score)), source)

        return from_tail
    broken = f" ({'; '.join(notes)})" if notes else ""
    source = ("no model card and no calibration for this deployment's face model, so no known false-match rate: "
              f"run `dedup calibrate --apply`{broken}")
    return lambda score: ScoreMeaning(score, None, None, "unknown", source)


def _model_id(home: Path, settings: Settings) -> str:
    from dedup.deployment import GALLERY_DIR

    if (Path(home) / GALLERY_DIR / "CURRENT").exists():
        from dedup.index.gallery import Gallery

        return str(Gallery.open(Path(home) / GALLERY_DIR, settings.index).model_id)
    from dedup.face.model import ModelSpec, model_id_for

    return model_id_for(ModelSpec.from_settings(settings.face))


def _meaning(score: float, fmr: float, source: str) -> ScoreMeaning:
    fmr = min(max(fmr, 0.0), 1.0)
    return ScoreMeaning(score, fmr, (1.0 / fmr) if fmr > 0 else None, one_in_words(fmr), source)


def describe(meaning: ScoreMeaning) -> dict[str, Any]:
    """The meaning as template values."""
    return {"score": f"{meaning.score:.4f}", "words": meaning.words, "source": meaning.source,
            "fmr": None if meaning.fmr is None else f"{meaning.fmr:.2g}"}
