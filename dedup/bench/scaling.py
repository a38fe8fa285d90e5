"""Scaling measurements for ``dedup bench``: the same distributed search on 1, 2, ... workers
(``bench_scaling``), and an exact torch search row (``torch_exact_baseline``).

Benchmark harnesses, not the runtime: they drive ``dedup.cluster`` and time it.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dedup.cluster import (
    DEFAULT_PROBE_BLOCK,
    ClusterSearch,
    connect,
    list_workers,
    plan_for_device,
    preload,
    search_one_shard,
    search_shards,
)
from dedup.errors import ClusterError, InvalidParameter
from dedup.index.params import SearchParams
from dedup.index.results import Candidates, merge


@dataclass
class ScalingPoint:
    """One row of a scaling run: the search of every probe on ``workers`` workers."""

    workers: int
    threads_per_worker: int
    probes: int
    shards: int
    seconds: float
    load_seconds: float
    candidates: Candidates = field(repr=False)

    @property
    def probes_per_s(self) -> float:
        return self.probes / self.seconds if self.seconds > 0 else float("inf")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures (without the candidates)."""
        return {"workers": self.workers, "threads_per_worker": self.threads_per_worker, "probes": self.probes,
                "shards": self.shards, "seconds": round(self.seconds, 4), "load_seconds": round(self.load_seconds, 4),
                "probes_per_s": round(self.probes_per_s, 1)}


def scaling_run(gallery_root: Path | str, probes: np.ndarray, params: SearchParams, worker_counts: Sequence[int],
                scheduler: str | None = None, threads_per_worker: int = 1,
                plan: ClusterSearch | None = None, repeats: int = 1) -> list[ScalingPoint]:
    """Search the same probes on 1, 2, ... workers of one cluster; probes/s side by side.

    A LocalCluster of ``max(worker_counts)`` workers is started unless ``scheduler`` is given
    (then the first ``w`` workers by name are used for each count). Shards are loaded on
    their holders before the clock starts; each count is timed ``repeats`` times, best kept.
    """
    from dedup.index.gallery import Gallery
    from dedup.index.probes import check_probes

    plan = plan if plan is not None else ClusterSearch()
    counts = sorted(set(int(w) for w in worker_counts))
    if not counts or counts[0] < 1:
        raise InvalidParameter("worker counts must be >= 1")
    if repeats < 1:
        raise InvalidParameter("repeats must be >= 1")
    gallery = Gallery.open(Path(gallery_root))
    probes = check_probes(probes, gallery.dim)
    shards = gallery.shard_paths()
    out: list[ScalingPoint] = []
    client = connect(scheduler, workers=counts[-1] if not scheduler else 0, threads_per_worker=threads_per_worker)
    try:
        try:
            client.wait_for_workers(counts[-1], timeout=120 if not scheduler else plan.worker_wait_s)
        except TimeoutError:
            pass  # reported below with the numbers
        available = [w.name for w in list_workers(client)]
        if counts[-1] > len(available):
            raise ClusterError(f"{counts[-1]} workers asked for, the cluster at {scheduler} has {len(available)}")
        for w in counts:
            sub = ClusterSearch(probe_block=plan.probe_block, max_retries=plan.max_retries, method=plan.method,
                                device=plan.device, workers=tuple(available[:w]), worker_wait_s=plan.worker_wait_s)
            t0 = time.perf_counter()
            preload(client, shards, sub)
            load_s = time.perf_counter() - t0
            best, result = math.inf, None
            for _ in range(repeats):
                t0 = time.perf_counter()
                result = search_shards(client, shards, probes, params, sub)
                best = min(best, time.perf_counter() - t0)
            assert result is not None
            threads = threads_per_worker if not scheduler else \
                min(x.nthreads for x in list_workers(client) if x.name in sub.workers)  # type: ignore[operator]
            out.append(ScalingPoint(w, threads, probes.shape[0], len(shards), best, load_s, result))
    finally:
        client.close()
    return out


def bench_scaling(gallery_root: Path | str, probes: np.ndarray, params: SearchParams, max_workers: int,
                  scheduler: str | None, score: Any, device: str = "cpu", threads_per_worker: int = 1,
                  probe_block: int = DEFAULT_PROBE_BLOCK, repeats: int = 1) -> dict[str, Any]:
    """``dedup bench --workers W``: the same search on 1..W workers, probes/s side by side.

    ``score(candidates) -> dict`` adds the bench's accuracy figures (duplicate_recall, ...)
    to each row, so equal recall across worker counts is visible in the same report.
    """
    from dedup.machine import usable_cores

    if max_workers < 1:
        raise InvalidParameter(f"--workers must be >= 1, got {max_workers}")
    plan = plan_for_device(device, probe_block)
    load_before = os.getloadavg()[0]
    points = scaling_run(gallery_root, probes, params, list(range(1, max_workers + 1)), scheduler=scheduler,
                         threads_per_worker=threads_per_worker, plan=plan, repeats=repeats)
    rows = [{**p.as_dict(), **score(p.candidates)} for p in points]
    base = rows[0]["probes_per_s"]
    for r in rows:
        r["speedup_vs_1_worker"] = round(r["probes_per_s"] / base, 3) if base else None
    return {"scheduler": scheduler or "LocalCluster (127.0.0.1)", "device": device, "method": plan.method,
            "probe_block": probe_block, "cores": usable_cores(), "points": rows,
            # Other work on the machine shows here (a shared 2-core box gains little from 2 workers).
            "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}}


def torch_exact_baseline(gallery_root: Path | str, probes: np.ndarray, params: SearchParams, device: str,
                         score: Any) -> dict[str, Any]:
    """Exact torch threshold search over the gallery's shards on ``device`` (bench comparison row)."""
    from dedup.index.exact import resolve_device
    from dedup.index.gallery import Gallery

    gallery = Gallery.open(Path(gallery_root))
    dev = resolve_device(device).type
    shards = gallery.shards()
    cache: dict = {}
    probes = np.ascontiguousarray(probes, dtype=np.float32)
    # Load (and, on a GPU, copy the vectors to the device) before the clock starts.
    for shard in shards:
        search_one_shard(shard, probes[:1], params, method="exact", device=dev, exact_cache=cache)
    t0 = time.perf_counter()
    parts = [search_one_shard(s, probes, params, method="exact", device=dev, exact_cache=cache) for s in shards]
    found = merge(parts, params.max_candidates) if parts else Candidates.empty(probes.shape[0])
    seconds = time.perf_counter() - t0
    dtype = shards[0].meta.exact_dtype if shards else "float16"
    out = {"device": dev, "probes": probes.shape[0], "search_s": seconds,
           "probes_per_s": probes.shape[0] / seconds if seconds > 0 else float("inf"),
           "ram_bytes_per_template": float(gallery.dim * np.dtype(dtype).itemsize + 8)}
    out.update(score(found))
    return out
