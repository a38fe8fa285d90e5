"""Exact torch threshold search equals exact FAISS (IndexFlatIP range search) on the CPU.

The compute dtype float16 runs the same proposal/re-score code the GPU runs, so the
float16 margins are checked here on every machine.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dedup.errors import InsufficientResources, InvalidParameter
from dedup.index.exact import (
    ExactConfig,
    ExactIndex,
    choose_device,
    cuda_available,
    exact_search,
    faiss_gpu_count,
    faiss_index_to_gpu,
    resolve_device,
)
from dedup.index.results import Candidates

TOL = 1e-5


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(seed: int, n: int, d: int, q: int, spread: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """Gallery rows around a few centres (so probes have many rows near any threshold) and
    probes that are noisy copies of gallery rows."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((8, d)))
    g = unit(centres[rng.integers(0, 8, n)] + spread * rng.standard_normal((n, d)) / np.sqrt(d))
    p = unit(g[rng.integers(0, n, q)] + 0.2 * rng.standard_normal((q, d)) / np.sqrt(d))
    return g, p


def faiss_reference(stored: np.ndarray, row_ids: np.ndarray, probes: np.ndarray, threshold: float,
                    k: int, removed: np.ndarray | None = None) -> Candidates:
    """Exact FAISS range search over the stored vectors widened to float32, capped like ours
    (``removed``: positions never returned)."""
    index = faiss.IndexFlatIP(stored.shape[1])
    index.add(np.asarray(stored, dtype=np.float32))
    lims, dist, ids = index.range_search(probes, threshold - 1e-3)
    probe = np.repeat(np.arange(probes.shape[0]), np.diff(lims).astype(np.int64))
    keep = dist >= threshold
    if removed is not None and removed.size:
        keep &= ~np.isin(ids, removed)
    return Candidates.from_pairs(probes.shape[0], probe[keep], row_ids[ids[keep]], dist[keep], k)


def assert_same(got: Candidates, want: Candidates, threshold: float, k: int) -> None:
    """Same candidates per probe, scores within TOL; rows within TOL of the threshold (or of a
    capped probe's last kept score) may differ; same capped flags away from those edges."""
    assert got.n_probes == want.n_probes
    for i in range(got.n_probes):
        gr, gs = got.of(i)
        wr, ws = want.of(i)
        assert np.all(gs >= threshold)
        assert np.all(np.diff(gs) <= 0), "scores must be sorted descending"
        edge = threshold
        if want.capped[i]:
            edge = max(threshold, float(ws[-1]))
        g_map, w_map = dict(zip(gr.tolist(), gs.tolist())), dict(zip(wr.tolist(), ws.tolist()))
        for r in set(g_map) | set(w_map):
            if r in g_map and r in w_map:
                assert abs(g_map[r] - w_map[r]) <= TOL, (i, r)
            else:
                s = g_map.get(r, w_map.get(r))
                assert abs(s - edge) <= TOL, f"probe {i}: row {r} (score {s}) found by only one search"
        if not want.capped[i] or abs(float(ws[-1]) - threshold) > TOL:
            assert got.capped[i] == want.capped[i], i


@pytest.mark.parametrize("seed,dim,storage,compute,chunk,block", [
    (0, 128, "float32", "float32", 1000, 64),
    (1, 128, "float16", "float32", 777, 100),
    (2, 64, "float16", "float16", 999, 33),
    (3, 512, "float32", "float16", 1234, 250),
    (4, 32, "float16", "float16", 5000, 1),
])
def test_exact_equals_faiss_flat(seed: int, dim: int, storage: str, compute: str, chunk: int, block: int) -> None:
    g, p = clustered(seed, 4003, dim, 120)
    stored = g.astype(storage)
    rows = np.random.default_rng(seed).permutation(4003).astype(np.int64) * 7 + 3
    scores = p @ stored.astype(np.float32).T
    threshold = float(np.quantile(scores, 0.995))  # ~20 rows per probe, many near the threshold
    k = 15
    got = exact_search(stored, rows, p, threshold, k, device="cpu", chunk_rows=chunk, probe_block=block, dtype=compute)
    want = faiss_reference(stored, rows, p, threshold, k)
    assert want.capped.any() and not want.capped.all()  # the data exercises both cases
    assert_same(got, want, threshold, k)


def test_capped_probe_keeps_the_highest() -> None:
    g, p = clustered(7, 3001, 64, 5, spread=0.15)
    rows = np.arange(3001, dtype=np.int64)
    threshold, k = 0.0, 10
    got = exact_search(g, rows, p, threshold, k, device="cpu", chunk_rows=500, dtype="float16")
    want_all = faiss_reference(g, rows, p, threshold, 10**6)
    for i in range(p.shape[0]):
        assert want_all.counts()[i] > k
        assert got.capped[i] and got.counts()[i] == k
        wr, ws = want_all.of(i)
        gr, gs = got.of(i)
        np.testing.assert_allclose(gs, ws[:k], atol=TOL)
        assert set(gr.tolist()) == set(wr[:k].tolist())


def test_ties_keep_lowest_row_ids_across_chunks() -> None:
    rng = np.random.default_rng(3)
    d = 16
    g = unit(rng.standard_normal((200, d)))
    twin = g[0].copy()
    copies = np.arange(0, 200, 20)            # 10 identical rows spread over several chunks
    g[copies] = twin
    rows = rng.permutation(200).astype(np.int64) + 1000
    got = exact_search(g, rows, twin[None, :], 0.999, 4, device="cpu", chunk_rows=37)
    assert got.capped[0]
    assert got.row_ids.tolist() == sorted(rows[copies].tolist())[:4]


