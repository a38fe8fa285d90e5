"""Fixtures for gallery tests: small seeded synthetic data and a gallery built from it."""

from __future__ import annotations

import pytest

from dedup.bench.synth import SyntheticData, SynthSpec, get_profile
from dedup.index.gallery import Gallery
from tests.support.galleries import build_gallery


@pytest.fixture(scope="module")
def face_data() -> SyntheticData:
    return SyntheticData(SynthSpec(get_profile("face-like", dim=64), gallery_size=12_000, queries=400,
                                   duplicate_rate=0.02, seed=11))


@pytest.fixture(scope="module")
def face_gallery(tmp_path_factory: pytest.TempPathFactory, face_data: SyntheticData) -> Gallery:
    return build_gallery(tmp_path_factory.mktemp("gallery"), face_data)
