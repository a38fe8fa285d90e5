"""One-to-many searches over nested galleries equal a brute-force computation."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dedup.evaluation.identification import _rechunk, fnir_at, fnir_at_fpir, fpir_at, rank1, search_prefixes, split_for_search
from tests.support.scores import unit


def _data(seed: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    d = 12
    gal_id = np.arange(900)
    gal_id[700:] = rng.integers(0, 700, 200)             # some identities enrolled twice
    base = rng.standard_normal((900, d)) + 2.0
    gal = base[gal_id] + 0.3 * rng.standard_normal((900, d))
    probe_id = np.concatenate([rng.integers(0, 900, 400), 10_000 + np.arange(1500)])
    probe_base = np.concatenate([base[probe_id[:400]], rng.standard_normal((1500, d)) + 2.0])
    probes = probe_base + 0.3 * rng.standard_normal((1900, d))
    return unit(gal), gal_id.astype(np.int64), unit(probes), probe_id.astype(np.int64)


def test_search_prefixes_equals_brute_force() -> None:
    gal, gal_id, probes, probe_id = _data()
    sizes = [50, 333, 900]
    blocks = ((gal[a:a + 128], gal_id[a:a + 128]) for a in range(0, 900, 128))
    out = search_prefixes(probes, probe_id, blocks, sizes, chunk_elements=1900 * 70)
    full = probes.astype(np.float64) @ gal.astype(np.float64).T
    for s, n in enumerate(sizes):
        is_mate = probe_id[:, None] == gal_id[None, :n]
        mated = is_mate.any(axis=1)
        mate = np.where(is_mate, full[:, :n], -np.inf).max(axis=1)
        nonmate = np.where(is_mate, -np.inf, full[:, :n]).max(axis=1)
        assert np.array_equal(out.mated(s), mated)
        assert np.allclose(out.mate[s][mated], mate[mated], atol=1e-5)
        assert np.allclose(out.nonmate[s], nonmate, atol=1e-5)
        t = 0.97
        fp, n_nm = fpir_at(out, s, t)
        miss, n_m = fnir_at(out, s, t)
        assert (n_nm, n_m) == (int((~mated).sum()), int(mated.sum()))
        assert fp == int((out.nonmate[s][~mated] >= t).sum())
        assert miss == int((out.mate[s][mated] < t).sum())
        hits, _ = rank1(out, s)
        assert hits == int((out.mate[s][mated] > out.nonmate[s][mated]).sum())
    # FNIR at FPIR by hand for the largest gallery.
    pts = {p.fpir_target: p for p in fnir_at_fpir(out, [0.003, 0.01]) if p.gallery_size == 900}
    m = out.mated(2)
    nm_sorted = np.sort(out.nonmate[2][~m])[::-1]
    for target, p in pts.items():
        k = math.floor(target * nm_sorted.size + 1e-9)
        t = float(np.nextafter(nm_sorted[k], np.float32(np.inf)))
        assert p.threshold == t
        assert p.fpir == np.count_nonzero(nm_sorted >= t) / nm_sorted.size <= target
        assert p.fnir == np.count_nonzero(out.mate[2][m] < t) / m.sum()


def test_too_few_nonmated_searches_give_no_number() -> None:
    gal, gal_id, probes, probe_id = _data()
    out = search_prefixes(probes[:450], probe_id[:450], [(gal, gal_id)], [900])
    p = fnir_at_fpir(out, [0.001])[0]
    assert p.fnir is None and "non-mated" in p.note


@given(st.lists(st.integers(1, 40), min_size=1, max_size=8), st.integers(1, 17), st.data())
@settings(max_examples=100, deadline=None)
def test_rechunk_covers_in_order_and_cuts_at_sizes(blocks: list[int], step: int, data: st.DataObject) -> None:
    total = sum(blocks)
    sizes = sorted(set(data.draw(st.lists(st.integers(1, total), min_size=1, max_size=5))))
    pos = 0
    stream = []
    for b in blocks:
        stream.append((np.arange(pos, pos + b)[:, None].astype(np.float32), np.arange(pos, pos + b)))
        pos += b
    seen = []
    ends = []
    for v, ident in _rechunk(stream, step, sizes):
        assert 0 < v.shape[0] <= step
        seen.extend(ident.tolist())
        ends.append(len(seen))
    assert seen == list(range(total))
    assert set(sizes) <= set(ends)


def test_split_enrols_one_capture_and_searches_another() -> None:
    ident = np.array([0, 0, 1, 2, 2, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
    split = split_for_search(ident, max_searches=100, rng=np.random.default_rng(0))
    pool_ids = ident[split.pool]
    assert len(set(pool_ids.tolist())) == pool_ids.size           # one enrolment per identity
    probes = ident[split.probes]
    mated = np.isin(probes, pool_ids)
    assert set(probes[mated].tolist()) == {0, 2}
    assert not set(split.pool.tolist()) & set(split.probes.tolist())
    assert (~mated).sum() == int(10 * 0.25)                       # a quarter of single-capture identities
