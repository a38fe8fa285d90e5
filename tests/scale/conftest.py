"""Fixtures for the scale-out tests: small seeded galleries in several shard layouts, and one
shared two-worker LocalCluster (real worker processes on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dedup.bench.synth import SyntheticData, SynthSpec, get_profile
from tests.support.scale import GALLERY_SIZE, QUERIES, SEED, Built, build_layout


@pytest.fixture(scope="session")
def synth() -> SyntheticData:
    return SyntheticData(SynthSpec(get_profile("face-like"), gallery_size=GALLERY_SIZE, queries=QUERIES, seed=SEED))


@pytest.fixture(scope="session")
def layouts(tmp_path_factory: pytest.TempPathFactory, synth: SyntheticData) -> dict[str, Built]:
    """The same seeded data in three shard layouts: 1 shard, 3 shards, 4 shards with rows removed."""
    base = tmp_path_factory.mktemp("galleries")
    return {
        "1-shard": build_layout(base / "one", synth, GALLERY_SIZE),
        "3-shards": build_layout(base / "three", synth, 2500),
        "4-shards-removed": build_layout(base / "four", synth, 1500, remove=40),
    }


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    """A two-worker LocalCluster for the module's tests."""
    from dedup.cluster import connect

    c = connect(None, workers=2, threads_per_worker=1)
    c.wait_for_workers(2, timeout=60)
    try:
        yield c
    finally:
        c.close()
