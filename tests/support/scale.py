"""Helpers shared by the scale-out tests: seeded galleries in a given shard layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dedup.bench.synth import Probes, SyntheticData, TemplateBlock
from dedup.config import IndexSettings
from dedup.index.params import SearchParams

from .galleries import build_gallery

GALLERY_SIZE = 6000
QUERIES = 160
SEED = 11


@dataclass
class Built:
    """A gallery on disk with the data it was built from."""

    root: Path
    data: SyntheticData
    gallery: TemplateBlock
    probes: Probes
    params: SearchParams
    removed: np.ndarray


def build_layout(root: Path, data: SyntheticData, shard_capacity: int, remove: int = 0) -> Built:
    """Build a gallery of ``data`` with shards of ``shard_capacity`` rows; optionally remove rows."""
    settings = IndexSettings(shard_capacity=shard_capacity, nlist=32, pq_m=16, train_size=2000)
    gallery = build_gallery(root, data, settings, seed=1)
    g = data.gallery()
    removed = np.zeros(0, dtype=np.int64)
    if remove:
        removed = np.random.default_rng(5).choice(g.row_ids, size=remove, replace=False)
        gallery.remove(removed)
    params = SearchParams(threshold=data.profile.threshold, max_candidates=20)
    return Built(root, data, g, data.probes(), params, np.sort(removed))
