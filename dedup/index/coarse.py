"""The coarse step of IVF search: each probe's nearest lists, by matrix products of one shape.

The lists are chosen here, not by FAISS's flat quantizer, for one reason: the same probe
must get the same lists in any batch (a re-run after a crash, a deepening round of three
probes, a Dask task), and neither FAISS's search nor one large BLAS product guarantees that
(both round a probe's distances differently depending on the batch; measured on 3,000
probes against 2,048 centroids: every probe's distances moved in the last bits, and a few
in a thousand got another 64th list). Here the product runs in tiles of a fixed number of
probes (the last padded), so each probe's distances are computed the same way every time,
and the selection is per row. The tiles also stay in cache: at 2,048 lists, top 64, on
2 cores, this is about 3x faster than one product plus ``torch.topk`` (its earlier form).
The result is computed once per probe block and shared by every shard (they all use the
gallery's one codec). Distances are squared L2, as
FAISS reports them, so they can be handed to ``search_preassigned``. Each function takes
the stored index (with its rotation, ``dedup.index.rotation``) and raw probes, or probes
already in the index's space with ``rotated=True`` (a search rotates them once per shard).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from dedup.index.derived import derived
from dedup.index.rotation import ivf_of, to_index_space

_TILE_BYTES = 1 << 22  # a float32 coarse distance tile of about 4 MiB


def centroids(index: Any) -> tuple[np.ndarray, np.ndarray]:
    """The coarse centroids of an IVF index (float32, (nlist, d), in the index's space) and
    their squared norms."""
    return derived(index, "centroids", lambda: _read_centroids(index))


def _read_centroids(index: Any) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    quantizer = faiss.downcast_index(ivf_of(index).quantizer)
    cents = faiss.rev_swig_ptr(quantizer.get_xb(), quantizer.ntotal * quantizer.d)
    cents = np.array(cents, dtype=np.float32).reshape(quantizer.ntotal, quantizer.d)
    return cents, np.einsum("ij,ij->i", cents, cents).astype(np.float32)


def distances(index: Any, probes: np.ndarray, rotated: bool = False) -> np.ndarray:
    """Squared L2 distance of every probe to every centroid, (n, nlist) float32 (the same
    values the search's coarse step sees)."""
    probes = np.ascontiguousarray(probes, dtype=np.float32) if rotated else to_index_space(index, probes)
    out = np.empty((probes.shape[0], centroids(index)[0].shape[0]), dtype=np.float32)
    for lo, tile in _distance_tiles(index, probes):
        out[lo:lo + tile.shape[0]] = tile
    return out


def _rows_per_product(nlist: int) -> int:
    """Probes per coarse product: a fixed number per index, so every probe's distances come
    from a product of the same shape (BLAS rounds differently at other shapes, and a probe
    must get the same lists whichever batch it arrives in), and the tile stays in cache."""
    return max(32, min(256, _TILE_BYTES // (4 * nlist)))


def _distance_tiles(index: Any, coded: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """``(first probe, float32 distances of a tile of probes to every centroid)`` over
    ``coded`` (probes in the index's space). The product runs in float64 (BLAS's rounding
    differences between tile positions stay far below float32's step) in tiles of a fixed
    shape, the last one padded; the yielded array is reused by the next tile."""
    cents, norms = centroids(index)
    nlist, d = cents.shape
    # [p, 1, |p|^2] @ [-2 C^T; |c|^2; 1] = |p - c|^2 in one product.
    rhs = derived(index, "coarse-product", lambda: np.ascontiguousarray(np.vstack(
        [-2.0 * cents.T.astype(np.float64), norms[None, :].astype(np.float64), np.ones((1, nlist))])))
    rows = _rows_per_product(nlist)
    lhs = np.zeros((rows, d + 2), dtype=np.float64)
    tile = np.empty((rows, nlist), dtype=np.float64)
    dist = np.empty((rows, nlist), dtype=np.float32)
    wide = coded.astype(np.float64)
    probe_norms = np.einsum("ij,ij->i", wide, wide)
    for lo in range(0, coded.shape[0], rows):
        m = min(rows, coded.shape[0] - lo)
        lhs[:m, :d] = wide[lo:lo + m]
        lhs[:m, d] = 1.0
        lhs[:m, d + 1] = probe_norms[lo:lo + m]
        lhs[m:] = 0.0
        np.matmul(lhs, rhs, out=tile)
        dist[:] = tile
        yield lo, dist[:m]


def nearest_lists(index: Any, probes: np.ndarray, nprobe: int, rotated: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(distances, lists)`` of each probe's ``nprobe`` nearest lists, nearest first.

    A probe gets the same lists and distances in any batch (``_distance_tiles``; the
    selection is per row)."""
    probes = np.ascontiguousarray(probes, dtype=np.float32) if rotated else to_index_space(index, probes)
    n, nlist = probes.shape[0], centroids(index)[0].shape[0]
    nprobe = min(nprobe, nlist)
    out_d = np.empty((n, nprobe), dtype=np.float32)
    out_l = np.empty((n, nprobe), dtype=np.int64)
    for lo, here in _distance_tiles(index, probes):
        m = here.shape[0]
        pick = np.argpartition(here, nprobe - 1, axis=1)[:, :nprobe] if nprobe < nlist else \
            np.broadcast_to(np.arange(nlist), (m, nlist))
        vals = np.take_along_axis(here, pick, axis=1)
        order = np.argsort(vals, axis=1, kind="stable")
        out_l[lo:lo + m] = np.take_along_axis(pick, order, axis=1)
        out_d[lo:lo + m] = np.take_along_axis(vals, order, axis=1)
    return out_d, out_l
