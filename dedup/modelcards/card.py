"""A face model's card: what is known about its scores, and where that knowledge comes from.

A card holds the model's id and dimension, its documented operating point (information only:
the threshold in force is never read from it, see ``dedup.operating_point``), an impostor
tail model (``dedup.evaluation.tail.TailModel``: sampled FMR below ``u``, a generalized Pareto
above) with its provenance, and the genuine-score summary measured with it. Statistics only:
no template, no photo, no identity.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dedup.errors import BadInput
from dedup.evaluation.tail import TailModel

CARD_VERSION = 1
CARDS_DIR = Path(__file__).resolve().parent / "cards"   # the bundled cards (package data)


def card_file_name(model_id: str) -> str:
    """The bundled file name of a model id's card."""
    return model_id.replace(":", "_").replace("/", "_") + ".json"


@dataclass(frozen=True)
class Provenance:
    """Where the tail model's impostor pairs came from."""

    data: str              # in words: which templates, of what, how many
    impostor_pairs: int
    templates: int
    fitted_at: str         # ISO date-time (UTC)
    method: str            # how the tail was fitted
    synthetic: bool        # fitted on generated templates, not on the model's own output


@dataclass(frozen=True)
class GenuineSummary:
    """Genuine (same person) score statistics of the data the card was measured on."""

    pairs: int
    mean: float | None
    sd: float | None
    p01: float | None
    p05: float | None
    p50: float | None
    p95: float | None
    source: str

    @staticmethod
    def of(scores: np.ndarray, source: str) -> GenuineSummary:
        """The summary of genuine scores (none: every figure None)."""
        s = np.asarray(scores, dtype=np.float64)
        if s.size == 0:
            return GenuineSummary(0, None, None, None, None, None, None, source)
        q = [float(v) for v in np.quantile(s, [0.01, 0.05, 0.5, 0.95])]
        return GenuineSummary(int(s.size), float(s.mean()), float(s.std()), q[0], q[1], q[2], q[3], source)


@dataclass(frozen=True)
class ModelCard:
    """One face model's card (bundled with dedup, or a deployment's own from ``dedup calibrate``)."""

    model_id: str
    dim: int
    name: str
    documented_threshold: float | None    # information only: never the threshold in force
    documented_source: str
    tail: TailModel
    provenance: Provenance
    genuine: GenuineSummary
    kind: str = "bundled"                 # "bundled" (ships with dedup) or "deployment"

    def to_dict(self) -> dict[str, Any]:
        """The card's JSON document."""
        return {"card_version": CARD_VERSION, "model_id": self.model_id, "dim": self.dim, "name": self.name,
                "kind": self.kind, "documented_threshold": self.documented_threshold,
                "documented_source": self.documented_source, "provenance": asdict(self.provenance),
                "genuine": asdict(self.genuine), "tail": _rounded(self.tail.to_dict())}

    @staticmethod
    def from_dict(doc: dict[str, Any], where: str) -> ModelCard:
        """Parse a card document (``where`` names it in errors)."""
        if doc.get("card_version") != CARD_VERSION:
            raise BadInput(f"{where}: model card version {doc.get('card_version')!r}, expected {CARD_VERSION}")
        try:
            return ModelCard(str(doc["model_id"]), int(doc["dim"]), str(doc["name"]),
                             None if doc["documented_threshold"] is None else float(doc["documented_threshold"]),
                             str(doc["documented_source"]), TailModel.from_dict(doc["tail"]),
                             Provenance(**doc["provenance"]), GenuineSummary(**doc["genuine"]), str(doc.get("kind", "bundled")))
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInput(f"{where}: not a model card ({exc})") from None

    def describe(self) -> str:
        """One line: what the card's tail rests on."""
        p = self.provenance
        return f"{self.kind} model card of {self.name} ({p.impostor_pairs:,} impostor pairs: {p.data}; fitted {p.fitted_at[:10]})"


def read_card(path: Path) -> ModelCard:
    """A card from a JSON file."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInput(f"{path}: unreadable model card ({exc})") from None
    if not isinstance(doc, dict):
        raise BadInput(f"{path}: not a model card")
    return ModelCard.from_dict(doc, str(path))


def card_json(card: ModelCard) -> str:
    """The card as the text of its JSON file."""
    return json.dumps(card.to_dict(), indent=1, sort_keys=True) + "\n"


def _rounded(tail: dict[str, Any]) -> dict[str, Any]:
    # Nine significant digits keep every figure the card answers; the bundled files stay small.
    def r(v: Any) -> Any:
        if isinstance(v, float):
            return float(f"{v:.9g}")
        if isinstance(v, list):
            return [r(x) for x in v]
        return v

    return {k: r(v) for k, v in tail.items()}
