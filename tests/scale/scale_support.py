"""Helpers shared by the scale-out tests (a uniquely named module, imported by name)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dedup.config import IndexSettings
from dedup.index.gallery import Gallery
from dedup.index.params import SearchParams
from dedup.synth import Probes, SyntheticData, TemplateBlock

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


def build_gallery(root: Path, data: SyntheticData, shard_capacity: int, remove: int = 0) -> Built:
    """Build a gallery of ``data`` with shards of ``shard_capacity`` rows; optionally remove rows."""
    g = data.gallery()
    settings = IndexSettings(shard_capacity=shard_capacity, nlist=32, pq_m=16, train_size=2000)
    gallery = Gallery.create(root, data.profile.model_id, data.profile.dim, settings)
    gallery.train(g.vectors[:2000], seed=1)
    gallery.add(g.vectors, [f"e{r}" for r in g.row_ids])
    removed = np.zeros(0, dtype=np.int64)
    if remove:
        removed = np.random.default_rng(5).choice(g.row_ids, size=remove, replace=False)
        gallery.remove(removed)
    params = SearchParams(threshold=data.profile.threshold, max_candidates=20)
    return Built(root, data, g, data.probes(), params, np.sort(removed))
