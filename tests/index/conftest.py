"""Fixtures for gallery tests: small seeded synthetic data and galleries built from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dedup.config import IndexSettings
from dedup.index.gallery import Gallery
from dedup.synth import SynthSpec, SyntheticData, get_profile

SMALL = IndexSettings(nlist=64, pq_m=16, pq_bits=4, train_size=5000, shard_capacity=1_000_000)


def build_gallery(root: Path, data: SyntheticData, settings: IndexSettings = SMALL, codec_from: Gallery | None = None) -> Gallery:
    """A gallery of every row of ``data``, enrolment ids ``e<row>``."""
    gal = data.gallery()
    g = Gallery.create(root, data.profile.model_id, data.profile.dim, settings)
    if codec_from is not None:
        g.use_codec(codec_from.codec)
    else:
        g.train(gal.vectors[: settings.train_size], seed=7)
    g.add(gal.vectors, [f"e{r}" for r in gal.row_ids], model_id=data.profile.model_id)
    return Gallery.open(root, settings)


@pytest.fixture(scope="module")
def face_data() -> SyntheticData:
    return SyntheticData(SynthSpec(get_profile("face-like", dim=64), gallery_size=12_000, queries=400,
                                   duplicate_rate=0.02, seed=11))


@pytest.fixture(scope="module")
def face_gallery(tmp_path_factory: pytest.TempPathFactory, face_data: SyntheticData) -> Gallery:
    return build_gallery(tmp_path_factory.mktemp("gallery"), face_data)


def exact_above(gallery_vectors: np.ndarray, probes: np.ndarray, threshold: float) -> list[set[int]]:
    """Brute force: the rows at or above the threshold for each probe."""
    scores = probes @ gallery_vectors.T
    return [set(np.flatnonzero(row >= threshold).tolist()) for row in scores]
