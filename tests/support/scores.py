"""Small helpers for score tests: unit vectors and every pair's score by brute force."""

from __future__ import annotations

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
    """Each row scaled to norm 1, as float32."""
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def brute_pairs(vectors: np.ndarray, ident: np.ndarray, group: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every pair i < j: (scores, is_impostor, group code (cross = n_groups), is_genuine)."""
    s = vectors @ vectors.T
    i, j = np.triu_indices(vectors.shape[0], k=1)
    n_groups = int(group.max()) + 1
    gcode = np.where(group[i] == group[j], group[i], n_groups)
    imp = ident[i] != ident[j]
    return s[i, j], imp, gcode, ~imp
