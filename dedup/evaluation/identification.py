"""One-to-many identification, simulated by exact searches (NIST FRTE style).

A *mated search* is a probe whose identity is enrolled in the gallery; a *non-mated search*
one whose identity is not. At threshold T (as in NIST IR 8271, FRTE 1:N):

- FPIR(T): fraction of non-mated searches returning any candidate scoring >= T;
- FNIR(T): fraction of mated searches whose mate does not score >= T (an ABIS sends every
  candidate above the threshold to adjudication, so rank does not enter);
- rank-1 identification rate: fraction of mated searches whose mate scores above every
  non-mate (threshold-free).

Galleries of several sizes are **nested prefixes** of one ordered gallery: the gallery is
streamed once in chunks (exact float32 inner products), and each probe keeps its best mate
score and its best non-mate score, snapshotted at every size. Memory is one chunk of scores,
never the pairs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from dedup.errors import InvalidParameter
from dedup.evaluation.scores import ProgressFn
from dedup.evaluation.stats import wilson_interval

NEG = np.float32(-np.inf)


@dataclass
class SearchOutcome:
    """Best mate and best non-mate score of every probe, at every gallery size."""

    sizes: list[int]
    mate: np.ndarray      # float32 (len(sizes), P): -inf where the probe's identity is not enrolled yet
    nonmate: np.ndarray   # float32 (len(sizes), P): -inf for an empty gallery

    def mated(self, s: int) -> np.ndarray:
        return self.mate[s] > NEG


@dataclass
class IdentificationPoint:
    """FNIR at one FPIR target for one gallery size."""

    gallery_size: int
    fpir_target: float
    threshold: float | None
    fpir: float | None
    fnir: float | None
    fnir_ci: tuple[float, float] | None
    mated_searches: int
    nonmated_searches: int
    note: str = ""


def search_prefixes(probes: np.ndarray, probe_identity: np.ndarray,
                    gallery: Iterable[tuple[np.ndarray, np.ndarray]], sizes: list[int],
                    chunk_elements: int = 16_000_000, progress: ProgressFn | None = None,
                    total: int | None = None) -> SearchOutcome:
    """Stream gallery chunks ``(vectors, identity)`` in order; snapshot at each size.

    ``sizes`` must be increasing; the gallery must hold at least ``sizes[-1]`` rows.
    """
    if not sizes or any(b <= a for a, b in zip(sizes, sizes[1:])) or sizes[0] < 1:
        raise InvalidParameter(f"gallery sizes must be increasing and >= 1, got {sizes}")
    p = probes.shape[0]
    q = np.ascontiguousarray(probes, dtype=np.float32)
    pid = np.asarray(probe_identity, dtype=np.int64)
    order = np.argsort(pid, kind="stable")
    sorted_pid = pid[order]
    mate = np.full(p, NEG, dtype=np.float32)
    nonmate = np.full(p, NEG, dtype=np.float32)
    snaps_m = np.zeros((len(sizes), p), dtype=np.float32)
    snaps_n = np.zeros((len(sizes), p), dtype=np.float32)
    step = max(256, chunk_elements // max(p, 1))
    pos = 0
    s_idx = 0
    for vectors, identity in _rechunk(gallery, step, sizes):
        if s_idx >= len(sizes):
            break
        c = vectors.shape[0]
        scores = q @ np.ascontiguousarray(vectors, dtype=np.float32).T   # (P, c)
        gid = np.asarray(identity, dtype=np.int64)
        lo = np.searchsorted(sorted_pid, gid, side="left")
        hi = np.searchsorted(sorted_pid, gid, side="right")
        cols = np.flatnonzero(hi > lo)
        if cols.size:
            counts = hi[cols] - lo[cols]
            col_rep = np.repeat(cols, counts)
            starts = np.repeat(lo[cols], counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
            prow = order[starts]
            np.maximum.at(mate, prow, scores[prow, col_rep])
            scores[prow, col_rep] = NEG
        np.maximum(nonmate, scores.max(axis=1), out=nonmate)
        pos += c
        if progress is not None:
            progress("searches", pos, total or sizes[-1])
        while s_idx < len(sizes) and pos == sizes[s_idx]:
            snaps_m[s_idx], snaps_n[s_idx] = mate, nonmate
            s_idx += 1
    if s_idx < len(sizes):
        raise InvalidParameter(f"gallery has {pos} rows, fewer than the largest size asked ({sizes[-1]})")
    return SearchOutcome(list(sizes), snaps_m, snaps_n)


def _rechunk(gallery: Iterable[tuple[np.ndarray, np.ndarray]], step: int, sizes: list[int]
             ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Re-cut a stream of blocks into chunks of at most ``step`` rows that end at every size."""
    pos = 0
    cuts = list(sizes)
    for vectors, identity in gallery:
        n = vectors.shape[0]
        a = 0
        while a < n:
            b = min(n, a + step)
            for cut in cuts:
                if pos + a < cut < pos + b:
                    b = cut - pos
                    break
            yield vectors[a:b], identity[a:b]
            a = b
        pos += n


