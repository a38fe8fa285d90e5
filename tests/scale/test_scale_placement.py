"""Placement of shards on workers and cutting of probes into blocks: pure functions, properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dedup.cluster import place_shards, probe_blocks
from dedup.errors import ClusterError, InvalidParameter

names = st.text(alphabet="abcdef0123456789-", min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(shards=st.lists(names, max_size=40, unique=True), workers=st.lists(names, min_size=1, max_size=12, unique=True),
       seed=st.randoms(use_true_random=False))
def test_every_shard_placed_with_bounded_load(shards: list[str], workers: list[str], seed: object) -> None:
    placement = place_shards(shards, workers)
    assert set(placement) == set(shards)
    assert set(placement.values()) <= set(workers)
    cap = math.ceil(len(shards) / len(workers)) if shards else 0
    loads = {w: list(placement.values()).count(w) for w in workers}
    assert max(loads.values()) <= cap
    # Deterministic and independent of the order the lists come in.
    shuffled_s, shuffled_w = list(shards), list(workers)
    seed.shuffle(shuffled_s)  # type: ignore[attr-defined]
    seed.shuffle(shuffled_w)  # type: ignore[attr-defined]
    assert place_shards(shuffled_s, shuffled_w) == placement


@settings(max_examples=200, deadline=None)
@given(shards=st.lists(names, min_size=1, max_size=40, unique=True),
       workers=st.lists(names, min_size=2, max_size=12, unique=True), data=st.data())
def test_a_lost_worker_hands_over_its_shards(shards: list[str], workers: list[str], data: st.DataObject) -> None:
    lost = data.draw(st.sampled_from(workers))
    after = place_shards(shards, [w for w in workers if w != lost])
    assert lost not in after.values()
    assert set(after) == set(shards)


def test_placement_mostly_stays_when_a_worker_leaves() -> None:
    shards = [f"shard-{i:03d}" for i in range(64)]
    workers = [str(i) for i in range(8)]
    before = place_shards(shards, workers)
    after = place_shards(shards, workers[:-1])
    kept = sum(before[s] == after[s] for s in shards if before[s] != workers[-1])
    moved_from_lost = sum(before[s] == workers[-1] for s in shards)
    # Most shards that were not on the lost worker stay where they are (caches stay warm).
    assert kept >= 0.6 * (len(shards) - moved_from_lost)


def test_no_workers_is_a_clear_error() -> None:
    with pytest.raises(ClusterError, match="no Dask workers"):
        place_shards(["a"], [])


@given(n=st.integers(0, 10_000), block=st.integers(1, 5000))
def test_probe_blocks_cover_without_gaps(n: int, block: int) -> None:
    blocks = probe_blocks(n, block)
    assert all(0 < hi - lo < block + (block + 1) // 2 for lo, hi in blocks)
    # No tail short enough to fall off BLAS speed: only a lone block may be under half a block.
    assert len(blocks) == 1 or all(hi - lo >= block // 2 for lo, hi in blocks)
    assert [lo for lo, _ in blocks] == ([0] + [hi for _, hi in blocks[:-1]] if blocks else [])
    assert (blocks[-1][1] if blocks else 0) == n


def test_probe_block_must_be_positive() -> None:
    with pytest.raises(InvalidParameter):
        probe_blocks(10, 0)
