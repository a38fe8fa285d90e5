"""Distributed search on Dask: shards pinned to workers, probes fanned out, results merged.

- ``connect`` starts a LocalCluster (worker processes on 127.0.0.1) or joins an existing
  scheduler (``--scheduler tcp://host:8786``, workers started with ``dask worker``).
- Placement (``place_shards``) is a pure function: rendezvous hashing of the shard's name
  over the workers' names, with a bounded load (no worker holds more than
  ``ceil(shards / workers)``). Worker names survive a nanny restart, so a restarted worker
  takes its shards back; when a worker leaves, its shards move to the next-ranked workers
  and the others mostly stay.
- Each worker process keeps the shards it has loaded (``Shard.load``: PQ codes in RAM, exact
  vectors memory-mapped) in a process-wide cache keyed by the shard's directory and name;
  shard directories never change once written, so a new gallery generation means new keys.
  Only probes travel per search, never the shards.
- Probes are cut into blocks and scattered to every worker (wrapped so that no log line ever
  shows their values: templates are biometric data); each (block, shard) is one task on the
  shard's holder; per-shard ``Candidates`` are merged with ``dedup.index.results.merge``,
  exactly as ``Gallery.search`` does, so the answer is identical to a single process.
- A worker that dies mid-search: Dask re-runs its tasks on another worker (restrictions are
  loose), which loads the shard from the store; if tasks still fail with a lost worker, this
  module resubmits them up to ``max_retries`` times, then raises ``ClusterError``. A search
  returns all of its answer or raises; never part of it.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dedup.errors import ClusterError, DedupError, InsufficientResources, InvalidParameter
from dedup.faults import crash_point
from dedup.index.params import SearchParams
from dedup.index.results import Candidates, concat, merge

DEFAULT_PROBE_BLOCK = 4096
# Fault injection for tests (``dedup.faults``): a worker process running a shard search dies
# when ``DEDUP_CRASH_AT`` names this point (with ``DEDUP_CRASH_ONCE``, only the first one).
CRASH_POINT = "cluster.shard_search"


# --------------------------------------------------------------------------- connecting


def connect(scheduler: str | None = None, workers: int = 0, threads_per_worker: int = 1,
            timeout: float = 30.0, memory_limit: str | int = "auto") -> Any:
    """A Dask ``Client``: joins ``scheduler`` when given, else starts a LocalCluster.

    The LocalCluster runs ``workers`` worker processes (0: one per core) of
    ``threads_per_worker`` threads on 127.0.0.1, without a dashboard; closing the client
    closes it. Where torch sees a GPU, local workers advertise the resource ``GPU=1`` (on a
    real cluster start GPU workers with ``dask worker ADDR --resources GPU=1``).
    Unreachable schedulers raise ``ClusterError`` with the address and the reason.
    """
    import logging

    from distributed import Client

    if workers < 0 or threads_per_worker < 1:
        raise InvalidParameter("workers must be >= 0 and threads per worker >= 1")
    if scheduler:
        try:
            return Client(scheduler, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {scheduler} ({exc.__class__.__name__}: {exc}); "
                               "start one with `dask scheduler` and check the address") from None
    n = workers or (os.cpu_count() or 1)
    kwargs: dict[str, Any] = {}
    from dedup.index.exact import cuda_available

    if cuda_available():
        kwargs["resources"] = {"GPU": 1}
    return Client(n_workers=n, threads_per_worker=threads_per_worker, processes=True, host="127.0.0.1",
                  dashboard_address=None, silence_logs=logging.ERROR, memory_limit=memory_limit,
                  set_as_default=False, **kwargs)


@dataclass(frozen=True)
class WorkerInfo:
    """A worker as the scheduler sees it."""

    address: str
    name: str
    nthreads: int
    gpus: float


def list_workers(client: Any) -> list[WorkerInfo]:
    """The scheduler's current workers, sorted by name."""
    info = client.scheduler_info(n_workers=-1)["workers"]
    out = [WorkerInfo(address=addr, name=str(w.get("name", addr)), nthreads=int(w.get("nthreads", 1)),
                      gpus=float((w.get("resources") or {}).get("GPU", 0)))
           for addr, w in info.items()]
    return sorted(out, key=lambda w: (w.name, w.address))


