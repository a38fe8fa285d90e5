"""What a trained codec's errors let a threshold search skip, measured when it is trained.

For unit vectors a row is at or above cosine ``t`` exactly when its L2 distance to the
probe is at most ``r = sqrt(2 - 2t)``. The codec is measured on its own training sample:
each training template ``x`` gets a synthetic probe ``y`` at exactly cosine ``c`` from it
(the farthest a pair above a threshold ``c`` can be), for every ``c`` of ``COS_GRID``: for
half of them in a random direction, for the other half towards another training template
(the directions real differences between captures take). Two numbers per grid point are kept, both the largest seen:

- ``list_gap``: how much farther (squared L2, the coarse quantizer's unit) ``x``'s own IVF
  list is from ``y`` than ``y``'s nearest list. A search at threshold ``c`` visits only the
  lists within that gap of the probe's nearest one (up to ``nprobe``): a new person far
  from everyone is searched in a few lists, a probe between clusters in many.
- ``est_error``: how much the index's PQ-estimated squared distance of ``(y, x)`` exceeds
  the true one: the codec's reconstruction error as the search sees it (for PQ,
  ``est^2 ~ true^2 + |x - x_hat|^2``), 4-bit look-up-table rounding included. A row whose
  estimate is above ``r^2 + est_error`` cannot reach the threshold and is not re-ranked.

A threshold between grid points uses the next lower grid point (larger values); below the
grid there are no bounds and the search visits ``nprobe`` lists and re-ranks everything,
as it did before bounds existed (so does a codec trained before this module).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dedup.errors import GalleryError
from dedup.index.coarse import distances
from dedup.index.rotation import ivf_of, to_index_space

COS_GRID = (0.99, 0.98, 0.97, 0.96, 0.95, 0.94, 0.93, 0.92, 0.90, 0.88, 0.85, 0.80)
SAMPLE = 4096         # training templates measured (each gets one probe per grid point)
MEASURE_NPROBE = 16   # lists searched when measuring an estimate (LUT rounding spans the lists searched)
_CHUNK = 2048


@dataclass(frozen=True)
class SearchBounds:
    """Measured ``list_gap`` and ``est_error`` per grid cosine (see the module docstring)."""

    cos: tuple[float, ...]
    list_gap: tuple[float, ...]
    est_error: tuple[float, ...]
    pairs: int

    def at(self, threshold: float) -> tuple[float, float] | None:
        """``(list_gap, est_error)`` valid at ``threshold``, or ``None`` below the grid."""
        usable = [i for i, c in enumerate(self.cos) if c <= threshold + 1e-9]
        if not usable:
            return None
        i = max(usable, key=lambda j: self.cos[j])
        gap, err = self.list_gap[i], self.est_error[i]
        if not (math.isfinite(gap) and math.isfinite(err)):
            return None
        return gap, err

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @staticmethod
    def from_dict(data: Any, where: str) -> SearchBounds | None:
        """Bounds from a codec's metadata (``None`` when the codec predates them)."""
        if data is None:
            return None
        try:
            out = SearchBounds(tuple(float(c) for c in data["cos"]), tuple(float(g) for g in data["list_gap"]),
                               tuple(float(e) for e in data["est_error"]), int(data["pairs"]))
        except (TypeError, KeyError, ValueError) as exc:
            raise GalleryError(f"{where}: unreadable search bounds ({exc})") from None
        if not len(out.cos) == len(out.list_gap) == len(out.est_error):
            raise GalleryError(f"{where}: search bounds have mismatched lengths")
        return out


