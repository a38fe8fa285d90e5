"""Finding a model's card: the deployment's own, else the one dedup ships.

Bundled cards are the JSON files of ``dedup/modelcards/cards/`` (package data), one per
model id, named after it (``:`` written ``_``). A deployment's own card is ``modelcard.json``
in its folder, written by ``dedup calibrate --apply``; it wins for its model id.

Synthetic profiles (``synthetic:NAME:dDIM:v1``) are generators, so a card for one at a
dimension nothing ships is fitted here on its own generated impostor pairs, once per process.
"""

from __future__ import annotations

import functools
from pathlib import Path

from dedup.errors import BadInput
from dedup.fsutil import atomic_write_text, existing_mode
from dedup.modelcards.card import CARDS_DIR, ModelCard, card_file_name, card_json, read_card

DEPLOYMENT_CARD = "modelcard.json"


def load_card(model_id: str, home: Path | None = None) -> ModelCard | None:
    """The card for ``model_id``: the deployment's at ``home``, else a bundled one; None without."""
    if home is not None:
        own = deployment_card(home)
        if own is not None and own.model_id == model_id:
            return own
    path = CARDS_DIR / card_file_name(model_id)
    if path.exists():
        return _bundled(str(path))
    if model_id.startswith("synthetic:"):
        return _synthetic(model_id)
    return None


def deployment_card(home: Path) -> ModelCard | None:
    """The deployment's own card (``modelcard.json``), or None."""
    path = Path(home) / DEPLOYMENT_CARD
    if not path.exists():
        return None
    return read_card(path)


def save_deployment_card(home: Path, card: ModelCard) -> Path:
    """Write the deployment's own card atomically."""
    path = Path(home) / DEPLOYMENT_CARD
    atomic_write_text(path, card_json(card), existing_mode(path, 0o600))
    return path


@functools.lru_cache(maxsize=32)
def _bundled(path: str) -> ModelCard:
    return read_card(Path(path))


@functools.lru_cache(maxsize=8)
def _synthetic(model_id: str) -> ModelCard | None:
    from dedup.modelcards.build import synthetic_card

    parts = model_id.split(":")
    if len(parts) != 4 or not parts[2].startswith("d") or not parts[2][1:].isdigit():
        return None
    from dedup.bench.synth import PROFILES, get_profile

    if parts[1] not in PROFILES:
        return None
    profile = get_profile(parts[1], int(parts[2][1:]))
    if profile.model_id != model_id:
        raise BadInput(f"model id {model_id!r}: not a synthetic model this version makes ({profile.model_id})")
    return synthetic_card(profile, runtime=True)