# --------------------------------------------------------------------------- placement


def _weight(shard: str, worker: str) -> int:
    digest = hashlib.blake2b(f"{shard}\x00{worker}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def place_shards(shards: Sequence[str], workers: Sequence[str]) -> dict[str, str]:
    """Shard name -> worker name: rendezvous hashing with bounded load.

    Deterministic (independent of the order of either list), every shard placed, no
    worker holding more than ``ceil(len(shards) / len(workers))``. A worker that leaves
    hands its shards to the workers ranked next for each of them.
    """
    workers = sorted(set(workers))
    if not workers:
        raise ClusterError("no Dask workers are connected to place the gallery's shards on")
    shards = sorted(set(shards))
    cap = math.ceil(len(shards) / len(workers)) if shards else 0
    load = dict.fromkeys(workers, 0)
    placement: dict[str, str] = {}
    # Place shards in order of how strongly they prefer their top worker, so the bound bites
    # the weakest preferences first (keeps placements stable as the cluster changes).
    ranked = {s: sorted(workers, key=lambda w: (-_weight(s, w), w)) for s in shards}
    for s in shards:
        for w in ranked[s]:
            if load[w] < cap:
                placement[s] = w
                load[w] += 1
                break
    return placement


def probe_blocks(n_probes: int, block: int) -> list[tuple[int, int]]:
    """Consecutive ``(start, stop)`` blocks of about ``block`` probes covering ``0..n_probes``;
    a short tail is folded into the block before it (``dedup.index.search.even_blocks``), so no
    worker gets a block small enough to fall off BLAS speed in the coarse step."""
    from dedup.index.search import even_blocks

    if block < 1:
        raise InvalidParameter(f"probe block must be >= 1, got {block}")
    return even_blocks(n_probes, block)


# --------------------------------------------------------------------------- worker side


class ProbeBlock:
    """Probe vectors in transit to workers. Its repr never shows the values (biometric data)."""

    __slots__ = ("vectors",)

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors

    def __repr__(self) -> str:
        return f"ProbeBlock(n={self.vectors.shape[0]}, dim={self.vectors.shape[1]})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (ProbeBlock, (self.vectors,))


# Process-wide caches on each worker: (shard dir, shard name) -> Shard / ExactIndex by device.
_SHARDS: dict[tuple[str, str], Any] = {}
_EXACT: dict[tuple[str, str, str], Any] = {}
_LOADS: list[str] = []  # shard dirs loaded by this process, in order (diagnostics and tests)


def _shard_key(path: str) -> tuple[str, str]:
    return (str(Path(path).resolve()), Path(path).name)


def cached_shard(path: str) -> Any:
    """The shard at ``path``, loaded once per process (memory-mapped)."""
    from dedup.index.shard import Shard

    key = _shard_key(path)
    shard = _SHARDS.get(key)
    if shard is None:
        # Drop shards whose directories were garbage-collected (an old generation).
        for old in [k for k in _SHARDS if not Path(k[0]).exists()]:
            _SHARDS.pop(old, None)
            for ek in [e for e in _EXACT if e[:2] == old]:
                _EXACT.pop(ek, None)
        shard = Shard.load(Path(path), mmap=True)
        _SHARDS[key] = shard
        _LOADS.append(key[0])
    return shard


def search_one_shard(shard: Any, probes: np.ndarray, params: SearchParams, method: str = "auto",
                     device: str = "auto", exact_cache: dict | None = None) -> Candidates:
    """Search one loaded shard with the chosen method and device.

    - ``ivfpq`` on ``cpu``: ``Shard.search`` (IVF-PQ proposals, exact re-rank);
    - ``ivfpq`` on ``cuda``: the same with the shard's index cloned to a faiss GPU index
      (faiss-gpu only; a clear error otherwise);
    - ``exact``: torch threshold search over the shard's exact vectors (no recall lost);
    - ``auto``: ``exact`` on a GPU when one is present and the shard fits, else ``ivfpq``
      on the CPU.
    """
    from dedup.index.exact import ExactIndex, choose_device, faiss_index_to_gpu, resolve_device

    if method not in ("auto", "ivfpq", "exact"):
        raise InvalidParameter(f"search method must be auto, ivfpq or exact, got {method!r}")
    if method == "auto":
        dev = choose_device(device, shard.meta.count, shard.meta.dim, shard.meta.exact_dtype)
        method = "exact" if dev == "cuda" else "ivfpq"
        device = dev
    if method == "exact":
        dev = resolve_device(device).type
        key = (str(shard.path), shard.meta.name, dev)
        cache = exact_cache if exact_cache is not None else {}
        index = cache.get(key)
        if index is None:
            index = ExactIndex(shard.vectors, shard.row_ids, device=dev, removed=shard.removed_positions)
            cache[key] = index
        return index.search(probes, params.threshold, params.max_candidates)
    if device == "cpu" or resolve_device(device).type == "cpu":
        return shard.search(probes, params)
    from dedup.index.shard import Shard

    cache = exact_cache if exact_cache is not None else {}
    key = (str(shard.path), shard.meta.name, "faiss-gpu")
    on_gpu = cache.get(key)
    if on_gpu is None:
        try:
            gpu_index, where = faiss_index_to_gpu(shard.index, device)
        except RuntimeError as exc:  # e.g. 4-bit fast-scan PQ has no faiss GPU version
            if device == "auto":
                gpu_index, where = shard.index, "cpu"
            else:
                raise InsufficientResources(f"shard {shard.meta.name}: faiss cannot move this index to the GPU "
                                            f"({str(exc).splitlines()[0]}); use 8-bit PQ, --device cpu, or exact search") from None
        on_gpu = shard if where == "cpu" else Shard(shard.path, shard.meta, gpu_index, shard.vectors, shard.row_ids,
                                                     shard.removed_positions)
        cache[key] = on_gpu
    return on_gpu.search(probes, params)


def _load_task(path: str) -> str:
    """Worker task: make sure the shard is loaded here; returns the worker's name."""
    from distributed import get_worker

    cached_shard(path)
    return str(get_worker().name)


def _search_task(path: str, block: ProbeBlock, params: SearchParams, method: str, device: str) -> Candidates:
    """Worker task: search one probe block against one shard held by this worker."""
    crash_point(CRASH_POINT)
    shard = cached_shard(path)
    return search_one_shard(shard, block.vectors, params, method=method, device=device, exact_cache=_EXACT)


def _loads_task() -> list[str]:
    return list(_LOADS)


# --------------------------------------------------------------------------- client side


@dataclass(frozen=True)
class ClusterSearch:
    """How a distributed search runs.

    ``probe_block``: probes per task; ``max_retries``: resubmissions of a (block, shard) task
    after its worker was lost; ``method``/``device``: see ``search_one_shard``;
    ``workers``: names of the workers to use (``None``: all); ``worker_wait_s``: how long to
    wait for a worker to come back when none is left.
    """

    probe_block: int = DEFAULT_PROBE_BLOCK
    max_retries: int = 2
    method: str = "ivfpq"
    device: str = "cpu"
    workers: tuple[str, ...] | None = None
    worker_wait_s: float = 60.0

    def __post_init__(self) -> None:
        if self.probe_block < 1:
            raise InvalidParameter(f"probe block must be >= 1, got {self.probe_block}")
        if self.max_retries < 0:
            raise InvalidParameter(f"max_retries must be >= 0, got {self.max_retries}")
        if self.method not in ("auto", "ivfpq", "exact"):
            raise InvalidParameter(f"search method must be auto, ivfpq or exact, got {self.method!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InvalidParameter(f"device must be auto, cpu or cuda, got {self.device!r}")


def _eligible(client: Any, plan: ClusterSearch) -> list[WorkerInfo]:
    """Workers the plan may use; waits (bounded) when none is connected."""
    deadline = time.monotonic() + plan.worker_wait_s
    while True:
        workers = list_workers(client)
        if plan.workers is not None:
            workers = [w for w in workers if w.name in plan.workers]
        if plan.device == "cuda":
            gpu = [w for w in workers if w.gpus > 0]
            if workers and not gpu:
                raise ClusterError("--device cuda: no Dask worker advertises a GPU; start GPU workers with "
                                   "`dask worker ADDRESS --resources GPU=1`")
            workers = gpu
        elif plan.device == "auto" and any(w.gpus > 0 for w in workers):
            workers = [w for w in workers if w.gpus > 0]
        if workers:
            return workers
        if time.monotonic() > deadline:
            raise ClusterError(f"no Dask worker available after waiting {plan.worker_wait_s:.0f} s"
                               + (f" (asked for workers {', '.join(plan.workers)})" if plan.workers else ""))
        time.sleep(0.2)


def _retryable() -> tuple[type[BaseException], ...]:
    import asyncio
    import concurrent.futures

    from distributed import KilledWorker
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError

    return (KilledWorker, CommClosedError, FutureCancelledError, concurrent.futures.CancelledError,
            asyncio.CancelledError, OSError, TimeoutError)


def preload(client: Any, shard_paths: Sequence[Path | str], plan: ClusterSearch = ClusterSearch()) -> dict[str, str]:
    """Load every shard on the worker placed to hold it (before timing a search).

    Returns the placement (shard name -> worker name).
    """
    workers = _eligible(client, plan)
    by_name = {w.name: w for w in workers}
    paths = {Path(p).name: str(p) for p in shard_paths}
    placement = place_shards(list(paths), list(by_name))
    futures = [client.submit(_load_task, paths[s], workers=[by_name[w].address], allow_other_workers=True,
                             pure=False, key=f"dedup-load-{s}-{uuid.uuid4().hex[:8]}")
               for s, w in placement.items()]
    client.gather(futures)
    return placement


def search_shards(client: Any, shard_paths: Sequence[Path | str], probes: np.ndarray, params: SearchParams,
                  plan: ClusterSearch = ClusterSearch()) -> Candidates:
    """Threshold search of ``probes`` against shards held by Dask workers, merged.

    The same answer as ``Gallery.search`` in one process (same shards, same params). Raises
    ``ClusterError`` when a (block, shard) task keeps failing because workers are lost;
    domain errors from the workers (``DedupError``, e.g. a missing shard) pass through.
    """
    from distributed import as_completed

    probes = np.ascontiguousarray(probes, dtype=np.float32)
    if probes.ndim != 2:
        raise InvalidParameter(f"probes must be a 2-d array, got shape {probes.shape}")
    n = probes.shape[0]
    names = [Path(p).name for p in shard_paths]
    paths = {Path(p).name: str(p) for p in shard_paths}
    if len(paths) != len(names):
        raise InvalidParameter("two shards share a directory name")
    if n == 0 or not names:
        return Candidates.empty(n)
    blocks = probe_blocks(n, plan.probe_block)
    run = uuid.uuid4().hex[:10]
    state = _SearchState(client, plan, params, paths, probes, blocks, run)
    results: dict[tuple[int, str], Candidates] = {}
    retryable = _retryable()
    try:
        pending = as_completed(state.submit_all(), loop=client.loop)
        for fut in pending:
            task = state.futures.pop(fut)
            try:
                results[task] = fut.result()
            except DedupError:
                raise
            except retryable as exc:
                error: BaseException | None = exc
                while error is not None:
                    state.attempts[task] += 1
                    if state.attempts[task] > plan.max_retries:
                        b, s = task
                        raise ClusterError(
                            f"the search of shard {s} (probes {blocks[b][0]}..{blocks[b][1] - 1}) failed "
                            f"{state.attempts[task]} times because Dask workers were lost "
                            f"({error.__class__.__name__}); no result was returned. Check the workers' logs "
                            f"and memory (a worker killed for memory is a common cause), then run the search again"
                        ) from None
                    try:
                        pending.add(state.resubmit(task))
                        error = None
                    except retryable as again:  # the scatter itself met a dying worker
                        error = again
    finally:
        state.cancel()
    merged = [merge([results[(b, s)] for s in names], params.max_candidates) for b in range(len(blocks))]
    out = concat(merged)
    if out.n_probes != n:  # defensive: every block must be present
        raise ClusterError(f"internal: merged {out.n_probes} probes of {n}")
    return out


@dataclass
class _SearchState:
    client: Any
    plan: ClusterSearch
    params: SearchParams
    paths: dict[str, str]
    probes: np.ndarray
    blocks: list[tuple[int, int]]
    run: str
    futures: dict[Any, tuple[int, str]] = field(default_factory=dict)
    attempts: dict[tuple[int, str], int] = field(default_factory=dict)
    scattered: dict[int, Any] = field(default_factory=dict)

    def _placement(self) -> tuple[dict[str, str], dict[str, WorkerInfo]]:
        workers = _eligible(self.client, self.plan)
        by_name = {w.name: w for w in workers}
        return place_shards(list(self.paths), list(by_name)), by_name

    def _block(self, b: int, fresh: bool = False) -> Any:
        if fresh or b not in self.scattered:
            lo, hi = self.blocks[b]
            # Not broadcast: a replicate racing a worker's death can wedge the scheduler. Dask moves
            # the block to the workers that need it; if its only copy is lost, the tasks fail
            # with "lost dependencies" and are resubmitted with a fresh copy.
            self.scattered[b] = self.client.scatter(ProbeBlock(self.probes[lo:hi]), hash=False)
        return self.scattered[b]

    def _submit(self, task: tuple[int, str], placement: dict[str, str], by_name: dict[str, WorkerInfo],
                fresh_block: bool = False) -> Any:
        b, s = task
        holder = by_name[placement[s]]
        resources = {"GPU": 1} if holder.gpus > 0 and self.plan.device in ("cuda", "auto") else None
        fut = self.client.submit(
            _search_task, self.paths[s], self._block(b, fresh_block), self.params, self.plan.method,
            self.plan.device, workers=[holder.address], allow_other_workers=True, resources=resources,
            pure=False, key=f"dedup-search-{self.run}-b{b}-{s}-a{self.attempts.get(task, 0)}")
        self.futures[fut] = task
        return fut

    def submit_all(self) -> list[Any]:
        placement, by_name = self._placement()
        out = []
        for b in range(len(self.blocks)):
            for s in self.paths:
                self.attempts[(b, s)] = 0
                out.append(self._submit((b, s), placement, by_name))
        return out

    def resubmit(self, task: tuple[int, str]) -> Any:
        placement, by_name = self._placement()
        return self._submit(task, placement, by_name, fresh_block=True)

    def cancel(self) -> None:
        if self.futures:
            self.client.cancel(list(self.futures))
        self.futures.clear()
        self.scattered.clear()


def search_gallery(client: Any, root: Path | str, probes: np.ndarray, params: SearchParams,
                   plan: ClusterSearch = ClusterSearch()) -> Candidates:
    """``Gallery.open(root).search(probes, params)``, on the cluster's workers."""
    from dedup.index.gallery import Gallery
    from dedup.index.probes import check_probes

    gallery = Gallery.open(Path(root))
    probes = check_probes(probes, gallery.dim)
    # The codec's measured bounds travel with the parameters, so workers search as Gallery.search does.
    return search_shards(client, gallery.shard_paths(), probes, gallery.with_measured(params), plan)


def worker_loads(client: Any) -> dict[str, list[str]]:
    """Worker name -> shard directories that worker's process has loaded (oldest first)."""
    by_addr = {w.address: w.name for w in list_workers(client)}
    return {by_addr.get(addr, addr): loads for addr, loads in client.run(_loads_task).items()}


# --------------------------------------------------------------------------- devices


def plan_for_device(device: str, probe_block: int = DEFAULT_PROBE_BLOCK) -> ClusterSearch:
    """The distributed search for a ``--device`` value: ``cpu`` searches IVF-PQ on CPU workers,
    ``cuda`` exact torch search on GPU workers, ``auto`` each worker's best (GPU when it has one)."""
    method = {"cpu": "ivfpq", "cuda": "exact", "auto": "auto"}.get(device)
    if method is None:
        raise InvalidParameter(f"--device must be auto, cpu or cuda, got {device!r}")
    return ClusterSearch(probe_block=probe_block, method=method, device=device)


def check_scheduler(address: str, timeout: float = 10.0) -> None:
    """Raise ``ClusterError`` unless a Dask scheduler answers at ``address`` (checked before
    long work, so a typo fails in seconds rather than after building a gallery)."""
    client = connect(address, timeout=timeout)
    client.close()