def measure_bounds(index: Any, sample: np.ndarray, seed: int = 1234) -> SearchBounds:
    """Measure ``list_gap`` and ``est_error`` of a trained, empty IVF-PQ ``index`` on ``sample``."""
    import faiss

    rng = np.random.default_rng([seed, 16])
    m = min(SAMPLE, sample.shape[0])
    base = np.ascontiguousarray(sample[rng.choice(sample.shape[0], size=m, replace=False)], dtype=np.float32)
    base /= np.maximum(np.linalg.norm(base, axis=1, keepdims=True), 1e-12)
    probe_index = faiss.clone_index(index)
    probe_index.add_with_ids(base, np.arange(m, dtype=np.int64))
    nlist = int(ivf_of(index).nlist)
    own = distances(index, base).argmin(axis=1)
    sizes = np.bincount(own, minlength=nlist)
    near = min(MEASURE_NPROBE, nlist)
    gaps, errors = [], []
    for cos in COS_GRID:
        # Half the probes move in a random direction, half towards another template (real
        # differences between captures follow the data's own directions, not isotropic noise).
        side = rng.standard_normal(base.shape).astype(np.float32)
        half = m // 2
        side[half:] = base[rng.permutation(m)[half:]] - base[half:]
        side -= np.einsum("ij,ij->i", side, base)[:, None] * base
        side /= np.maximum(np.linalg.norm(side, axis=1, keepdims=True), 1e-12)
        probes = np.ascontiguousarray(cos * base + math.sqrt(1.0 - cos * cos) * side, dtype=np.float32)
        true_sq = np.maximum(2.0 - 2.0 * np.einsum("ij,ij->i", probes, base), 0.0)
        gap, err = 0.0, 0.0
        for lo in range(0, m, _CHUNK):
            p = probes[lo:lo + _CHUNK]
            ids = np.arange(lo, lo + p.shape[0])
            rows = np.arange(p.shape[0])
            full = distances(index, p)
            own_d = full[rows, own[ids]]
            gap = max(gap, float((own_d - full.min(axis=1)).max()))
            # The estimate of each pair, in a search of its nearest lists with its own list last.
            visit = np.argpartition(full, near - 1, axis=1)[:, :near] if near < nlist else \
                np.tile(np.arange(nlist), (p.shape[0], 1))
            visit = np.where(visit == own[ids, None], -1, visit)
            visit[:, -1] = own[ids]
            vdist = np.where(visit >= 0, full[rows[:, None], np.maximum(visit, 0)], 0.0).astype(np.float32)
            k = int(min(m, max(1, (sizes[np.maximum(visit, 0)] * (visit >= 0)).sum(axis=1).max())))
            est, labels = search_preassigned(probe_index, p, k, visit, vdist)
            hit = labels == ids[:, None]
            if not hit.any(axis=1).all():
                err = math.inf  # cannot happen (every visited row is returned); fail closed if it does
                break
            # Squared-L2 excess: est^2 ~ true^2 + |x - x_hat|^2, nearly the same at every threshold.
            err = max(err, float((est[hit] - true_sq[ids]).max()))
        gaps.append(gap)
        errors.append(max(err, 0.0))
    # A bound at c must hold for every pair at or above c: running maxima from the top of the grid.
    gaps = list(np.maximum.accumulate(gaps))
    errors = list(np.maximum.accumulate(errors))
    return SearchBounds(COS_GRID, tuple(float(g) for g in gaps), tuple(float(e) for e in errors), m)


def search_preassigned(index: Any, probes: np.ndarray, k: int, lists: np.ndarray,
                       list_dist: np.ndarray, rotated: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """FAISS IVF search of given lists per probe (``-1`` skips a slot); thread-safe (the
    list count goes in the call's parameters, not on the shared index). ``index`` is the
    stored index and ``probes`` raw (a rotation is applied here) or, with ``rotated``, already
    in its space."""
    import faiss

    n = probes.shape[0]
    probes = np.ascontiguousarray(probes, dtype=np.float32) if rotated else to_index_space(index, probes)
    index = ivf_of(index)
    lists = np.ascontiguousarray(lists, dtype=np.int64)
    list_dist = np.ascontiguousarray(list_dist, dtype=np.float32)
    dist = np.empty((n, k), dtype=np.float32)
    labels = np.empty((n, k), dtype=np.int64)
    if n:
        index.search_preassigned_c(n, faiss.swig_ptr(probes), k, faiss.swig_ptr(lists), faiss.swig_ptr(list_dist),
                                   faiss.swig_ptr(dist), faiss.swig_ptr(labels), False,
                                   faiss.SearchParametersIVF(nprobe=int(lists.shape[1])))
    return dist, labels
