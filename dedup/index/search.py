"""Threshold search of one shard: IVF-PQ proposals, exact re-rank, deepening.

Two ways, same answer contract (``SearchParams``):

- **fixed** (``fixed_search``, the default): FAISS visits the probe's ``nprobe`` nearest
  lists and proposes its ``depth`` best rows by PQ estimate; all are re-ranked exactly; a
  probe whose last proposal is still at the threshold is searched again four times deeper,
  twice as wide. Where the gallery measured its list coverage (``dedup.index.coverage``),
  the first round visits, of the ``nprobe`` lists, only those within the measured
  ``list_gap`` of the probe's nearest (``within_gap``): a new person far from everyone is
  searched in a few lists, a probe between many lists in all of them. Skipped lists are
  ``-1`` in one ``search_preassigned`` call per block, so no probe is split off into a small
  call.
- **threshold-aware** (``threshold_search``, with ``search.early_exit`` and a codec with
  measured ``bounds``): the question is "is anything above t?". Each probe also skips the
  lists beyond the codec's own measured gap, and of the proposals only rows whose PQ
  estimate is within the measured ``est_error`` of the threshold distance are re-ranked.
  Probes that must deepen continue as in the fixed search (no list pruning there:
  deepening is the cautious path).

The codec's bounds are the largest seen on its own training data (never a fixed margin): a
threshold below their grid falls back to the fixed search.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dedup.errors import GalleryError
from dedup.index.bounds import search_preassigned
from dedup.index.coarse import nearest_lists
from dedup.index.params import SearchParams
from dedup.index.results import Candidates
from dedup.index.rotation import ivf_of, ivf_params, to_index_space

# Rows gathered at once for the re-rank, in bytes of float32: a few MiB stay in cache and
# reuse their pages (256 MiB at a time, its earlier size at 512-d, made every block fault in
# fresh memory: the search ran 1.4x slower at 4,096 probes per block than at 1,024).
_GATHER_BYTES = 8 << 20


def even_blocks(n: int, block: int) -> list[tuple[int, int]]:
    """``(start, stop)`` blocks of about ``block`` probes covering ``0..n``; a short tail is
    folded into the block before it, so no block is small enough to fall off BLAS speed."""
    block = max(1, block)
    bounds = list(range(0, n, block)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < block // 2:
        del bounds[-2]
    return [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]


@dataclass
class _Found:
    """(probe, row id, score) triples found so far, plus per-probe flags."""

    n: int
    probe: list[np.ndarray] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.capped = np.zeros(self.n, dtype=bool)
        self.searched = np.zeros(self.n, dtype=np.int64)

    def add(self, probe: np.ndarray, rows: np.ndarray, scores: np.ndarray) -> None:
        self.probe.append(probe)
        self.rows.append(rows)
        self.scores.append(scores)

    def result(self, max_candidates: int) -> Candidates:
        if not self.probe:
            return Candidates.from_pairs(self.n, np.zeros(0, np.int64), np.zeros(0, np.int64),
                                         np.zeros(0, np.float32), max_candidates, capped=self.capped,
                                         searched_depth=self.searched)
        return Candidates.from_pairs(self.n, np.concatenate(self.probe), np.concatenate(self.rows),
                                     np.concatenate(self.scores), max_candidates, capped=self.capped,
                                     searched_depth=self.searched)


def rerank(vectors: Any, probes: np.ndarray, positions: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Exact float32 scores of each probe with the rows at ``positions`` where ``mask`` is set
    (``-inf`` elsewhere).

    float32 vectors (the default store) are scored in place by FAISS's
    ``fvec_inner_products_by_idx``: no gathered copy, both cores, and each score is one
    fixed-order SIMD dot product, so it does not depend on the batch (measured at 1M rows,
    16 rows per probe: 4.2x faster than the gather at 512-d, 5.4x at 128-d). Other stores
    (float16) are gathered from the memory map a few MiB at a time and scored in one batched
    product per piece."""
    m, k = positions.shape
    ids = np.ascontiguousarray(np.where(mask, positions, -1), dtype=np.int64)
    if ids.size and int(ids.max()) >= vectors.shape[0]:
        # FAISS does not check bounds: a position past the stored vectors is a damaged shard.
        raise GalleryError(f"index proposes row position {int(ids.max())} of {vectors.shape[0]} stored vectors")
    if vectors.dtype == np.float32 and vectors.flags["C_CONTIGUOUS"]:
        import faiss

        out = np.empty((m, k), dtype=np.float32)
        if m and k:
            probes = np.ascontiguousarray(probes, dtype=np.float32)
            faiss.fvec_inner_products_by_idx(faiss.swig_ptr(out), faiss.swig_ptr(probes), faiss.swig_ptr(vectors),
                                             faiss.swig_ptr(ids), probes.shape[1], m, k)
        return out
    out = np.full((m, k), -np.inf, dtype=np.float32)
    rows = np.flatnonzero((ids >= 0).any(axis=1))
    per_chunk = max(1, _GATHER_BYTES // max(4 * k * probes.shape[1], 1))
    for lo in range(0, rows.size, per_chunk):
        r = rows[lo:lo + per_chunk]
        sel = ids[r] >= 0
        gathered = np.asarray(vectors[np.where(sel, ids[r], 0)], dtype=np.float32)
        out[r] = np.where(sel, np.einsum("md,mkd->mk", probes[r], gathered), -np.inf)
    return out


def _round(shard: Any, probes: np.ndarray, todo: np.ndarray, positions: np.ndarray, scores: np.ndarray,
           params: SearchParams, depth: int, nprobe: int, depth_cap: int, found: _Found) -> np.ndarray:
    """Decide one round from its proposals and their exact scores (``-inf``: not re-ranked):
    record what is final; returns the probes to search deeper.

    A probe searches deeper while its last proposal is still at the threshold, or while at
    least half its proposals are above it. The second rule is for many rows just above the
    threshold (one identity enrolled many times): the PQ estimate's noise can rank one of
    them, just below the threshold, last, and the first rule alone would stop there with
    more above it unproposed (measured: 126 of 290 captures found on one CPU, all on another)."""
    live = shard.meta.live
    nlist = int(ivf_of(shard.index).nlist)
    t = params.threshold
    found.searched[todo] = np.isfinite(scores).sum(axis=1)
    valid = positions >= 0
    n_valid = valid.sum(axis=1)
    last = scores[np.arange(todo.size), np.maximum(n_valid - 1, 0)]
    above = (scores >= t).sum(axis=1)
    near = (n_valid > 0) & ((last >= t - params.deepen_margin) | (2 * above >= np.maximum(n_valid, 2)))
    # A probe that already has max_candidates rows above the threshold is capped:
    # searching deeper could only swap in rows the PQ ranked lower.
    full = near & (above >= params.max_candidates)
    found.capped[todo[full]] = True
    can_go_deeper = (depth < depth_cap) or (nprobe < nlist)
    deeper = near & ~full if can_go_deeper else np.zeros_like(near)
    if not can_go_deeper:
        # Depth ran out while rows were still near the threshold: report, don't hide.
        found.capped[todo[near & (n_valid >= depth) & (depth < live)]] = True
    hit = (scores >= t) & ~deeper[:, None]
    hp, hk = np.nonzero(hit)
    found.add(todo[hp], shard.row_ids[positions[hp, hk]], scores[hp, hk])
    return todo[deeper]


def _deepen(shard: Any, probes: np.ndarray, coded: np.ndarray, todo: np.ndarray, params: SearchParams, depth: int,
            nprobe: int, depth_cap: int, found: _Found, coarse: tuple[np.ndarray, np.ndarray] | None = None,
            first: bool = True) -> None:
    """The fixed search's rounds from ``depth``/``nprobe`` on, for the probes in ``todo``
    (``coded``: the probes in the index's space, rotated once by the caller; ``coarse``: the
    nearest lists of the probes in ``todo`` when already known, used by the first round).
    The ``first`` round visits only the lists within the measured ``list_gap``
    (``within_gap``); deepening rounds visit all they count.

    The coarse step is ours (``nearest_lists``), not FAISS's: FAISS switches between a BLAS
    and a scalar distance loop by batch size, so the same probe could get other lists (and
    rows) depending on how many probes happened to deepen with it."""
    nlist = int(ivf_of(shard.index).nlist)
    ours = cpu_ivf(shard.index)
    while todo.size:
        if ours:
            if coarse is not None and coarse[1].shape[1] >= nprobe:
                dist, lists = (np.ascontiguousarray(c[:, :nprobe]) for c in coarse)
            else:
                dist, lists = nearest_lists(shard.index, coded[todo], nprobe, rotated=True)
            coarse = None
            if first:
                lists = within_gap(dist, lists, params.list_gap)
            _, positions = search_preassigned(shard.index, coded[todo], depth, lists, dist, rotated=True)
        else:  # e.g. a faiss GPU index: FAISS's own coarse step
            _, positions = shard.index.search(probes[todo], depth, params=ivf_params(shard.index, nprobe))
        scores = rerank(shard.vectors, probes[todo], positions, positions >= 0)
        todo = _round(shard, probes, todo, positions, scores, params, depth, nprobe, depth_cap, found)
        first = False
        depth = min(depth * 4, depth_cap)
        nprobe = min(nprobe * 2, nlist)


def within_gap(dist: np.ndarray, lists: np.ndarray, gap: float | None) -> np.ndarray:
    """``lists`` (nearest first, with their squared distances ``dist``) with those more than
    ``gap`` farther than the probe's nearest set to ``-1``, which FAISS skips; all of them
    when there is no gap."""
    if gap is None or lists.shape[1] == 0:
        return lists
    return np.where(dist - dist[:, :1] <= gap, lists, -1)


def cpu_ivf(index: Any) -> bool:
    """Whether ``index`` is a CPU FAISS IVF index, rotated or not (our coarse step and
    ``search_preassigned`` apply); GPU indexes keep FAISS's own search."""
    import faiss

    return isinstance(ivf_of(index), faiss.IndexIVF)


def _start(shard: Any, params: SearchParams) -> tuple[int, int, int]:
    depth_cap = min(params.max_depth, shard.meta.live)
    return min(params.depth, depth_cap), min(params.nprobe, int(ivf_of(shard.index).nlist)), depth_cap


def fixed_search(shard: Any, probes: np.ndarray, params: SearchParams,
                 coarse: tuple[np.ndarray, np.ndarray] | None = None, coded: np.ndarray | None = None) -> Candidates:
    """The fixed IVF-PQ threshold search (see the module docstring); ``coarse`` and ``coded``
    as for ``threshold_search``."""
    n = probes.shape[0]
    found = _Found(n)
    if shard.meta.live and n:
        depth, nprobe, depth_cap = _start(shard, params)
        _deepen(shard, probes, _coded(shard, probes, coded), np.arange(n), params, depth, nprobe, depth_cap,
                found, coarse)
    return found.result(params.max_candidates)


def threshold_search(shard: Any, probes: np.ndarray, params: SearchParams,
                     coarse: tuple[np.ndarray, np.ndarray] | None = None, coded: np.ndarray | None = None) -> Candidates:
    """Threshold-aware search of one shard; ``coarse`` = ``(distances, lists)`` of at least
    ``nprobe`` nearest lists per probe, sorted, and ``coded`` = the probes in the index's
    space (``to_index_space``), both computed here when not given (a gallery computes them
    once per block for all its shards: the rotation at 512-d costs as much as the scan).

    Round one visits only the lists within the measured gap and re-ranks only proposals whose
    estimate could reach the threshold (and each probe's last one). A probe with nothing at
    or above the threshold there is finished: that is most probes. A probe with a hit may
    have more rows above the threshold in the lists it skipped, so it is searched again
    exactly as the fixed search's first round (all ``nprobe`` lists, every proposal
    re-ranked; proposals from two calls are not merged, as 4-bit look-up tables are scaled
    per call) and continues, deepening included, as the fixed search would. Its round-one
    hits are kept as well.
    """
    n = probes.shape[0]
    limits = params.bounds.at(params.threshold) if (params.early_exit and params.bounds is not None) else None
    if limits is None or not shard.meta.live or not n or not cpu_ivf(shard.index):
        return fixed_search(shard, probes, params, coarse, coded)
    gap, est_error = limits
    t = params.threshold
    depth, nprobe, depth_cap = _start(shard, params)
    coded = _coded(shard, probes, coded)
    if coarse is None or coarse[1].shape[1] < nprobe:
        coarse = nearest_lists(shard.index, coded, nprobe, rotated=True)
    dist = np.ascontiguousarray(coarse[0][:, :nprobe])
    lists = within_gap(dist, np.ascontiguousarray(coarse[1][:, :nprobe]), params.list_gap)  # the fixed first round's
    inside = dist - dist[:, :1] <= gap
    est, positions = search_preassigned(shard.index, coded, depth, np.where(inside, lists, -1), dist, rotated=True)
    reach = max(0.0, 2.0 - 2.0 * t) + est_error  # squared L2: estimates above this cannot reach t
    scores = rerank(shard.vectors, probes, positions, _worth(positions, est, reach))
    found = _Found(n)
    hit = np.flatnonzero((scores >= t).any(axis=1))
    if hit.size:
        # A probe with a hit is searched as the fixed search would (its round-one hits kept).
        hp, hk = np.nonzero(scores[hit] >= t)
        found.add(hit[hp], shard.row_ids[positions[hit[hp], hk]], scores[hit[hp], hk])
        wide = hit[(~inside[hit] & (lists[hit] >= 0)).any(axis=1)]
        if wide.size:
            _, positions[wide] = search_preassigned(shard.index, coded[wide], depth, lists[wide], dist[wide], rotated=True)
        scores[hit] = rerank(shard.vectors, probes[hit], positions[hit], positions[hit] >= 0)
    todo = _round(shard, probes, np.arange(n), positions, scores, params, depth, nprobe, depth_cap, found)
    if todo.size:
        _deepen(shard, probes, coded, todo, params, min(depth * 4, depth_cap),
                min(nprobe * 2, int(ivf_of(shard.index).nlist)), depth_cap, found, first=False)
    return found.result(params.max_candidates)


def _coded(shard: Any, probes: np.ndarray, coded: np.ndarray | None) -> np.ndarray:
    """The probes in the shard index's space: ``coded`` when the caller rotated them already."""
    if coded is None:
        return to_index_space(shard.index, probes)
    if coded.shape != probes.shape:
        raise ValueError(f"rotated probes have shape {coded.shape}, the probes {probes.shape}")
    return np.ascontiguousarray(coded, dtype=np.float32)


def _worth(positions: np.ndarray, est: np.ndarray, reach: float) -> np.ndarray:
    """Which proposals to re-rank: those whose estimate could reach the threshold, and each
    probe's last proposal, whose exact score the deepening rule reads (as in the fixed search)."""
    valid = positions >= 0
    worth = valid & (est <= reach)
    n_valid = valid.sum(axis=1)
    has = n_valid > 0
    worth[np.flatnonzero(has), n_valid[has] - 1] = True
    return worth
