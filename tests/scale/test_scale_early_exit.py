"""The threshold-aware search (early exit) on Dask workers gives the same rows as in one process."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dedup.cluster import ClusterSearch, search_gallery
from dedup.index.gallery import Gallery
from tests.support.scale import Built


@pytest.mark.parametrize("layout,block", [("1-shard", 50), ("3-shards", 64), ("4-shards-removed", 4096)])
def test_distributed_early_exit_equals_local(client: object, layouts: dict[str, Built], layout: str,
                                             block: int) -> None:
    built = layouts[layout]
    gallery = Gallery.open(built.root)
    params = gallery.with_measured(dataclasses.replace(built.params, early_exit=True))
    assert params.early_exit and params.bounds is not None
    assert params.bounds.at(params.threshold) is not None  # the early exit is what runs here
    local = gallery.search(built.probes.vectors, params)
    assert local.counts().sum() > 0
    got = search_gallery(client, built.root, built.probes.vectors, params, ClusterSearch(probe_block=block))
    for f in ("offsets", "row_ids", "scores", "capped", "searched_depth"):
        np.testing.assert_array_equal(getattr(got, f), getattr(local, f), err_msg=f)
    # And nothing the fixed search finds is missing from it.
    fixed = gallery.search(built.probes.vectors, dataclasses.replace(params, early_exit=False))
    a = set(zip(got.probe_index().tolist(), got.row_ids.tolist()))
    b = set(zip(fixed.probe_index().tolist(), fixed.row_ids.tolist()))
    capped = fixed.capped & got.capped
    assert {(p, r) for p, r in b - a if not capped[p]} == set()