def fpir_at(outcome: SearchOutcome, s: int, threshold: float) -> tuple[int, int]:
    """(false positive searches, non-mated searches) at ``threshold`` for size index s."""
    nm = ~outcome.mated(s)
    return int(np.count_nonzero(outcome.nonmate[s][nm].astype(np.float64) >= threshold)), int(nm.sum())


def fnir_at(outcome: SearchOutcome, s: int, threshold: float) -> tuple[int, int]:
    """(missed mated searches, mated searches) at ``threshold`` for size index s."""
    m = outcome.mated(s)
    return int(np.count_nonzero(outcome.mate[s][m].astype(np.float64) < threshold)), int(m.sum())


def rank1(outcome: SearchOutcome, s: int) -> tuple[int, int]:
    """(mated searches whose mate outscores every non-mate, mated searches)."""
    m = outcome.mated(s)
    return int(np.count_nonzero(outcome.mate[s][m] > outcome.nonmate[s][m])), int(m.sum())


def threshold_for_fpir(nonmate_max: np.ndarray, target: float) -> float:
    """Smallest threshold at which at most ``floor(target * n)`` non-mated searches hit.

    It is the float just above the ``(k+1)``-th highest non-mated best score, k = floor(target n).
    """
    v = np.sort(np.asarray(nonmate_max, dtype=np.float32))[::-1]
    k = int(np.floor(target * v.size + 1e-9))
    if k >= v.size:
        return float(v[-1])
    return float(np.nextafter(v[k], np.float32(np.inf)))


def fnir_at_fpir(outcome: SearchOutcome, targets: list[float], confidence: float = 0.95
                 ) -> list[IdentificationPoint]:
    """FNIR at each FPIR target and gallery size (empirical, from the searches)."""
    out = []
    for s, size in enumerate(outcome.sizes):
        m = outcome.mated(s)
        n_m, n_nm = int(m.sum()), int((~m).sum())
        for target in targets:
            if n_nm * target < 1 or n_m == 0:
                out.append(IdentificationPoint(
                    size, target, None, None, None, None, n_m, n_nm,
                    note=f"not estimable from {n_nm:,} non-mated and {n_m:,} mated searches "
                         f"(needs >= {int(np.ceil(1 / target))} non-mated and >= 1 mated)"))
                continue
            t = threshold_for_fpir(outcome.nonmate[s][~m], target)
            fp, _ = fpir_at(outcome, s, t)
            miss, _ = fnir_at(outcome, s, t)
            lo, hi = wilson_interval(miss, n_m, confidence)
            out.append(IdentificationPoint(size, target, t, fp / n_nm, miss / n_m, (float(lo), float(hi)), n_m, n_nm))
    return out


@dataclass
class SearchSplit:
    """How a labelled set is cut into an enrolment pool and searches."""

    pool: np.ndarray        # row indices, in gallery order (a random permutation)
    probes: np.ndarray      # row indices of the searches (mated and non-mated)


def split_for_search(identity: np.ndarray, max_searches: int, rng: np.random.Generator,
                     nonmated_share: float = 0.25) -> SearchSplit:
    """Enrol one capture of every identity; search with a second capture (mated searches).

    Identities with a single capture: ``nonmated_share`` of them become non-mated searches,
    the rest enrol. Later captures beyond the second are not used. At most ``max_searches``
    mated and ``max_searches`` non-mated searches.
    """
    identity = np.asarray(identity, dtype=np.int64)
    perm = rng.permutation(identity.size)
    ids = identity[perm]
    order = np.argsort(ids, kind="stable")
    sid = ids[order]
    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]]) if sid.size else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, sid.size])
    first = perm[order[starts]]
    multi = sizes >= 2
    second = perm[order[starts[multi] + 1]]
    singles = first[~multi]
    n_nm = min(max_searches, int(singles.size * nonmated_share))
    nonmated = singles[:n_nm]
    mated_probe = second[:max_searches]
    pool = np.concatenate([first[multi], singles[n_nm:]])
    pool = pool[rng.permutation(pool.size)]
    return SearchSplit(pool, np.concatenate([mated_probe, nonmated]))
