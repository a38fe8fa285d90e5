"""Score distributions without materialising every pair.

Impostor pairs grow with the square of the set: 100 000 templates make 5e9 pairs. They are
never held in memory: a labelled set is cut into blocks of rows, each block is multiplied
with the rows after it (exact float32 inner products, the upper triangle only), and every
score is counted into a **fine histogram** (``BIN`` = 1e-4 wide bins over [-1, 1]); the
exact scores of the highest pairs (the tail the calibration needs) are kept with the two rows
of each pair. When the set has more pairs than ``max_pairs``, a random subset of rows is
taken and all of its pairs are scored, so every template in the subset meets every other:
the sample is unbiased for FMR, and the tail model's bootstrap resamples these rows.

Genuine pairs (two captures of one identity) are few and are kept exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dedup.errors import InvalidParameter

LO = -1.0
BIN = 1e-4
NBINS = 20_001                               # [-1, 1.0001): a cosine of exactly 1 has a bin
EDGES = LO + np.arange(NBINS + 1, dtype=np.float64) * BIN

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)


def bin_index(scores: np.ndarray) -> np.ndarray:
    """Bin of each score such that ``EDGES[k] <= s < EDGES[k + 1]`` exactly (not up to rounding)."""
    s = np.asarray(scores, dtype=np.float64)
    k = np.floor((s - LO) / BIN).astype(np.int64)
    np.clip(k, 0, NBINS - 1, out=k)
    k -= (s < EDGES[k]) & (k > 0)
    k += (s >= EDGES[k + 1]) & (k < NBINS - 1)
    return k


def edge_at_or_above(t: float) -> int:
    """Index of the first bin edge >= t (thresholds between edges resolve upward)."""
    k = int(np.searchsorted(EDGES, t, side="left"))
    return min(max(k, 0), NBINS)


def count_ge_edges(counts: np.ndarray) -> np.ndarray:
    """``ge[k]`` = number of scores >= ``EDGES[k]``, for k in 0..NBINS (last is 0)."""
    ge = np.zeros(counts.shape[:-1] + (NBINS + 1,), dtype=np.int64)
    ge[..., :-1] = np.cumsum(counts[..., ::-1], axis=-1)[..., ::-1]
    return ge


@dataclass
class ImpostorSample:
    """Counts of impostor scores and the exact upper tail.

    - ``hist``: int64 (G + 1, NBINS): row g counts pairs whose two templates are both in group
      g; the last row counts cross-group pairs.
    - ``tail_scores``/``tail_i``/``tail_j``: every pair scoring ``>= tail_cut``, exactly, with
      its two rows (indices into ``rows``).
    - ``rows``: the templates that were paired (indices into the input), ``row_identity`` their
      identity codes; ``exhaustive`` is true when every pair of the input was scored.
    """

    hist: np.ndarray
    group_names: list[str]
    tail_scores: np.ndarray
    tail_i: np.ndarray
    tail_j: np.ndarray
    tail_cut: float
    rows: np.ndarray
    row_identity: np.ndarray
    row_group: np.ndarray
    exhaustive: bool

    @property
    def n_pairs(self) -> int:
        return int(self.hist.sum())

    @property
    def total(self) -> np.ndarray:
        return self.hist.sum(axis=0)

    def tail_group(self) -> np.ndarray:
        """Group row of ``hist`` of every kept tail pair (the cross-group row when groups differ)."""
        gi, gj = self.row_group[self.tail_i], self.row_group[self.tail_j]
        return np.where(gi == gj, gi, len(self.group_names)).astype(np.int64)

    def count_ge(self, t: float, which: int | None = None) -> int:
        """Impostor pairs scoring >= t (``which``: a group row of ``hist``, or all).

        Exact for any t at or above ``tail_cut`` (over all groups); otherwise resolved to the
        1e-4 bin edge at or above t.
        """
        if t >= self.tail_cut:
            above = self.tail_scores.astype(np.float64) >= t
            if which is not None:
                above &= self.tail_group() == which
            return int(np.count_nonzero(above))
        counts = self.total if which is None else self.hist[which]
        k = edge_at_or_above(t)
        return int(counts[k:].sum())


def sample_rows(n: int, max_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Rows to pair: all of them when n(n-1)/2 <= max_pairs, else a random subset that fits."""
    if max_pairs < 1:
        raise InvalidParameter(f"max impostor pairs must be >= 1, got {max_pairs}")
    if n * (n - 1) // 2 <= max_pairs:
        return np.arange(n, dtype=np.int64), True
    m = int((1 + math.sqrt(1 + 8 * max_pairs)) // 2)
    return np.sort(rng.choice(n, size=max(m, 2), replace=False)).astype(np.int64), False


def impostor_sample(
    vectors: np.ndarray,
    identity: np.ndarray,
    group: np.ndarray,
    group_names: list[str],
    max_pairs: int = 50_000_000,
    tail_keep: int = 200_000,
    rng: np.random.Generator | None = None,
    block_elements: int = 4_000_000,
    progress: ProgressFn | None = None,
) -> ImpostorSample:
    """Score impostor pairs (different identities) of a labelled set into an ImpostorSample.

    ``vectors`` may be a memory map: only the sampled rows are read. Memory is about
    ``block_elements`` scores at a time plus ``tail_keep`` kept pairs.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    n = int(vectors.shape[0])
    if n < 2:
        raise InvalidParameter("impostor pairs need at least 2 templates")
    n_groups = len(group_names)
    rows, exhaustive = sample_rows(n, max_pairs, rng)
    order = np.argsort(np.asarray(group)[rows], kind="stable")
    rows = rows[order]
    x = np.ascontiguousarray(np.asarray(vectors[rows], dtype=np.float32))
    ident = np.asarray(identity, dtype=np.int64)[rows]
    grp = np.asarray(group, dtype=np.int64)[rows]
    m = rows.shape[0]
    group_end = np.searchsorted(grp, np.arange(n_groups), side="right")
    same_i, same_j = _same_identity_pairs(ident)          # i < j, sorted by i

    hist = np.zeros((n_groups + 1, NBINS), dtype=np.int64)
    total_ge_cut = np.zeros(NBINS, dtype=np.int64)
    cut = -np.inf
    buf_s: list[np.ndarray] = []
    buf_i: list[np.ndarray] = []
    buf_j: list[np.ndarray] = []
    total_pairs = m * (m - 1) // 2 - same_i.shape[0]
    done = 0
    step = max(1, block_elements // max(m, 1))
    a = 0
    while a < m - 1:
        g = int(grp[a])
        b = min(a + step, int(group_end[g]), m - 1)
        block = x[a:b] @ x[a:].T                          # (b - a, m - a): cols a..m-1
        r = b - a
        tri = np.triu(np.ones((r, r), dtype=bool), k=1)
        same_end = int(group_end[g]) - a
        diag = block[:, :r][tri]
        same_rest = block[:, r:same_end].ravel()
        cross = block[:, same_end:].ravel()
        hist[g] += np.bincount(bin_index(diag), minlength=NBINS)
        hist[g] += np.bincount(bin_index(same_rest), minlength=NBINS)
        hist[n_groups] += np.bincount(bin_index(cross), minlength=NBINS)
        # Take out pairs of one identity (genuine): subtract exactly the values scored here.
        lo, hi = np.searchsorted(same_i, [a, b])
        genuine = block[same_i[lo:hi] - a, same_j[lo:hi] - a]
        gen_cross = grp[same_j[lo:hi]] != g
        if genuine.size:
            np.subtract.at(hist[g], bin_index(genuine[~gen_cross]), 1)
            np.subtract.at(hist[n_groups], bin_index(genuine[gen_cross]), 1)
        # Keep the exact top of the distribution.
        total_ge_cut = count_ge_edges(hist.sum(axis=0))
        k = int(np.searchsorted(-total_ge_cut, -tail_keep, side="right")) - 1
        cut = max(cut, float(EDGES[max(k, 0)]))
        bi, bj = np.nonzero(block >= cut)
        keep = (bj > bi) | (bj >= r)
        bi, bj = bi[keep], bj[keep]
        gi, gj = bi + a, bj + a
        not_same = ident[gi] != ident[gj]
        buf_s.append(block[bi[not_same], bj[not_same]])
        buf_i.append(gi[not_same].astype(np.int32))
        buf_j.append(gj[not_same].astype(np.int32))
        if sum(s.size for s in buf_s) > 2 * tail_keep + 1_000_000:
            buf_s, buf_i, buf_j = _prune(buf_s, buf_i, buf_j, cut)
        done += r * (m - a) - r * (r + 1) // 2
        if progress is not None:
            progress("impostor pairs", done, m * (m - 1) // 2)
        a = b
    buf_s, buf_i, buf_j = _prune(buf_s, buf_i, buf_j, cut)
    assert int(hist.sum()) == total_pairs
    return ImpostorSample(hist, list(group_names), buf_s[0], buf_i[0], buf_j[0], float(cut),
                          rows, ident, grp.astype(np.int16), exhaustive)


def _prune(s: list[np.ndarray], i: list[np.ndarray], j: list[np.ndarray], cut: float
           ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    s_ = np.concatenate(s) if s else np.zeros(0, np.float32)
    i_ = np.concatenate(i) if i else np.zeros(0, np.int32)
    j_ = np.concatenate(j) if j else np.zeros(0, np.int32)
    keep = s_.astype(np.float64) >= cut
    return [s_[keep]], [i_[keep]], [j_[keep]]


def _same_identity_pairs(ident: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (i, j), i < j, with ident[i] == ident[j], sorted by i then j."""
    order = np.argsort(ident, kind="stable")
    sorted_ids = ident[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    sizes = np.diff(np.r_[starts, ident.shape[0]])
    pi: list[np.ndarray] = []
    pj: list[np.ndarray] = []
    for c in np.unique(sizes[sizes >= 2]):
        members = order[starts[sizes == c][:, None] + np.arange(c)[None, :]]   # (k, c)
        members.sort(axis=1)
        iu, ju = np.triu_indices(int(c), k=1)
        pi.append(members[:, iu].ravel())
        pj.append(members[:, ju].ravel())
    if not pi:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    i_ = np.concatenate(pi)
    j_ = np.concatenate(pj)
    o = np.lexsort((j_, i_))
    return i_[o], j_[o]


@dataclass
class GenuineScores:
    """Exact scores of genuine pairs (two captures of one identity) and the identity's group."""

    scores: np.ndarray   # float32
    group: np.ndarray    # int16 code of the identity's group (its first capture's)

    @property
    def n_pairs(self) -> int:
        return int(self.scores.shape[0])

    def count_lt(self, t: float, which: int | None = None) -> int:
        """Genuine pairs scoring below t (false non-matches at threshold t)."""
        s = self.scores if which is None else self.scores[self.group == which]
        return int(np.count_nonzero(s.astype(np.float64) < t))


def genuine_scores(vectors: np.ndarray, identity: np.ndarray, group: np.ndarray,
                   max_per_identity: int = 20, rng: np.random.Generator | None = None) -> GenuineScores:
    """Every pair of captures of one identity (at most ``max_per_identity`` captures each, sampled)."""
    rng = np.random.default_rng(0) if rng is None else rng
    identity = np.asarray(identity, dtype=np.int64)
    order = np.argsort(identity, kind="stable")
    ids = identity[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if ids.size else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, ids.size])
    out_s: list[np.ndarray] = []
    out_g: list[np.ndarray] = []
    for c in np.unique(sizes[sizes >= 2]):
        sel = starts[sizes == c]
        members = order[sel[:, None] + np.arange(c)[None, :]]        # (k, c), first capture first
        if c > max_per_identity:
            pick = np.sort(np.argsort(rng.random(members.shape), axis=1)[:, :max_per_identity], axis=1)
            members = np.take_along_axis(members, pick, axis=1)
        cc = members.shape[1]
        iu, ju = np.triu_indices(cc, k=1)
        for lo in range(0, members.shape[0], 4096):
            mem = members[lo:lo + 4096]
            v = np.asarray(vectors[np.sort(mem.ravel())], dtype=np.float32)
            pos = np.searchsorted(np.sort(mem.ravel()), mem)
            va, vb = v[pos[:, iu]], v[pos[:, ju]]
            out_s.append(np.einsum("kpd,kpd->kp", va, vb).ravel().astype(np.float32))
            out_g.append(np.repeat(np.asarray(group)[mem[:, 0]].astype(np.int16), iu.size))
    if not out_s:
        return GenuineScores(np.zeros(0, np.float32), np.zeros(0, np.int16))
    return GenuineScores(np.concatenate(out_s), np.concatenate(out_g))
