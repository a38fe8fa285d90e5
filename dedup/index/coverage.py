"""How many IVF lists a search must visit to find what it must, measured on mated pairs.

A pair ``(a, b)`` at or above the threshold is found from ``a`` only when ``b``'s IVF list is
among ``a``'s ``nprobe`` nearest lists. Where ``b``'s list ranks among them (0: ``a``'s nearest)
depends on the codec's lists and on how one person's captures differ under the face model,
and it differs by model far more than any one default allows: in 1M-row bench galleries,
the captures of the face-like profile (fitted to dlib's 128-d model) sit up to 63rd, those
of the 512-d arcface-like profile up to 7th (``list_coverage`` in
benchmarks/results/compare-1m-*-defaults.json). A fixed ``search.nprobe`` is either too few
lists for the first or 8x too many for the second.

So the list count follows the deployment's own data, as the threshold does. Each pair's
rank is measured both ways and the larger kept. The pairs must be found independently of
the IVF search: a labelled set of the deployment's model (``dedup gallery coverage FILES``,
the templates Parquet that ``dedup eval`` reads, every pair of captures of one identity), or
the planted duplicates of a ``dedup bench`` gallery and fresh captures of its rows. Pairs
the search itself found (adjudicated duplicates) are not used: they can only show lists the
search already visits. No template is kept, only each pair's score, rank and gap
(``Gallery.save_coverage``: a sealed file whose hash the generation's manifest records).

By rank alone, at a threshold ``t`` the search visits the fewest lists ``k``
(``nprobe_for``) at which the measured pairs scoring ``>= t`` miss at most ``1 -
recall_target`` with 95% confidence (the Wilson interval's upper end:
``dedup.evaluation.stats``). That needs about 3.8 / (1 - recall_target) pairs above ``t``
(3,838 at 0.999) even when none misses; with fewer, or no measurement for the current
codec, the configured ``search.nprobe`` holds.

Most probes need far fewer than ``k`` lists. With each pair's rank, its **list gap** is
measured too: how much farther (squared L2, the coarse step's unit) the mate's list is from
the probe than the probe's nearest list, the larger of the two ways. A probe whose mate sits
30th is a probe between many lists at almost equal distance; a new person far from every
list but one has one list near and the rest far. So a probe visits, of its ``k`` nearest
lists, only those within the measured gap of its nearest one (``search_plan``: the misses
the bound allows are shared between the largest gaps and the largest ranks; at 1M rows,
face-like 128-d, 37.5 lists per probe on average where all visited 53). A coverage file
written before gaps were measured (format 1) gives no gap: every probe visits its ``k``
lists.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dedup.errors import GalleryError, InvalidParameter
from dedup.evaluation.stats import wilson_interval
from dedup.index.coarse import distances
from dedup.index.integrity import bytes_digest, unseal
from dedup.index.rotation import ivf_of, to_index_space

MAX_PAIRS = 100_000   # pairs kept (a seeded sample beyond): enough for a 0.99999 target
# Added to a measured gap: the search's coarse distances (``nearest_lists``) and the
# measurement's (``distances``) may differ in the last bit (about 1e-7 at these magnitudes).
GAP_MARGIN = 1e-5
CONFIDENCE = 0.95
_CHUNK = 4096


@dataclass(frozen=True)
class ListCoverage:
    """Score and list rank of each measured pair, for one codec version."""

    codec_version: str
    source: str                  # where the pairs came from, in words
    scores: np.ndarray           # float32, exact cosine of each pair
    ranks: np.ndarray            # int32, the larger of the pair's two list ranks
    nlist: int
    measured_at: float
    gaps: np.ndarray | None = None  # float32, the larger of the pair's two list gaps (None: format 1)

    @property
    def pairs(self) -> int:
        return int(self.scores.size)

    def nprobe_for(self, threshold: float, recall_target: float) -> int | None:
        """The fewest lists that hold ``recall_target`` at ``threshold`` (see the module
        docstring), or ``None`` when the pairs above ``threshold`` are too few to tell."""
        if not 0.0 < recall_target < 1.0:
            return None
        ranks = np.sort(self.ranks[self.scores >= threshold])
        n = int(ranks.size)
        if n == 0:
            return None
        allowed = 1.0 - recall_target
        for k in range(1, int(ranks[-1]) + 2):
            misses = n - int(np.searchsorted(ranks, k, side="left"))  # ranks >= k are missed
            if wilson_interval(misses, n, CONFIDENCE)[1] <= allowed:
                return min(k, self.nlist)
        return None

    def search_plan(self, threshold: float, recall_target: float) -> tuple[int, float | None] | None:
        """``(nprobe, list_gap)`` for a search at ``threshold`` that holds ``recall_target``
        (see the module docstring), or ``None`` when the pairs above ``threshold`` are too few
        to tell. Without measured gaps (format 1) it is ``(nprobe_for(...), None)``.

        With gaps, the misses the Wilson bound allows are shared: half go to the pairs with
        the largest gaps (the gap decides how many lists a probe visits), the rest to the
        largest ranks among the pairs the gap keeps (the count caps a probe between many
        lists, and a larger count makes the coarse step dearer). Measured at 1M rows, an
        even share visits fewer lists than either extreme at 128-d, and as few as the best
        at 512-d. A margin covers the last bit of the coarse distances (``GAP_MARGIN``)."""
        if self.gaps is None:
            k = self.nprobe_for(threshold, recall_target)
            return None if k is None else (k, None)
        if not 0.0 < recall_target < 1.0:
            return None
        above = self.scores >= threshold
        ranks, gaps = self.ranks[above], self.gaps[above]
        n = int(ranks.size)
        allowed = 1.0 - recall_target
        if n == 0 or wilson_interval(0, n, CONFIDENCE)[1] > allowed:
            return None
        misses = 0
        while misses < n and wilson_interval(misses + 1, n, CONFIDENCE)[1] <= allowed:
            misses += 1
        # Pairs above the largest kept gap (ties kept) are at most ``misses // 2`` ...
        gap = float(np.sort(gaps)[::-1][misses // 2]) if misses // 2 < n else 0.0
        kept = gaps <= gap
        # ... and kept pairs at or beyond the list count at most the rest.
        spare = misses - int(n - kept.sum())
        kept_ranks = np.sort(ranks[kept])[::-1]
        nprobe = int(kept_ranks[spare]) + 1 if spare < kept_ranks.size else 1
        return min(nprobe, self.nlist), gap + GAP_MARGIN

    def summary(self, threshold: float, recall_target: float) -> dict[str, Any]:
        """What the measurement says at ``threshold``, for reports (no pair-level data)."""
        above = self.ranks[self.scores >= threshold]
        plan = self.search_plan(threshold, recall_target)
        return {
            "codec_version": self.codec_version, "source": self.source, "pairs": self.pairs,
            "pairs_at_threshold": int(above.size), "threshold": threshold, "recall_target": recall_target,
            "max_rank_at_threshold": int(above.max()) if above.size else None,
            "nprobe": plan[0] if plan else None, "list_gap": plan[1] if plan else None,
            "measured_at": self.measured_at,
        }

    def to_dict(self) -> dict[str, Any]:
        out = {"format": 2 if self.gaps is not None else 1, "codec_version": self.codec_version,
               "source": self.source, "nlist": self.nlist, "measured_at": self.measured_at,
               "scores": _json_float32(self.scores), "ranks": [int(r) for r in self.ranks]}
        if self.gaps is not None:
            out["gaps"] = _json_float32(self.gaps)
        return out

    @staticmethod
    def from_dict(data: dict[str, Any], where: str) -> ListCoverage:
        try:
            if data["format"] not in (1, 2):
                raise ValueError(f"format {data['format']} is not supported")
            gaps = np.asarray(data["gaps"], dtype=np.float32) if data["format"] == 2 else None
            out = ListCoverage(str(data["codec_version"]), str(data["source"]),
                               np.asarray(data["scores"], dtype=np.float32), np.asarray(data["ranks"], dtype=np.int32),
                               int(data["nlist"]), float(data["measured_at"]), gaps)
        except (TypeError, KeyError, ValueError) as exc:
            raise GalleryError(f"{where}: unreadable list coverage ({exc})") from None
        if out.scores.shape != out.ranks.shape or out.scores.ndim != 1 or (out.ranks < 0).any() \
                or (out.ranks >= out.nlist).any():
            raise GalleryError(f"{where}: list coverage has inconsistent pairs")
        if out.gaps is not None and (out.gaps.shape != out.scores.shape or not np.isfinite(out.gaps).all()
                                     or (out.gaps < 0).any()):
            raise GalleryError(f"{where}: list coverage has inconsistent gaps")
        return out


def _json_float32(values: np.ndarray) -> list[float]:
    """float32 values as JSON numbers that read back (as float64, then float32) to the very
    same values, so a reopened measurement plans the very search the measured one did (a
    rounded score can cross the threshold, a rounded gap moves the plan). Each is the
    shortest decimal that names it, or, where reading that through float64 would round
    otherwise, its exact value."""
    exact = np.asarray(values, dtype=np.float32)
    short = exact.astype(str).astype(np.float64)
    return np.where(short.astype(np.float32) == exact, short, exact.astype(np.float64)).tolist()


def recorded_path(codec_dir: Path, codec_version: str, digest: str) -> Path:
    """Where the coverage a manifest records (by its SHA-256) is kept."""
    return codec_dir / f"{codec_version}.coverage-{digest[:16]}.json"


def load_recorded(path: Path, digest: str, codec_version: str, where: str) -> ListCoverage:
    """The coverage at ``path``, checked against the ``digest`` and codec the manifest records:
    ``GalleryError`` when it changed, ``FileNotFoundError`` when it is gone (the callers say
    what that means to them)."""
    data = path.read_bytes()
    if bytes_digest(data) != digest:
        raise GalleryError(f"{where} is not the one the generation records (it changed on disk)")
    found = ListCoverage.from_dict(unseal(data, where), where)
    if found.codec_version != codec_version:
        raise GalleryError(f"{where}: measured with codec {found.codec_version}, not {codec_version}")
    return found


def own_lists(index: Any, vectors: np.ndarray) -> np.ndarray:
    """The IVF list each vector is stored in when added (FAISS's own assignment)."""
    coded = to_index_space(index, vectors)
    ivf = ivf_of(index)
    out = np.empty(coded.shape[0], dtype=np.int64)
    for lo in range(0, coded.shape[0], _CHUNK):
        out[lo:lo + _CHUNK] = ivf.quantizer.assign(np.ascontiguousarray(coded[lo:lo + _CHUNK]), 1)[:, 0]
    return out


def list_ranks(index: Any, probes: np.ndarray, lists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank of ``lists[i]`` among ``probes[i]``'s lists by the search's coarse distances
    (0: the nearest; lists at an equal distance count as nearer), and its gap: how much
    farther it is than the nearest (squared L2)."""
    ranks = np.empty(probes.shape[0], dtype=np.int32)
    gaps = np.empty(probes.shape[0], dtype=np.float32)
    for lo in range(0, probes.shape[0], _CHUNK):
        d = distances(index, probes[lo:lo + _CHUNK])
        own = d[np.arange(d.shape[0]), lists[lo:lo + _CHUNK]]
        ranks[lo:lo + _CHUNK] = (d <= own[:, None]).sum(axis=1) - 1
        gaps[lo:lo + _CHUNK] = own - d.min(axis=1)
    return ranks, gaps


def measure_coverage(index: Any, codec_version: str, a: np.ndarray, b: np.ndarray, source: str,
                     seed: int = 0) -> ListCoverage:
    """Measure the list ranks of the pairs ``(a[i], b[i])`` (unit vectors) with ``index``."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    b = np.ascontiguousarray(b, dtype=np.float32)
    if a.shape != b.shape or a.ndim != 2:
        raise InvalidParameter(f"pairs must be two (n, d) arrays of one shape, got {a.shape} and {b.shape}")
    if a.shape[0] > MAX_PAIRS:
        keep = np.sort(np.random.default_rng([seed, 61]).choice(a.shape[0], MAX_PAIRS, replace=False))
        a, b = a[keep], b[keep]
    scores = np.einsum("ij,ij->i", a, b).astype(np.float32)
    rank_ab, gap_ab = list_ranks(index, a, own_lists(index, b))
    rank_ba, gap_ba = list_ranks(index, b, own_lists(index, a))
    return ListCoverage(codec_version, source, scores, np.maximum(rank_ab, rank_ba).astype(np.int32),
                        int(ivf_of(index).nlist), time.time(), np.maximum(gap_ab, gap_ba).astype(np.float32))


def identity_pairs(identity: np.ndarray, limit: int = MAX_PAIRS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(i, j)`` of every pair of rows with one identity label, or a seeded
    sample of ``limit`` of them when there are more (drawn without listing them all: one
    identity with 10,000 captures has 50M pairs)."""
    identity = np.asarray(identity)
    order = np.argsort(identity, kind="stable")
    labels = identity[order]
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]]) if labels.size else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, labels.size]).astype(np.int64)
    per_group = sizes * (sizes - 1) // 2
    total = int(per_group.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if total > limit:
        rng = np.random.default_rng([seed, 62])
        group = rng.choice(starts.size, size=limit, p=per_group / total)
        first = rng.integers(0, sizes[group])
        other = (first + rng.integers(1, sizes[group])) % sizes[group]  # another capture of the same identity
        return order[starts[group] + first], order[starts[group] + other]
    left, right = [], []
    for size in np.unique(sizes[sizes >= 2]):
        groups = starts[sizes == size]
        i, j = np.triu_indices(int(size), k=1)
        left.append((groups[:, None] + i[None, :]).ravel())
        right.append((groups[:, None] + j[None, :]).ravel())
    return order[np.concatenate(left)], order[np.concatenate(right)]
