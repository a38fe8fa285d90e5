"""The coarse step of IVF search: each probe's nearest lists, the same in any batch.

A probe must get the same lists and distances in any batch (a re-run after a crash, a
deepening round of three probes, a Dask task), and neither FAISS's quantizer nor a BLAS
product promises that: both round a probe's dot products differently depending on its place
in the product (measured on 3,000 probes against 2,048 centroids: every probe's distances
moved in the last bits, and a few in a thousand got another 64th list). So
``nearest_lists`` defines its answer exactly: a distance is the exact ``|p|^2 - 2 p.c +
|c|^2`` of the float32 probe and centroid (``|c|^2`` as stored) correctly rounded to float32,
and the lists are the ``nprobe`` smallest by (distance, list id). It takes two steps, since a
float64 product against every centroid costs about twice a float32 one:

1. A screen, one product per tile of probes. With few lists wanted it runs in float32, and
   every list within a rigorous bound of twice the float32 error (``_slack``) of the probe's
   ``nprobe``-th screened distance is a candidate: the exact top ``nprobe`` is among them
   however the product rounded. With many wanted, recomputing the candidates would cost more
   than float32 saves, and the screen is the float64 product itself.
2. The candidates' float64 distances (recomputed, or the float64 screen's), each within a
   rigorous error bound. Rounding is monotone: where both ends of the bound round alike, that
   is the float32 answer; elsewhere (a few in a million) the distance is summed exactly.

No rounding of either step reaches the result, so it is the same, bit for bit, with either
screen and in any batch. It is computed once per probe block and shared by every shard (they
all use the gallery's one codec). Distances are squared L2, as FAISS reports them, so they
can be handed to ``search_preassigned``. ``distances`` (the full matrix, for the bounds)
keeps the tiled float64 product rounded to float32: the same values but for a rare last bit.
Each function takes the stored index (with its rotation, ``dedup.index.rotation``) and raw
probes, or probes already in the index's space with ``rotated=True``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from dedup.index.derived import derived
from dedup.index.rotation import ivf_of, to_index_space

_TILE_BYTES = 1 << 22  # a float32 coarse distance tile of about 4 MiB
_GATHER_BYTES = 1 << 18  # candidate centroids gathered at once (float32 and float64 copies)
_U32 = 2.0 ** -24  # unit roundoff of float32
_U64 = 2.0 ** -53  # and of float64
_TINY = 2.0 ** -120  # per term, covers float32 underflow (flushed products lose < 2^-126 each)
# The float32 screen pays while each probe's candidates are at most this share of the lists
# (measured: at 2,048 lists, 8 of them wanted is well inside, 64 well outside).
_SCREEN32_SHARE = 1 / 100


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
    """Squared L2 distance of every probe to every centroid, (n, nlist) float32 (the float64
    product rounded: ``nearest_lists``'s values but for a rare last bit)."""
    probes = np.ascontiguousarray(probes, dtype=np.float32) if rotated else to_index_space(index, probes)
    out = np.empty((probes.shape[0], centroids(index)[0].shape[0]), dtype=np.float32)
    for lo, tile in _distance_tiles(index, probes):
        out[lo:lo + tile.shape[0]] = tile
    return out


def _rows_per_product(nlist: int) -> int:
    """Probes per coarse product: a fixed number per index, so every probe's ``distances``
    come from a product of the same shape (BLAS rounds differently at other shapes), and the
    tile stays in cache. ``nearest_lists`` needs no fixed shape but keeps the tiles (cache;
    at most 256 rows, which its sort keys rely on)."""
    return max(32, min(256, _TILE_BYTES // (4 * nlist)))


def _distance_tiles(index: Any, coded: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """``(first probe, float32 distances of a tile of probes to every centroid)`` over
    ``coded`` (probes in the index's space). The product runs in float64 (BLAS's rounding
    differences between tile positions stay far below float32's step) in tiles of a fixed
    shape, the last one padded; the yielded array is reused by the next tile."""
    nlist, d = centroids(index)[0].shape
    rhs = _product_rhs(index, np.float64)
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
    """``(distances, lists)`` of each probe's ``nprobe`` nearest lists, nearest first (ties
    by list id).

    A distance is the exact squared distance correctly rounded to float32, so a probe gets
    the same lists and distances in any batch (see the module docstring)."""
    probes = np.ascontiguousarray(probes, dtype=np.float32) if rotated else to_index_space(index, probes)
    return _nearest_lists(index, probes, nprobe)


def _nearest_lists(index: Any, coded: np.ndarray, nprobe: int,
                   screen: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``nearest_lists`` of probes in the index's space; ``screen`` (``"float32"`` or
    ``"float64"``; the tests force each) is chosen by cost when None. The result does not
    depend on it."""
    cents, norms = centroids(index)
    nlist, d = cents.shape
    if nlist > 1 << 24:
        raise ValueError(f"at most 2^24 coarse lists, got {nlist}")
    n, k = coded.shape[0], max(0, min(nprobe, nlist))
    out_d = np.empty((n, k), dtype=np.float32)
    out_l = np.empty((n, k), dtype=np.int64)
    if n == 0 or k == 0:
        return out_d, out_l
    wide = coded.astype(np.float64)
    sq = np.einsum("ij,ij->i", wide, wide)
    scale = _scale(index, sq)
    if not np.isfinite(scale).all():
        raise ValueError("probes must be finite")
    if screen is None:
        screen = "float32" if k + 2 <= _SCREEN32_SHARE * nlist else "float64"
    if screen == "float32" and not float(scale.max()) < 1e30:
        screen = "float64"  # float32's product could overflow
    # Any float64 evaluation of |p|^2 - 2 p.c + |c|^2 (here: the float64 screen, or the
    # recomputation) is within ``err`` of the exact value (``_scale``).
    err = 2.0 * (d + 6) * _U64 * scale
    slack = _slack(screen, d, scale, err)
    dtype = np.float32 if screen == "float32" else np.float64
    rhs = _product_rhs(index, dtype)
    rows = _rows_per_product(nlist)
    lhs = np.zeros((rows, d + 2), dtype=dtype)
    tile = np.empty((rows, nlist), dtype=dtype)
    for lo in range(0, n, rows):
        m = min(rows, n - lo)
        lhs[:m, :d] = coded[lo:lo + m]
        lhs[:m, d] = 1.0
        lhs[:m, d + 1] = sq[lo:lo + m]
        lhs[m:] = 0.0
        np.matmul(lhs, rhs, out=tile)
        here = tile[:m]
        r, c = np.divmod(np.flatnonzero(here <= _threshold(here, k, slack[lo:lo + m])[:, None]), nlist)
        counts = np.bincount(r, minlength=m)
        starts = np.cumsum(counts) - counts
        if screen == "float32":
            approx = _recomputed(cents, norms, wide[lo:lo + m], sq[lo:lo + m], r, c, counts, starts)
        else:
            approx = here[r, c]
        dist = _rounded(approx, err[lo + r], coded[lo:lo + m], r, cents, norms, c)
        # One sort of (row, distance, list) keys; each row's first k are its lists.
        keys = np.sort(_packed(r, dist, c))[starts[:, None] + np.arange(k)]
        out_d[lo:lo + m], out_l[lo:lo + m] = _unpacked(keys)
    return out_d, out_l


def _scale(index: Any, sq: np.ndarray) -> np.ndarray:
    """Per probe, ``A = |p|^2 + 2 |p| max|c| + max |c|^2`` (slightly inflated), which bounds
    both the sum of the magnitudes of the terms of the distance's dot product
    ``[p, 1, |p|^2] . [-2c, |c|^2, 1]`` (Cauchy-Schwarz) and the distance itself."""
    cmax, nmax = derived(index, "coarse-norm-bounds", lambda: _norm_bounds(index))
    return (sq + 2.0 * np.sqrt(sq) * cmax + nmax) * (1.0 + 1e-6)


def _norm_bounds(index: Any) -> tuple[float, float]:
    cents, norms = centroids(index)
    wide = cents.astype(np.float64)
    return (math.sqrt(float(np.einsum("ij,ij->i", wide, wide).max(initial=0.0))) * (1.0 + 1e-6),
            float(norms.max(initial=0.0)))


def _slack(screen: str, d: int, scale: np.ndarray, err: np.ndarray) -> np.ndarray:
    """How far above a probe's ``nprobe``-th screened distance a list stays a candidate.

    The standard bound for a dot product of n = d + 2 terms, in any order, with or without
    FMA (Higham, Accuracy and Stability, 3.1): |fl(a.b) - a.b| <= gamma_n sum |a_i b_i|,
    gamma_n = n u / (1 - n u). Here sum |a_i b_i| <= A (``_scale``); float32's |p|^2 in the
    product adds u A, and products that underflow float32 add < 2^-126 each. So a float32
    screened distance is within e32 = (n + 2) u32 A + n 2^-120 of the exact one (n u32 <<
    1), and a float64 one within ``err``. If list j is not a candidate, its screened value
    exceeds the threshold T + slack while at least ``nprobe`` lists i have screened values
    <= T, so D_j - D_i > slack - 2e. Two values that round to the same float32 differ by at
    most one float32 step, <= 2^-23 A; a slack of 2e + 2^-22 A + n 2^-120 therefore makes
    every such i strictly nearer than j after rounding, whatever the tie rule, and j cannot
    be among the ``nprobe`` nearest. Below: twice that for float32 (extra candidates cost
    little)."""
    n = d + 2
    if screen == "float32":
        return 4.0 * (n + 4) * _U32 * scale + n * _TINY
    if screen == "float64":
        return 2.0 * err + 2.0 ** -21 * scale + n * _TINY
    raise ValueError(f"screen must be float32 or float64, got {screen!r}")


def _product_rhs(index: Any, dtype: type) -> np.ndarray:
    """``[-2 C^T; |c|^2; 1]``: ``[p, 1, |p|^2]`` times it is ``|p - c|^2`` in one product."""
    cents, norms = centroids(index)
    name = "coarse-product" if dtype is np.float64 else "coarse-product-float32"
    return derived(index, name, lambda: np.ascontiguousarray(np.vstack(
        [-2.0 * cents.T.astype(dtype), norms[None, :].astype(dtype), np.ones((1, cents.shape[0]), dtype=dtype)])))


def _threshold(here: np.ndarray, k: int, slack: np.ndarray) -> np.ndarray:
    """Per row, a value (``here``'s dtype) at or above the row's ``k``-th smallest plus
    ``slack``: every list at or below it is a candidate.

    The ``k``-th smallest of a subset of a row's values is at least the row's ``k``-th
    smallest, so it may be taken among the minima of groups of a few lists (at least 4k
    groups: a partition over fewer values, and few extra candidates)."""
    m, nlist = here.shape
    if k >= nlist:
        return np.full(m, np.inf, dtype=here.dtype)
    g = max(1, min(8, nlist // (4 * k)))
    width = nlist // g
    least = here[:, :width]
    for t in range(1, g):
        least = np.minimum(least, here[:, t * width:(t + 1) * width], out=None if t == 1 else least)
    kth = np.partition(least, k - 1, axis=1)[:, k - 1].astype(np.float64)
    above = np.nextafter(kth + slack, np.inf)  # the sum rounded up
    if here.dtype == np.float64:
        return above
    narrow = above.astype(np.float32)
    return np.where(narrow < above, np.nextafter(narrow, np.float32(np.inf)), narrow)


def _recomputed(cents: np.ndarray, norms: np.ndarray, wide: np.ndarray, sq: np.ndarray, r: np.ndarray,
                c: np.ndarray, counts: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The float64 distance of each candidate (row ``r`` of ``wide``, list ``c``; rows in
    order, ``counts`` and ``starts`` per row), as ``|p|^2 + |c|^2 - 2 p.c``. The candidates
    are laid out one row of slots per probe (short rows padded with a real list) and their
    centroids gathered a block of about ``_GATHER_BYTES`` at a time."""
    m, d = wide.shape
    kmax = int(counts.max())
    pos = np.arange(r.size) - starts[r]
    slots = np.empty((m, kmax), dtype=np.intp)
    slots[:] = c[np.minimum(starts, r.size - 1)][:, None]
    slots[r, pos] = c
    dots = np.empty((m, kmax), dtype=np.float64)
    pairs = max(1, _GATHER_BYTES // (12 * d))
    rows, width = max(1, pairs // kmax), min(kmax, pairs)
    for s in range(0, m, rows):
        e = min(m, s + rows)
        for t in range(0, kmax, width):
            u = min(kmax, t + width)
            block = np.take(cents, slots[s:e, t:u], axis=0).astype(np.float64)
            dots[s:e, t:u] = np.matmul(block, wide[s:e, :, None])[..., 0]
    return (sq[r] + norms[c].astype(np.float64)) - 2.0 * dots[r, pos]


def _rounded(approx: np.ndarray, err: np.ndarray, coded: np.ndarray, r: np.ndarray, cents: np.ndarray,
             norms: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The exact distances correctly rounded to float32, from float64 values ``approx``
    within ``err`` of them: rounding is monotone, so where both ends of the interval round
    alike that is the answer; elsewhere (rare) the distance is summed exactly."""
    down = np.nextafter(approx - err, -np.inf).astype(np.float32)
    up = np.nextafter(approx + err, np.inf).astype(np.float32)
    for q in np.flatnonzero(down != up):
        down[q] = _exactly_rounded(coded[r[q]], cents[c[q]], norms[c[q]])
    return down


def _exactly_rounded(p: np.ndarray, cent: np.ndarray, norm: np.float32) -> np.float32:
    """``|p|^2 - 2 p.c + norm`` correctly rounded to float32. Each term is exact in float64
    (a product of two float32 values has at most 48 significant bits), ``math.fsum`` rounds
    their sum correctly to float64, and rounding that again to float32 errs only where it
    falls exactly halfway between two float32 values (then the sign of the rest decides)."""
    p64, c64 = p.astype(np.float64), cent.astype(np.float64)
    terms = [*(p64 * p64).tolist(), *(-2.0 * p64 * c64).tolist(), float(norm)]
    near = math.fsum(terms)
    f = np.float32(near)
    if float(f) != near and math.isfinite(near):
        other = np.nextafter(f, np.float32(np.inf if near > float(f) else -np.inf))
        if (float(f) + float(other)) / 2.0 == near:
            rest = math.fsum([*terms, -near])
            if rest != 0.0 and (rest > 0.0) == (float(other) > float(f)):
                f = other
    return np.float32(f)


def _packed(r: np.ndarray, dist: np.ndarray, c: np.ndarray) -> np.ndarray:
    """A uint64 per candidate ordered as (row, distance, list): 8 bits of row (a tile has at
    most 256), a float32's 32 bits mapped to an order-preserving unsigned integer (-0.0 as
    0.0), 24 bits of list id."""
    bits = (dist + np.float32(0.0)).view(np.uint32)
    mono = np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000)).astype(np.uint64)
    return (r.astype(np.uint64) << np.uint64(56)) | (mono << np.uint64(24)) | c.astype(np.uint64)


def _unpacked(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(distances, lists)`` back from ``_packed`` keys."""
    mono = ((keys >> np.uint64(24)) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    bits = np.where(mono >> 31, mono ^ np.uint32(0x80000000), ~mono)
    return bits.view(np.float32), (keys & np.uint64(0xFFFFFF)).astype(np.int64)
