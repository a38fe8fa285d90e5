"""Distributed search on a real Dask LocalCluster equals the single-process search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dedup.cluster import ClusterSearch, connect, list_workers, place_shards, preload, search_gallery, search_shards, worker_loads
from dedup.config import IndexSettings
from dedup.errors import ClusterError, GalleryError
from dedup.index.exact import exact_search
from dedup.index.gallery import Gallery
from dedup.index.results import Candidates
from tests.support.scale import Built


def assert_identical(a: Candidates, b: Candidates) -> None:
    for f in ("offsets", "row_ids", "scores", "capped", "searched_depth"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


@pytest.mark.parametrize("layout,workers,block", [
    ("1-shard", 2, 64),
    ("3-shards", 1, 1000),
    ("3-shards", 2, 37),
    ("4-shards-removed", 2, 50),
])
def test_distributed_equals_local(client: object, layouts: dict[str, Built], layout: str, workers: int,
                                  block: int) -> None:
    built = layouts[layout]
    local = Gallery.open(built.root).search(built.probes.vectors, built.params)
    assert local.counts().sum() > 0 and local.capped.any()  # the data exercises candidates and caps
    names = tuple(w.name for w in list_workers(client))[:workers]
    plan = ClusterSearch(probe_block=block, workers=names)
    got = search_gallery(client, built.root, built.probes.vectors, built.params, plan)
    assert_identical(got, local)


def test_exact_method_on_workers_equals_exact_search(client: object, layouts: dict[str, Built]) -> None:
    built = layouts["4-shards-removed"]
    plan = ClusterSearch(probe_block=70, method="exact", device="cpu")
    got = search_gallery(client, built.root, built.probes.vectors, built.params, plan)
    g = built.gallery
    removed = np.flatnonzero(np.isin(g.row_ids, built.removed))
    stored = np.dtype(IndexSettings().exact_dtype)  # the shards' exact vectors, as the workers read them
    want = exact_search(g.vectors.astype(stored), g.row_ids, built.probes.vectors, built.params.threshold,
                        built.params.max_candidates, device="cpu", removed=removed)
    for f in ("offsets", "row_ids", "capped"):
        np.testing.assert_array_equal(getattr(got, f), getattr(want, f), err_msg=f)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-6)
    assert not np.isin(got.row_ids, built.removed).any()


def test_shards_load_once_on_their_holders(client: object, layouts: dict[str, Built]) -> None:
    built = layouts["3-shards"]
    paths = Gallery.open(built.root).shard_paths()
    before = worker_loads(client)  # other tests on this cluster may have loaded shards already
    placement = preload(client, paths)
    after_preload = worker_loads(client)
    for _ in range(2):
        search_shards(client, paths, built.probes.vectors[:40], built.params, ClusterSearch(probe_block=16))
    after_search = worker_loads(client)
    assert after_search == after_preload, "searching must not load shards again (nor ship them)"
    for path in paths:
        key = str(path.resolve())
        holder = placement[path.name]
        assert key in after_preload[holder]
        assert after_preload[holder].count(key) == 1
        new_elsewhere = [w for w in after_preload if w != holder
                         and after_preload[w].count(key) > before.get(w, []).count(key)]
        assert not new_elsewhere, f"{path.name} also loaded on {new_elsewhere}"
    assert placement == place_shards([p.name for p in paths], [w.name for w in list_workers(client)])


def test_missing_shard_is_a_gallery_error_not_a_retry(client: object, tmp_path: Path,
                                                      layouts: dict[str, Built]) -> None:
    built = layouts["1-shard"]
    with pytest.raises(GalleryError, match="missing"):
        search_shards(client, [tmp_path / "shard-gone"], built.probes.vectors[:5], built.params)


def test_cuda_search_needs_gpu_workers(client: object, layouts: dict[str, Built]) -> None:
    """`--device cuda`: without GPU workers a clear error; with them, the exact answer."""
    built = layouts["1-shard"]
    probes = built.probes.vectors[:5]
    if any(w.gpus > 0 for w in list_workers(client)):
        got = search_gallery(client, built.root, probes, built.params, ClusterSearch(device="cuda"))
        assert got.n_probes == 5 and (got.scores >= built.params.threshold - 1e-5).all()
    else:
        with pytest.raises(ClusterError, match="--resources GPU=1"):
            search_gallery(client, built.root, probes, built.params, ClusterSearch(device="cuda"))


def test_unreachable_scheduler_is_a_clear_error() -> None:
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        connect("tcp://127.0.0.1:9", timeout=2)


def test_search_one_shard_methods_on_cpu(layouts: dict[str, Built]) -> None:
    from dedup.cluster import search_one_shard
    from dedup.errors import InsufficientResources
    from dedup.index.exact import cuda_available

    built = layouts["3-shards"]
    shard = Gallery.open(built.root).shards()[0]
    probes = built.probes.vectors[:50]
    ivf = shard.search(probes, built.params)
    assert_identical(search_one_shard(shard, probes, built.params, method="ivfpq", device="cpu"), ivf)
    exact = search_one_shard(shard, probes, built.params, method="exact", device="cpu")
    # Exact search finds every row IVF-PQ found (it can only find more).
    for i in range(probes.shape[0]):
        if not ivf.capped[i] and not exact.capped[i]:
            assert set(ivf.of(i)[0].tolist()) <= set(exact.of(i)[0].tolist())
    if not cuda_available():
        assert_identical(search_one_shard(shard, probes, built.params, method="auto", device="auto"), ivf)
        with pytest.raises(InsufficientResources):
            search_one_shard(shard, probes, built.params, method="ivfpq", device="cuda")
