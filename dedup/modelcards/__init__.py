"""Model cards: per face model, the documented operating point (information only), a bundled
impostor-tail model with its provenance, and the genuine-score summary it was measured on.

- ``card``: the ``ModelCard`` record and its JSON form;
- ``registry``: ``load_card(model_id, home)`` (the deployment's own card, else a bundled one);
- ``calibration_file``: a deployment's ``calibration.json``;
- ``build``: fitting cards on generated templates; ``python -m dedup.modelcards.build``
  regenerates the bundled ones.

The threshold in force is computed from these in one place only: ``dedup.operating_point``.
"""

from __future__ import annotations

from dedup.modelcards.card import GenuineSummary, ModelCard, Provenance
from dedup.modelcards.registry import DEPLOYMENT_CARD, load_card, save_deployment_card

__all__ = ["DEPLOYMENT_CARD", "GenuineSummary", "ModelCard", "Provenance", "load_card", "save_deployment_card"]
