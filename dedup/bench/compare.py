"""The comparison half of `dedup bench`: engines built, tuned to dedup's recall, timed in turn.

Order of work: dedup's search is scored once on every probe (its recall is the target);
each comparison engine is built, then swept (``dedup.bench.baselines``) to the first
setting that reaches that recall; then all engines, dedup and dedup's fixed search (every
one of its lists for every probe: no list gap, no bounds; ``missed_vs_fixed_search``
counts the pairs it finds that dedup does not) included, are timed in interleaved passes
(``dedup.bench.timing``). Recall, FPIR and missed pairs come from the untimed scoring runs
over the same probes as the timed ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from dedup.bench.baselines import ExactEngine, FaissRefineEngine, HnswEngine
from dedup.bench.timing import interleave
from dedup.index.gallery import Gallery
from dedup.index.params import SearchParams
from dedup.index.results import Candidates

HNSW_SWEEP_PROBES = 2_000


def compare(gallery: Gallery, probes: np.ndarray, params: SearchParams, score: Callable[..., dict[str, Any]],
            engines: tuple[str, ...], vectors: np.ndarray | None, row_ids: np.ndarray | None,
            hnsw_blocks: Callable[[], Any] | None, probe_block: int, exact_queries: int, passes: int,
            hnsw_m: int = 16, hnsw_ef_construction: int = 80, seed: int = 0,
            stage: Callable[[str, int], Callable[[int], None]] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(dedup's figures, {engine: figures})``; ``score(found, probe_subset=q)`` gives recall etc."""
    stage = stage or (lambda name, total: (lambda n: None))
    q = probes.shape[0]
    configured = gallery.with_measured(dataclasses.replace(params, recall_target=0.0))
    params = gallery.with_measured(params)
    # The search before any pruning: every one of its nprobe lists, every proposal re-ranked.
    fixed = dataclasses.replace(params, early_exit=False, list_gap=None)
    advance = stage("search (dedup)", q)
    found = gallery.search(probes, params, block=probe_block, progress=advance)
    found_fixed = gallery.search(probes, fixed, block=probe_block)
    dedup = score(found)
    dedup["missed_vs_fixed_search"] = _missed(found_fixed, found)
    target = dedup["duplicate_recall"]

    runs: dict[str, tuple[Callable[[], Any], int]] = {
        "dedup": (lambda: gallery.search(probes, params, block=probe_block), q),
        "dedup-fixed": (lambda: gallery.search(probes, fixed, block=probe_block), q),
    }
    ram = gallery.stats()["index_bytes_per_template"]
    out: dict[str, Any] = {"dedup-fixed": {**score(found_fixed), "ram_bytes_per_template": ram,
                                           "search": f"all {params.nprobe} lists for every probe, no bounds"}}
    if params.nprobe_source == "measured":
        # What the measured list count changed: the same search at the configured nprobe.
        runs["dedup-configured-nprobe"] = (lambda: gallery.search(probes, configured, block=probe_block), q)
        out["dedup-configured-nprobe"] = {**score(gallery.search(probes, configured, block=probe_block)),
                                          "search": f"the configured nprobe {configured.nprobe}",
                                          "nprobe": configured.nprobe, "ram_bytes_per_template": ram}
    described: dict[str, dict[str, Any]] = {}
    if "exact" in engines:
        assert vectors is not None and row_ids is not None
        eq = min(exact_queries, q)
        exact = ExactEngine(vectors, row_ids, params)
        stage(f"exact ({eq} probes)", 1)
        # Calibrated on the very probes it is timed on: FAISS's knn takes a slower, non-BLAS
        # path below about 1,000 probes x 128-d, so a small calibration set picks wrongly.
        exact.calibrate(probes[:eq])
        out["exact"] = score(exact.search(probes[:eq]), probe_subset=eq)
        sub = probes[:eq]
        runs["exact"] = (lambda: exact.search(sub), eq)
        described["exact"] = exact.describe()
    if "faiss-refine" in engines:
        assert vectors is not None and row_ids is not None and gallery.codec is not None
        stage("faiss-refine build", 1)
        refine = FaissRefineEngine(gallery.codec.trained, vectors, row_ids, params, gallery.codec.spec.code_bytes)
        refine.tune(lambda c: score(c)["duplicate_recall"], probes, target)
        out["faiss-refine"] = score(refine.search(probes))
        runs["faiss-refine"] = (lambda: refine.search(probes), q)
        described["faiss-refine"] = refine.describe()
    if "hnsw" in engines:
        assert hnsw_blocks is not None
        hq = min(HNSW_SWEEP_PROBES, q)
        stage("hnsw build", 1)
        hnsw = HnswEngine(hnsw_blocks, len(gallery), gallery.dim, params, hnsw_m, hnsw_ef_construction, seed)
        sub_h = probes[:hq]
        hnsw_target = score(_head(found, hq), probe_subset=hq)["duplicate_recall"]
        hnsw.tune(lambda c: score(c, probe_subset=hq)["duplicate_recall"], sub_h, hnsw_target)
        out["hnsw"] = {**score(hnsw.search(sub_h), probe_subset=hq), "target_recall": hnsw_target}
        runs["hnsw"] = (lambda: hnsw.search(sub_h), hq)
        described["hnsw"] = hnsw.describe()

    stage(f"timing ({passes} interleaved passes)", 1)
    timed = interleave(runs, passes=passes)
    dedup.update(timed.pop("dedup"))
    for name, t in timed.items():
        out[name].update(t)
        out[name].update(described.get(name, {}))
        out[name]["probes"] = runs[name][1]
        out[name]["speedup_of_dedup"] = dedup["probes_per_s"] / t["probes_per_s"]
        out[name]["speedup_of_dedup_median"] = dedup["probes_per_s_median"] / t["probes_per_s_median"]
    return dedup, out


def _head(found: Candidates, q: int) -> Candidates:
    """The first ``q`` probes of a result."""
    end = int(found.offsets[q])
    return Candidates(found.offsets[:q + 1].copy(), found.row_ids[:end], found.scores[:end], found.capped[:q],
                      found.searched_depth[:q])


def _missed(reference: Candidates, found: Candidates) -> int:
    """(probe, row) pairs at or above the threshold in ``reference`` that ``found`` lacks."""
    ref = set(zip(reference.probe_index().tolist(), reference.row_ids.tolist()))
    got = set(zip(found.probe_index().tolist(), found.row_ids.tolist()))
    return len(ref - got)
