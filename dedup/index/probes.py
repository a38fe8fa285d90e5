"""The one probe check of every search (gallery IVF-PQ, exact torch, Dask shards).

Probes must be L2-normalised templates. The norm tolerance is 0.01, not tighter: templates
reach the searches through float16 storage, GPU float16 models and other systems' Parquet
files, whose norms legitimately drift by more than 1e-3 after rounding, while what the check
exists to catch (raw, unnormalised embeddings: norms of 5 to 50, or zero) is far outside it.
"""

from __future__ import annotations

import numpy as np

from dedup.errors import InvalidParameter

NORM_TOLERANCE = 1e-2


def check_probes(probes: np.ndarray, dim: int) -> np.ndarray:
    """Probes as contiguous float32 (n, dim) unit vectors (one 1-d probe is (1, dim)), or a clear error."""
    probes = np.asarray(probes)
    if probes.ndim == 1:
        probes = probes[None, :]
    if probes.ndim != 2 or probes.shape[1] != dim:
        raise InvalidParameter(f"probes must have shape (n, {dim}), got {probes.shape}")
    probes = np.ascontiguousarray(probes, dtype=np.float32)
    if probes.shape[0]:
        if not np.isfinite(probes).all():
            raise InvalidParameter("probes contain NaN or infinite values")
        norms = np.linalg.norm(probes, axis=1)
        if np.abs(norms - 1.0).max() > NORM_TOLERANCE:
            raise InvalidParameter(f"probes must be L2-normalised templates (a norm differs from 1 by more than {NORM_TOLERANCE:g})")
    return probes
