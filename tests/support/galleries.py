"""Galleries built from seeded synthetic data, and the brute-force truth to check them by."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dedup.bench.synth import SyntheticData
from dedup.config import IndexSettings
from dedup.index.gallery import Gallery

SMALL = IndexSettings(nlist=64, pq_m=16, pq_bits=4, train_size=5000, shard_capacity=1_000_000)


def build_gallery(root: Path, data: SyntheticData, settings: IndexSettings = SMALL, codec_from: Gallery | None = None,
                  seed: int = 7) -> Gallery:
    """A gallery of every row of ``data``, enrolment ids ``e<row>``, its codec trained on the
    first ``settings.train_size`` rows (or taken from ``codec_from``)."""
    gal = data.gallery()
    g = Gallery.create(root, data.profile.model_id, data.profile.dim, settings)
    if codec_from is not None:
        assert codec_from.codec is not None, "codec_from has no trained codec"
        g.use_codec(codec_from.codec)
    else:
        g.train(gal.vectors[: settings.train_size], seed=seed)
    g.add(gal.vectors, [f"e{r}" for r in gal.row_ids], model_id=data.profile.model_id)
    return Gallery.open(root, settings)


def exact_above(gallery_vectors: np.ndarray, probes: np.ndarray, threshold: float) -> list[set[int]]:
    """Brute force: the rows at or above the threshold for each probe."""
    scores = probes @ gallery_vectors.T
    return [set(np.flatnonzero(row >= threshold).tolist()) for row in scores]
