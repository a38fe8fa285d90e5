"""Search results and the one merge used everywhere (shards, workers, GPU chunks, ground truth).

A search returns, for each probe, the gallery rows whose exact cosine is at or above the
threshold, highest first, at most ``max_candidates`` of them. Results are kept in CSR form
(``offsets`` into flat ``row_ids``/``scores`` arrays) so a block of 10 000 probes with a few
candidates each costs a few arrays, not 10 000 Python lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Candidates:
    """Threshold-search results for a block of probes.

    - ``offsets``: int64, length ``n_probes + 1``; probe ``i``'s candidates are
      ``row_ids[offsets[i]:offsets[i+1]]`` with ``scores`` alike, sorted by score descending
      (ties by row id ascending, so results are deterministic).
    - ``capped``: bool per probe: more rows were at or above the threshold than
      ``max_candidates`` (the highest were kept), or the search depth ran out while every
      re-ranked row was still above the threshold. Such probes are reported, never silent.
    - ``searched_depth``: int per probe: rows re-ranked exactly (diagnostics; 0 for exact search).
    """

    offsets: np.ndarray
    row_ids: np.ndarray
    scores: np.ndarray
    capped: np.ndarray
    searched_depth: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        self.row_ids = np.asarray(self.row_ids, dtype=np.int64)
        self.scores = np.asarray(self.scores, dtype=np.float32)
        self.capped = np.asarray(self.capped, dtype=bool)
        if self.searched_depth.size == 0:
            self.searched_depth = np.zeros(self.n_probes, dtype=np.int64)
        self.searched_depth = np.asarray(self.searched_depth, dtype=np.int64)

    @property
    def n_probes(self) -> int:
        return int(self.offsets.shape[0] - 1)

    def counts(self) -> np.ndarray:
        """Candidates per probe."""
        return np.diff(self.offsets)

    def of(self, probe: int) -> tuple[np.ndarray, np.ndarray]:
        """(row_ids, scores) of one probe."""
        lo, hi = self.offsets[probe], self.offsets[probe + 1]
        return self.row_ids[lo:hi], self.scores[lo:hi]

    def probe_index(self) -> np.ndarray:
        """The probe number of every flat entry (for building tables)."""
        return np.repeat(np.arange(self.n_probes, dtype=np.int64), self.counts())

    @staticmethod
    def empty(n_probes: int) -> Candidates:
        return Candidates(
            offsets=np.zeros(n_probes + 1, dtype=np.int64),
            row_ids=np.zeros(0, dtype=np.int64),
            scores=np.zeros(0, dtype=np.float32),
            capped=np.zeros(n_probes, dtype=bool),
        )

    @staticmethod
    def from_pairs(
        n_probes: int,
        probe: np.ndarray,
        row_ids: np.ndarray,
        scores: np.ndarray,
        max_candidates: int,
        capped: np.ndarray | None = None,
        searched_depth: np.ndarray | None = None,
    ) -> Candidates:
        """Build from unordered (probe, row, score) triples: sort, de-duplicate, cap.

        A row listed twice for the same probe keeps its higher score. Probes with more
        than ``max_candidates`` rows keep the highest and are marked capped.
        """
        probe = np.asarray(probe, dtype=np.int64)
        row_ids = np.asarray(row_ids, dtype=np.int64)
        scores = np.asarray(scores, dtype=np.float32)
        capped_out = np.zeros(n_probes, dtype=bool) if capped is None else np.asarray(capped, dtype=bool).copy()
        if probe.size:
            # Drop duplicate (probe, row) pairs, keeping the best score.
            order = np.lexsort((-scores, row_ids, probe))
            probe, row_ids, scores = probe[order], row_ids[order], scores[order]
            first = np.ones(probe.size, dtype=bool)
            first[1:] = (probe[1:] != probe[:-1]) | (row_ids[1:] != row_ids[:-1])
            probe, row_ids, scores = probe[first], row_ids[first], scores[first]
            # Order each probe's rows by score descending, then row id ascending.
            order = np.lexsort((row_ids, -scores, probe))
            probe, row_ids, scores = probe[order], row_ids[order], scores[order]
            counts = np.bincount(probe, minlength=n_probes)
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            rank = np.arange(probe.size) - np.repeat(starts, counts)
            keep = rank < max_candidates
            capped_out |= counts > max_candidates
            probe, row_ids, scores = probe[keep], row_ids[keep], scores[keep]
        counts = np.bincount(probe, minlength=n_probes) if probe.size else np.zeros(n_probes, dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        depth = np.zeros(n_probes, dtype=np.int64) if searched_depth is None else np.asarray(searched_depth, dtype=np.int64)
        return Candidates(offsets, row_ids, scores, capped_out, depth)


def merge(parts: Sequence[Candidates], max_candidates: int) -> Candidates:
    """Merge results for the same probes from several shards (or chunks, or workers).

    Every part must cover the same probes. A probe is capped in the merge if it was capped
    in any part or if the union exceeds ``max_candidates``.
    """
    if not parts:
        raise ValueError("merge needs at least one part")
    n = parts[0].n_probes
    if any(p.n_probes != n for p in parts):
        raise ValueError("merge: parts cover different numbers of probes")
    capped = np.zeros(n, dtype=bool)
    depth = np.zeros(n, dtype=np.int64)
    for p in parts:
        capped |= p.capped
        depth += p.searched_depth
    return Candidates.from_pairs(
        n,
        np.concatenate([p.probe_index() for p in parts]),
        np.concatenate([p.row_ids for p in parts]),
        np.concatenate([p.scores for p in parts]),
        max_candidates,
        capped=capped,
        searched_depth=depth,
    )


def concat(blocks: Iterable[Candidates]) -> Candidates:
    """Stack results of consecutive probe blocks into one result (probes in order)."""
    blocks = list(blocks)
    if not blocks:
        return Candidates.empty(0)
    offsets = [np.zeros(1, dtype=np.int64)]
    base = 0
    for b in blocks:
        offsets.append(b.offsets[1:] + base)
        base += int(b.offsets[-1])
    return Candidates(
        offsets=np.concatenate(offsets),
        row_ids=np.concatenate([b.row_ids for b in blocks]),
        scores=np.concatenate([b.scores for b in blocks]),
        capped=np.concatenate([b.capped for b in blocks]),
        searched_depth=np.concatenate([b.searched_depth for b in blocks]),
    )
