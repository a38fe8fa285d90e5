"""The coarse step of IVF search: each probe's nearest lists, one matrix product per block.

FAISS's flat quantizer keeps a heap per probe; for a few thousand centroids a single BLAS
product plus ``torch.topk`` is cheaper (measured at 2,048 lists, top 48, blocks of 4,096
probes on 2 cores: about 1.5x), and the result is computed once per probe block and shared
by every shard (they all use the gallery's one codec). Distances are squared L2, as
FAISS reports them, so they can be handed to ``search_preassigned``. Each function takes
the stored index (with its rotation, ``dedup.index.rotation``) and raw probes, or probes
already in the index's space with ``rotated=True`` (a search rotates them once per shard).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dedup.index.rotation import ivf_of, to_index_space

# index object id -> (index, centroids, squared norms); the index is held so the id stays its own.
_CENTROIDS: dict[int, tuple[Any, np.ndarray, np.ndarray]] = {}
_MAX_CACHED = 64


def centroids(index: Any) -> tuple[np.ndarray, np.ndarray]:
    """The coarse centroids of an IVF index (float32, (nlist, d), in the index's space) and
    their squared norms."""
    import faiss

    hit = _CENTROIDS.get(id(index))
    if hit is not None and hit[0] is index:
        return hit[1], hit[2]
    quantizer = faiss.downcast_index(ivf_of(index).quantizer)
    cents = faiss.rev_swig_ptr(quantizer.get_xb(), quantizer.ntotal * quantizer.d)
    cents = np.array(cents, dtype=np.float32).reshape(quantizer.ntotal, quantizer.d)
    norms = np.einsum("ij,ij->i", cents, cents).astype(np.float32)
    if len(_CENTROIDS) >= _MAX_CACHED:
        _CENTROIDS.clear()
    _CENTROIDS[id(index)] = (index, cents, norms)
    return cents, norms


def distances(index: Any, probes: np.ndarray, rotated: bool = False) -> np.ndarray:
    """Squared L2 distance of every probe to every centroid, (n, nlist) float32."""
    cents, norms = centroids(index)
    probes = np.ascontiguousarray(probes, dtype=np.float32) if rotated else to_index_space(index, probes)
    out = probes @ cents.T
    out *= -2.0
    out += norms[None, :]
    out += np.einsum("ij,ij->i", probes, probes)[:, None]
    return out


def nearest_lists(index: Any, probes: np.ndarray, nprobe: int, rotated: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(distances, lists)`` of each probe's ``nprobe`` nearest lists, nearest first."""
    import torch

    nlist = int(ivf_of(index).nlist)
    nprobe = min(nprobe, nlist)
    d = torch.from_numpy(distances(index, probes, rotated))
    if nprobe == nlist:
        vals, idx = torch.sort(d, dim=1)
    else:
        vals, idx = torch.topk(d, nprobe, dim=1, largest=False, sorted=True)
    return vals.numpy(), idx.numpy().astype(np.int64)
