"""Fixtures for the evaluation tests: small labelled sets with known structure."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.scores import unit


@pytest.fixture
def small_set() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """300 templates of 16-d with a shared mean direction, 3 groups, some identities repeated."""
    rng = np.random.default_rng(7)
    n_id = 220
    base = rng.standard_normal((n_id, 16)) * 0.6 + np.r_[3.0, np.zeros(15)]
    group_of_id = rng.integers(0, 3, n_id)
    ident = np.concatenate([np.arange(n_id), rng.integers(0, n_id, 80)])
    vectors = unit(base[ident] + 0.25 * rng.standard_normal((ident.size, 16)))
    # Components on a 1/32 grid: every inner product is exact in float32 whatever the
    # summation order, so blocked and brute-force scores are the same numbers.
    vectors = (np.round(vectors * 32) / 32).astype(np.float32)
    return vectors, ident.astype(np.int64), group_of_id[ident].astype(np.int16)
