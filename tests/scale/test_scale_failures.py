"""A worker process that dies during a search: the full answer (retried elsewhere) or a clear
error, never a partial result. The death is real: the worker process calls ``os._exit`` at the
``cluster.shard_search`` crash point (``DEDUP_CRASH_AT``), like a kill -9 or an OOM kill."""

from __future__ import annotations

from pathlib import Path

import dask
import numpy as np
import pytest

from dedup.cluster import CRASH_POINT, ClusterSearch, connect, search_gallery
from dedup.errors import ClusterError
from dedup.index.gallery import Gallery
from tests.support.scale import Built


def test_worker_killed_mid_search_is_retried_on_another_worker(
        layouts: dict[str, Built], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = layouts["3-shards"]
    want = Gallery.open(built.root).search(built.probes.vectors, built.params)
    marker = tmp_path / "crashed-once"
    monkeypatch.setenv("DEDUP_CRASH_AT", CRASH_POINT)
    monkeypatch.setenv("DEDUP_CRASH_ONCE", str(marker))
    client = connect(None, workers=2, threads_per_worker=1)
    try:
        client.wait_for_workers(2, timeout=60)
        got = search_gallery(client, built.root, built.probes.vectors, built.params,
                             ClusterSearch(probe_block=40, max_retries=2))
    finally:
        client.close()
    assert marker.exists(), "a worker process must really have died during the search"
    for f in ("offsets", "row_ids", "scores", "capped", "searched_depth"):
        np.testing.assert_array_equal(getattr(got, f), getattr(want, f), err_msg=f)


def test_workers_that_keep_dying_give_a_clear_error_not_a_partial_result(
        layouts: dict[str, Built], monkeypatch: pytest.MonkeyPatch) -> None:
    built = layouts["1-shard"]
    monkeypatch.setenv("DEDUP_CRASH_AT", CRASH_POINT)
    monkeypatch.delenv("DEDUP_CRASH_ONCE", raising=False)
    # Dask itself would re-run a task 3 more times after a worker dies; 0 makes each death
    # surface at once, so dedup's own retry loop is what is tested (and the test is quick).
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        client = connect(None, workers=2, threads_per_worker=1)
        try:
            client.wait_for_workers(2, timeout=60)
            with pytest.raises(ClusterError, match=r"failed 2 times because Dask workers were lost.*no result was returned"):
                search_gallery(client, built.root, built.probes.vectors[:30], built.params,
                               ClusterSearch(probe_block=30, max_retries=1))
        finally:
            client.close()