def test_memmap_float16_and_removed_rows(tmp_path: Path) -> None:
    g, p = clustered(9, 2500, 128, 40)
    path = tmp_path / "vectors.bin"
    g.astype("<f2").tofile(path)
    mm = np.memmap(path, dtype="<f2", mode="r", shape=g.shape)
    rows = np.arange(2500, dtype=np.int64) + 10
    removed_pos = np.arange(0, 2500, 3)
    threshold = float(np.quantile(p @ g.T, 0.99))
    got = exact_search(mm, rows, p, threshold, 50, device="cpu", chunk_rows=600, removed=removed_pos)
    want = faiss_reference(mm, rows, p, threshold, 50, removed=removed_pos)
    assert want.counts().sum() > 0
    assert not np.isin(got.row_ids, rows[removed_pos]).any()
    assert_same(got, want, threshold, 50)


def test_resident_index_serves_many_searches() -> None:
    g, p = clustered(12, 1500, 64, 30)
    rows = np.arange(1500, dtype=np.int64)
    index = ExactIndex(g, rows, device="cpu", resident=True, config=ExactConfig(chunk_rows=400, probe_block=7))
    for threshold in (0.9, 0.95):
        assert_same(index.search(p, threshold, 30), faiss_reference(g, rows, p, threshold, 30), threshold, 30)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 200),
    q=st.integers(1, 12),
    k=st.integers(1, 8),
    chunk=st.integers(4, 120),
    block=st.integers(1, 9),
    quantile=st.floats(0.5, 1.0),
    half=st.booleans(),
)
def test_property_equals_bruteforce(seed: int, n: int, q: int, k: int, chunk: int, block: int,
                                    quantile: float, half: bool) -> None:
    rng = np.random.default_rng(seed)
    g, p = unit(rng.standard_normal((n, 8))), unit(rng.standard_normal((q, 8)))
    rows = rng.permutation(n).astype(np.int64)
    threshold = float(np.quantile(p @ g.T, quantile))
    got = exact_search(g, rows, p, threshold, k, device="cpu", chunk_rows=chunk, probe_block=block,
                       dtype="float16" if half else "float32")
    assert_same(got, faiss_reference(g, rows, p, threshold, k), threshold, k)


def test_empty_inputs() -> None:
    g = unit(np.random.default_rng(0).standard_normal((10, 8)))
    assert exact_search(g, np.arange(10), np.zeros((0, 8), np.float32), 0.5, 3, device="cpu").n_probes == 0
    out = exact_search(g[:0], np.arange(0), g[:2], 0.5, 3, device="cpu")
    assert out.n_probes == 2 and out.counts().sum() == 0


def test_clear_errors() -> None:
    g = unit(np.random.default_rng(0).standard_normal((10, 8)))
    rows = np.arange(10)
    with pytest.raises(InvalidParameter, match="L2-normalised"):
        exact_search(g, rows, g[:2] * 3, 0.5, 3, device="cpu")
    with pytest.raises(InvalidParameter, match=r"shape \(n, 8\)"):
        exact_search(g, rows, g[:, :4], 0.5, 3, device="cpu")
    with pytest.raises(InvalidParameter, match="row_ids"):
        exact_search(g, rows[:5], g[:2], 0.5, 3, device="cpu")
    with pytest.raises(InvalidParameter, match="device"):
        exact_search(g, rows, g[:2], 0.5, 3, device="tpu")
    with pytest.raises(InvalidParameter, match="max_candidates"):
        exact_search(g, rows, g[:2], 0.5, 0, device="cpu")


@pytest.mark.skipif(cuda_available(), reason="checks the behaviour of machines without a GPU")
def test_no_gpu_gives_clear_error_or_cpu() -> None:
    g = unit(np.random.default_rng(0).standard_normal((10, 8)))
    with pytest.raises(InsufficientResources, match="--device cpu"):
        exact_search(g, np.arange(10), g[:2], 0.5, 3, device="cuda")
    with pytest.raises(InsufficientResources):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
    assert choose_device("auto", 10**6, 128, "float16") == "cpu"
    with pytest.raises(InsufficientResources):
        choose_device("cuda", 10, 8, "float16")


@pytest.mark.skipif(faiss_gpu_count() > 0, reason="checks the behaviour of faiss without GPU support")
def test_faiss_gpu_path_falls_back_or_explains() -> None:
    index = faiss.IndexFlatIP(8)
    same, where = faiss_index_to_gpu(index, "auto")
    assert same is index and where == "cpu"
    with pytest.raises(InsufficientResources, match=r"\.\[gpu\]"):
        faiss_index_to_gpu(index, "cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU")
def test_cuda_equals_cpu() -> None:
    g, p = clustered(21, 50_000, 128, 300)
    rows = np.arange(50_000, dtype=np.int64)
    threshold = float(np.quantile(p @ g.T, 0.999))
    got = exact_search(g.astype(np.float16), rows, p, threshold, 25, device="cuda", chunk_rows=8192)
    want = exact_search(g.astype(np.float16), rows, p, threshold, 25, device="cpu")
    assert_same(got, want, threshold, 25)
