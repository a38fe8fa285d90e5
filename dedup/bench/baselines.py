"""The engines `dedup bench --compare` sets against dedup, each at its fair best.

- ``exact``: the fastest exact threshold search on this machine: FAISS inner-product k-NN
  over the whole gallery (``faiss.knn``, k = ``max_candidates``, probes in blocks of 2,048)
  or dedup's torch matrix-product search, whichever a short calibration finds faster.
- ``faiss-refine``: ``IndexIVFPQFastScan`` with dedup's own trained codec (same rotation,
  nlist and PQ) inside ``IndexRefineFlat`` (float vectors in RAM), k = dedup's depth; ``nprobe`` and
  ``k_factor`` swept, cheapest first, to the first setting that reaches dedup's recall, then
  ``nprobe`` narrowed by bisection between that grid point and the one before it (dedup's
  own list count is not on the grid, so a grid step would hand dedup up to a third fewer lists).
- ``hnsw``: hnswlib (inner product), ``ef`` swept upwards until it reaches dedup's recall,
  or its recall stops improving (reported as its plateau).

k-NN engines return at most k rows per probe, then the threshold; a probe whose k-th row
is still at or above the threshold is marked capped (it may have more).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dedup.errors import InvalidParameter
from dedup.index.params import SearchParams
from dedup.index.results import Candidates
from dedup.index.rotation import ivf_of, ivf_params

EXACT_BLOCK = 2048
REFINE_NPROBES = (4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
REFINE_K_FACTORS = (1, 2, 4, 8)
HNSW_EFS = (16, 32, 64, 128, 256, 512, 768, 1024, 1536, 2048, 3072)
PLATEAU = 1e-4  # recall gained over two steps below which the hnsw sweep stops


def knn_candidates(scores: np.ndarray, labels: np.ndarray, row_ids: np.ndarray, params: SearchParams) -> Candidates:
    """Threshold k-NN results (exact scores, positions; -1 = none) into ``Candidates``."""
    n, k = labels.shape
    keep = (labels >= 0) & (scores >= params.threshold)
    pi, ki = np.nonzero(keep)
    capped = keep[:, -1] if k else np.zeros(n, dtype=bool)
    return Candidates.from_pairs(n, pi, row_ids[labels[pi, ki]], scores[pi, ki], params.max_candidates, capped=capped)


@dataclass
class SweepPoint:
    """One setting tried by a sweep and the duplicate recall it gave."""

    setting: dict[str, int]
    recall: float


@dataclass
class Sweep:
    """What a sweep tried, in order, and where it stopped."""

    points: list[SweepPoint] = field(default_factory=list)
    reached: bool = False
    plateau: bool = False
    narrowed: list[SweepPoint] = field(default_factory=list)  # bisection below the first grid point reached
    target: float = 1.0

    @property
    def chosen(self) -> dict[str, int]:
        """The setting used: the first that reached the target (or the cheapest narrowed one
        that did), else the best recall seen."""
        if self.reached:
            return ([p for p in self.narrowed if p.recall >= self.target] or [self.points[-1]])[-1].setting
        return max(self.points, key=lambda p: p.recall).setting

    def narrow(self, key: str, failed: int, recall_of: Callable[[dict[str, int]], float]) -> None:
        """Bisect the integer ``key`` of the chosen setting down towards ``failed`` (a value
        that did not reach the target), the other keys fixed: the smallest value reaching it."""
        if not self.reached:
            return
        lo, hi = failed, self.chosen[key]
        while hi - lo > 1:
            mid = (lo + hi) // 2
            setting = {**self.chosen, key: mid}
            self.narrowed.append(SweepPoint(setting, recall_of(setting)))
            if self.narrowed[-1].recall >= self.target:
                hi = mid
            else:
                lo = mid

    def to_json(self) -> dict[str, Any]:
        return {"reached_target": self.reached, "plateau": self.plateau, "chosen": self.chosen,
                "points": [{**p.setting, "recall": p.recall} for p in self.points],
                "narrowed": [{**p.setting, "recall": p.recall} for p in self.narrowed]}


def sweep(settings: Sequence[dict[str, int]], recall_of: Callable[[dict[str, int]], float], target: float,
          plateau_steps: int = 0) -> Sweep:
    """Try ``settings`` in order (cheapest first); stop at the first whose recall reaches
    ``target``, or (``plateau_steps`` > 0) when recall gained less than ``PLATEAU`` over
    that many steps."""
    out = Sweep(target=target)
    for s in settings:
        out.points.append(SweepPoint(dict(s), recall_of(s)))
        if out.points[-1].recall >= target:
            out.reached = True
            return out
        if plateau_steps and len(out.points) > plateau_steps:
            gained = out.points[-1].recall - out.points[-1 - plateau_steps].recall
            if gained < PLATEAU:
                out.plateau = True
                return out
    return out


class ExactEngine:
    """The fastest exact threshold search here (see the module docstring)."""

    name = "exact"

    def __init__(self, vectors: np.ndarray, row_ids: np.ndarray, params: SearchParams) -> None:
        self.vectors, self.row_ids, self.params = vectors, row_ids, params
        self.method = "faiss-knn"
        self.build_s = 0.0
        self.calibration: dict[str, float] = {}

    def calibrate(self, probes: np.ndarray) -> None:
        """Time both exact methods on ``probes`` (the probes the engine will be timed on: the
        block size decides FAISS's path); keep the faster."""
        rates = {}
        for method in ("faiss-knn", "torch-matmul"):
            self.method = method
            self.search(probes[:64])  # warm-up (thread pools, first touch)
            t0 = time.perf_counter()
            self.search(probes)
            rates[method] = probes.shape[0] / (time.perf_counter() - t0)
        self.calibration = rates
        self.method = max(rates, key=lambda m: rates[m])

    def search(self, probes: np.ndarray) -> Candidates:
        if self.method == "torch-matmul":
            from dedup.index.exact import exact_search

            return exact_search(self.vectors, self.row_ids, probes, self.params.threshold,
                                self.params.max_candidates, device="cpu")
        import faiss

        k = min(self.params.max_candidates, self.vectors.shape[0])
        parts = []
        for lo in range(0, probes.shape[0], EXACT_BLOCK):
            scores, labels = faiss.knn(probes[lo:lo + EXACT_BLOCK], self.vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
            parts.append(knn_candidates(scores, labels, self.row_ids, self.params))
        from dedup.index.results import concat

        return concat(parts)

    def describe(self) -> dict[str, Any]:
        return {"method": self.method, "k": self.params.max_candidates, "probe_block": EXACT_BLOCK,
                "calibration_probes_per_s": self.calibration,
                "ram_bytes_per_template": self.vectors.shape[1] * 4.0, "build_s": self.build_s}


class FaissRefineEngine:
    """faiss's own composition: IVFPQFastScan (dedup's codec) + IndexRefineFlat."""

    name = "faiss-refine"

    def __init__(self, trained_index: Any, vectors: np.ndarray, row_ids: np.ndarray, params: SearchParams,
                 code_bytes: int) -> None:
        import faiss

        self.params, self.row_ids = params, row_ids
        self.nlist = int(ivf_of(trained_index).nlist)
        t0 = time.perf_counter()
        base = faiss.clone_index(trained_index)
        self.index = faiss.IndexRefineFlat(base)
        self.index.own_fields = True
        base.this.disown()
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        self.build_s = time.perf_counter() - t0
        self.ram = code_bytes + 8 + vectors.shape[1] * 4.0  # codes + ids + the float vectors
        self.setting = {"nprobe": min(48, self.nlist), "k_factor": 1}
        self.sweep: Sweep | None = None

    def search(self, probes: np.ndarray, setting: dict[str, int] | None = None) -> Candidates:
        import faiss

        s = setting or self.setting
        k = min(self.params.depth, self.index.ntotal)
        sp = faiss.IndexRefineSearchParameters(k_factor=float(s["k_factor"]),
                                               base_index_params=ivf_params(self.index.base_index, s["nprobe"]))
        dist, labels = self.index.search(probes, k, params=sp)
        return knn_candidates((1.0 - dist / 2.0).astype(np.float32), labels, self.row_ids, self.params)

    def tune(self, recall_of: Callable[[Candidates], float], probes: np.ndarray, target: float) -> None:
        settings = [{"nprobe": p, "k_factor": f} for p in REFINE_NPROBES if p <= self.nlist for f in REFINE_K_FACTORS]
        self.sweep = sweep(settings, lambda s: recall_of(self.search(probes, s)), target)
        if self.sweep.reached:
            below = [p for p in REFINE_NPROBES if p < self.sweep.chosen["nprobe"]]
            self.sweep.narrow("nprobe", below[-1] if below else 0, lambda s: recall_of(self.search(probes, s)))
        self.setting = self.sweep.chosen

    def describe(self) -> dict[str, Any]:
        return {"k": self.params.depth, **self.setting, "ram_bytes_per_template": self.ram, "build_s": self.build_s,
                "sweep": self.sweep.to_json() if self.sweep else None,
                "note": "trained codec shared with dedup (train time not counted)"}


class HnswEngine:
    """hnswlib, inner product, k = dedup's depth, ef swept."""

    name = "hnsw"

    def __init__(self, vectors_blocks: Callable[[], Any], n: int, dim: int, params: SearchParams, m: int,
                 ef_construction: int, seed: int) -> None:
        try:
            import hnswlib
        except ImportError:
            raise InvalidParameter("--compare hnsw needs hnswlib (pip install .[bench])") from None
        self.params, self.m, self.ef_construction = params, m, ef_construction
        self.index = hnswlib.Index(space="ip", dim=dim)
        self.index.init_index(max_elements=n, M=m, ef_construction=ef_construction, random_seed=seed)
        t0 = time.perf_counter()
        for vectors, row_ids in vectors_blocks():
            self.index.add_items(vectors, row_ids)
        self.build_s = time.perf_counter() - t0
        self.k = min(params.depth, n)
        self.ef = max(self.k, 16)
        self.sweep: Sweep | None = None
        # hnswlib's documented memory: the vectors plus about M*2*4 bytes of links per element.
        self.ram = dim * 4 + m * 2 * 4 + 8

    def search(self, probes: np.ndarray, ef: int | None = None) -> Candidates:
        self.index.set_ef(max(ef or self.ef, self.k))
        labels, dist = self.index.knn_query(probes, k=self.k)
        scores = (1.0 - dist).astype(np.float32)  # hnswlib's "ip" distance is 1 - inner product
        return knn_candidates(scores, labels.astype(np.int64), np.arange(self.index.get_max_elements(), dtype=np.int64),
                              self.params)

    def tune(self, recall_of: Callable[[Candidates], float], probes: np.ndarray, target: float) -> None:
        settings = [{"ef": ef} for ef in HNSW_EFS if ef >= self.k]
        self.sweep = sweep(settings, lambda s: recall_of(self.search(probes, s["ef"])), target, plateau_steps=2)
        self.ef = self.sweep.chosen["ef"]

    def describe(self) -> dict[str, Any]:
        return {"k": self.k, "ef": self.ef, "M": self.m, "ef_construction": self.ef_construction,
                "ram_bytes_per_template": self.ram, "build_s": self.build_s,
                "sweep": self.sweep.to_json() if self.sweep else None}
