"""``dedup bench``: build a synthetic gallery with planted duplicates, search it, compare.

Reports, for dedup's sharded IVF-PQ gallery and for the comparison engines in the same
run (exact FAISS flat always, hnswlib optionally): build times, RAM and disk per template,
probes per second, ``duplicate_recall`` and false candidates per probe.

``duplicate_recall`` = (mated probe, mate row) pairs returned with exact score >= threshold,
divided by the pairs whose exact score (float32, computed directly) is >= threshold.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
import tomllib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from dedup.bench.synth import BLOCK, Probes, SyntheticData, SynthSpec, get_profile
from dedup.config import IndexSettings, Settings
from dedup.errors import BadInput, InvalidParameter
from dedup.index.codec import CodecSpec, choose_pq_m, fit_nlist
from dedup.index.gallery import Gallery
from dedup.index.memory import Budget, check_fits, gallery_budget
from dedup.index.params import SearchParams
from dedup.index.results import Candidates
from dedup.machine import machine_info

ENGINES = ("flat", "hnsw")


@dataclass(frozen=True)
class BenchSpec:
    """One scale test. ``None`` fields take the profile's or the settings' defaults."""

    gallery_size: int = 100_000
    queries: int = 2_000
    profile: str = "face-like"
    dim: int | None = None
    threshold: float | None = None
    shards: int = 1
    compare: tuple[str, ...] = ("flat",)
    seed: int = 0
    duplicate_rate: float = 0.01
    mated_fraction: float = 0.5
    nlist: int | None = None
    nprobe: int | None = None
    depth: int | None = None
    max_candidates: int | None = None
    pq_m: int | None = None
    pq_bits: int | None = None
    train_size: int | None = None
    flat_queries: int = 2_000
    hnsw_m: int = 32
    hnsw_ef_construction: int = 100
    hnsw_ef_search: int = 128
    workdir: str | None = None
    # Scale out (dedup.cluster): search again on 1..workers Dask workers; device of the
    # torch exact comparison row and of the workers' search (None: no torch row, auto workers).
    workers: int = 0
    scheduler: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        if self.gallery_size < 1:
            raise InvalidParameter(f"--gallery-size must be >= 1, got {self.gallery_size}")
        if self.queries < 1:
            raise InvalidParameter(f"--queries must be >= 1, got {self.queries}")
        if self.shards < 1:
            raise InvalidParameter(f"--shards must be >= 1, got {self.shards}")
        if self.shards > self.gallery_size:
            raise InvalidParameter(f"--shards ({self.shards}) cannot exceed --gallery-size ({self.gallery_size})")
        unknown = [c for c in self.compare if c not in ENGINES]
        if unknown:
            raise InvalidParameter(f"--compare: unknown engine {unknown[0]!r}; choose from {', '.join(ENGINES)}")
        if self.workers < 0:
            raise InvalidParameter(f"--workers must be >= 0, got {self.workers}")
        if self.device not in (None, "auto", "cpu", "cuda"):
            raise InvalidParameter(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.flat_queries < 1:
            raise InvalidParameter(f"flat_queries must be >= 1, got {self.flat_queries}")


def load_job(path: Path) -> BenchSpec:
    """A ``[bench]`` table from a job TOML file (keys are ``BenchSpec`` fields)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"job file {path} not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"job file {path}: not valid TOML ({exc})") from None
    table = data.get("bench")
    if not isinstance(table, dict):
        raise BadInput(f"job file {path}: needs a [bench] table")
    known = {f.name for f in fields(BenchSpec)}
    extra = sorted(set(table) - known)
    if extra:
        raise BadInput(f"job file {path}: unknown key {extra[0]!r} in [bench]; known: {', '.join(sorted(known))}")
    if "compare" in table:
        table["compare"] = tuple(table["compare"])
    try:
        return BenchSpec(**table)
    except TypeError as exc:
        raise BadInput(f"job file {path}: {exc}") from None


def resolve(spec: BenchSpec, settings: Settings) -> tuple[SynthSpec, IndexSettings, SearchParams]:
    """The synthetic data, index settings and search parameters a spec stands for."""
    profile = get_profile(spec.profile, spec.dim)
    data = SynthSpec(profile, spec.gallery_size, spec.queries, spec.duplicate_rate, spec.mated_fraction, spec.seed)
    ix = settings.index
    index = replace(
        ix,
        nlist=spec.nlist if spec.nlist is not None else ix.nlist,
        pq_m=spec.pq_m if spec.pq_m is not None else ix.pq_m,
        pq_bits=spec.pq_bits if spec.pq_bits is not None else ix.pq_bits,
        train_size=spec.train_size if spec.train_size is not None else ix.train_size,
        shard_capacity=math.ceil(spec.gallery_size / spec.shards),
    )
    index = replace(index, pq_m=choose_pq_m(profile.dim, index.pq_m))
    if index.pq_m > profile.dim or profile.dim % index.pq_m:
        raise InvalidParameter(f"pq_m ({index.pq_m}) must divide the dimension ({profile.dim})")
    s = settings.search
    threshold = spec.threshold if spec.threshold is not None else (s.threshold or profile.threshold)
    params = SearchParams(
        threshold=threshold,
        nprobe=spec.nprobe or s.nprobe,
        depth=spec.depth or s.depth,
        max_depth=max(s.max_depth, spec.depth or s.depth),
        max_candidates=spec.max_candidates or s.max_candidates,
        deepen_margin=s.deepen_margin,
    )
    return data, index, params


# ---------------------------------------------------------------------------- progress


class Reporter:
    """Progress bars for the stages (rich), or nothing."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Any = None

    @contextmanager
    def running(self) -> Iterator["Reporter"]:
        if not self.enabled:
            yield self
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), transient=False) as progress:
            self._progress = progress
            yield self
            self._progress = None

    def stage(self, name: str, total: int) -> Callable[[int], None]:
        """Start a stage; returns ``advance(n)``."""
        if self._progress is None:
            return lambda n: None
        task = self._progress.add_task(name, total=total)
        return lambda n: self._progress.advance(task, n)


# ---------------------------------------------------------------------------- the run


def run_bench(spec: BenchSpec, settings: Settings | None = None, progress: bool = False) -> dict[str, Any]:
    """Run one scale test and return its report (see module docstring)."""
    settings = settings or Settings()
    synth_spec, index_settings, params = resolve(spec, settings)
    data = SyntheticData(synth_spec)
    profile = data.profile
    n, dim = spec.gallery_size, profile.dim
    _set_threads(settings.runtime.threads)

    train_n = min(index_settings.train_size, n)
    nlist = fit_nlist(index_settings.nlist, n, train_n)
    codec_spec = CodecSpec(dim, nlist, index_settings.pq_m, index_settings.pq_bits)
    budget = gallery_budget(n, dim, codec_spec.code_bytes, nlist, index_settings.exact_dtype,
                            index_settings.train_size, index_settings.shard_capacity)
    budget = budget + Budget(spec.queries * dim * 4 * 2 + spec.queries * params.max_candidates * 16, 0,
                             f"{spec.queries:,} probes and their results")
    if "hnsw" in spec.compare:
        budget = budget + Budget(n * (dim * 4 + spec.hnsw_m * 2 * 4 + 64), 0, "hnswlib index")
    workdir = Path(spec.workdir) if spec.workdir else Path(tempfile.mkdtemp(prefix="dedup-bench-"))
    check_fits(budget, workdir)

    report: dict[str, Any] = {
        "gallery_size": n,
        "queries": spec.queries,
        "dim": dim,
        "profile": profile.name,
        "seed": spec.seed,
        "threshold": params.threshold,
        "shards": spec.shards,
        "codec": asdict(codec_spec),
        "train_size": train_n,
        "exact_dtype": index_settings.exact_dtype,
        "search": asdict(params),
        "machine": machine_info(),
    }
    reporter = Reporter(progress)
    try:
        with reporter.running():
            probes = data.probes()
            truth = _Truth(probes, params.threshold)
            gallery, timings = _build(data, index_settings, workdir / "gallery", train_n, truth, reporter)
            report.update(timings)
            stats = gallery.stats()
            report["ram_bytes_per_template"] = stats["index_bytes_per_template"]
            report["disk_bytes_per_template"] = stats["disk_bytes_per_template"]
            report["shards"] = stats["shards"]
            report["nlist"] = stats["codec"]["nlist"] if stats["codec"] else None

            advance = reporter.stage("search (dedup)", spec.queries)
            t0 = time.perf_counter()
            found = gallery.search(probes.vectors, params, block=settings.search.probe_block, progress=advance)
            search_s = time.perf_counter() - t0
            report["search_s"] = search_s
            report["probes_per_s"] = spec.queries / search_s
            report.update(truth.score(found))

            baselines: dict[str, Any] = {}
            flat_q = min(spec.flat_queries, spec.queries)
            baselines["flat"] = _flat_baseline(data, probes, flat_q, params, truth, reporter)
            if spec.device:
                from dedup.bench.scaling import torch_exact_baseline

                baselines["torch-exact"] = torch_exact_baseline(workdir / "gallery", probes.vectors, params,
                                                                spec.device, truth.score)
            if spec.workers:
                from dedup.bench.scaling import bench_scaling

                report["scaling"] = bench_scaling(
                    workdir / "gallery", probes.vectors, params, spec.workers,
                    spec.scheduler or settings.runtime.scheduler or None, truth.score,
                    device=spec.device or settings.runtime.device, probe_block=settings.search.probe_block)
            if "hnsw" in spec.compare:
                baselines["hnsw"] = _hnsw_baseline(data, probes, params, truth, spec, reporter)
            for b in baselines.values():
                if b.get("probes_per_s"):
                    b["speedup_of_dedup"] = report["probes_per_s"] / b["probes_per_s"]
            report["baselines"] = baselines
    finally:
        if not spec.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return report


def _set_threads(threads: int) -> None:
    import faiss

    if threads > 0:
        faiss.omp_set_num_threads(threads)


class _Truth:
    """Ground truth for the planted duplicates: mate pairs and their exact scores."""

    def __init__(self, probes: Probes, threshold: float) -> None:
        self.probes = probes
        self.threshold = threshold
        self.pair_probe = np.repeat(np.arange(probes.mated.size), np.diff(probes.mate_offsets))
        self.pair_row = probes.mate_rows
        self.pair_score = np.full(self.pair_row.size, np.nan, dtype=np.float32)
        order = np.argsort(self.pair_row, kind="stable")
        self._sorted_rows = self.pair_row[order]
        self._order = order

    def observe(self, row_ids: np.ndarray, vectors: np.ndarray) -> None:
        """Record exact scores of mate pairs whose gallery rows are in this block."""
        lo = np.searchsorted(self._sorted_rows, row_ids[0])
        hi = np.searchsorted(self._sorted_rows, row_ids[-1], side="right")
        js = self._order[lo:hi]
        local = self.pair_row[js] - row_ids[0]
        self.pair_score[js] = np.einsum("ij,ij->i", vectors[local], self.probes.vectors[self.pair_probe[js]])

    def score(self, found: Candidates, probe_subset: int | None = None) -> dict[str, float]:
        """duplicate_recall, capped probes and false candidates per probe for a result."""
        q = found.n_probes if probe_subset is None else probe_subset
        mask = (self.pair_probe < q) & (self.pair_score >= self.threshold)
        wanted = set(zip(self.pair_probe[mask].tolist(), self.pair_row[mask].tolist()))
        got_probe = found.probe_index()
        got = set(zip(got_probe.tolist(), found.row_ids.tolist()))
        all_mates = set(zip(self.pair_probe[self.pair_probe < q].tolist(), self.pair_row[self.pair_probe < q].tolist()))
        returned_mates = len(got & all_mates)
        return {
            "duplicate_pairs": len(wanted),
            "duplicate_recall": (len(wanted & got) / len(wanted)) if wanted else 1.0,
            "false_candidates_per_probe": (len(got) - returned_mates) / max(q, 1),
            "capped_probes": int(found.capped[:q].sum()),
            "mean_candidates_per_probe": float(found.counts()[:q].mean()) if q else 0.0,
        }


def _blocks(data: SyntheticData, advance: Callable[[int], None]) -> Iterator[Any]:
    for b in range(data.n_blocks):
        blk = data.block(b)
        yield blk
        advance(blk.row_ids.size)


def _build(data: SyntheticData, index_settings: IndexSettings, root: Path, train_n: int, truth: _Truth,
           reporter: Reporter) -> tuple[Gallery, dict[str, float]]:
    profile = data.profile
    gallery = Gallery.create(root, profile.model_id, profile.dim, index_settings)
    # Synthetic rows are independent draws, so the first rows are a fair training sample.
    sample = []
    have = 0
    for b in range(data.n_blocks):
        if have >= train_n:
            break
        vec = data.block(b).vectors
        sample.append(vec[: train_n - have])
        have += sample[-1].shape[0]
    t0 = time.perf_counter()
    gallery.train(np.concatenate(sample), expected_size=data.spec.gallery_size)
    train_s = time.perf_counter() - t0
    del sample
    add_s = 0.0
    advance = reporter.stage("generate + add", data.spec.gallery_size)
    with gallery.writer() as writer:
        for blk in _blocks(data, advance):
            truth.observe(blk.row_ids, blk.vectors)
            ids = [f"synth-{r}" for r in blk.row_ids.tolist()]
            t0 = time.perf_counter()
            writer.add_rows(blk.vectors, blk.row_ids, ids)
            add_s += time.perf_counter() - t0
        writer.next_row_id = data.spec.gallery_size
        t0 = time.perf_counter()
    add_s += time.perf_counter() - t0  # shard files written on leaving the block
    return Gallery.open(root, index_settings), {"train_s": train_s, "add_s": add_s}


def _flat_baseline(data: SyntheticData, probes: Probes, q: int, params: SearchParams, truth: _Truth,
                   reporter: Reporter) -> dict[str, Any]:
    """Exact FAISS flat inner-product range search, streamed over the gallery in blocks."""
    import faiss

    advance = reporter.stage(f"flat ({q} probes)", data.spec.gallery_size)
    sub = probes.vectors[:q]
    pairs_p, pairs_r, pairs_s = [], [], []
    search_s = 0.0
    for blk in _blocks(data, advance):
        t0 = time.perf_counter()
        index = faiss.IndexFlatIP(data.profile.dim)
        index.add(blk.vectors)
        lims, dist, labels = index.range_search(sub, params.threshold)
        search_s += time.perf_counter() - t0
        counts = np.diff(lims).astype(np.int64)
        pairs_p.append(np.repeat(np.arange(q), counts))
        pairs_r.append(blk.row_ids[labels])
        pairs_s.append(dist)
    found = Candidates.from_pairs(q, np.concatenate(pairs_p), np.concatenate(pairs_r), np.concatenate(pairs_s),
                                  params.max_candidates)
    out = {"probes": q, "probes_per_s": q / search_s, "search_s": search_s,
           "ram_bytes_per_template": data.profile.dim * 4.0}
    out.update(truth.score(found, probe_subset=q))
    return out


def _hnsw_baseline(data: SyntheticData, probes: Probes, params: SearchParams, truth: _Truth, spec: BenchSpec,
                   reporter: Reporter) -> dict[str, Any]:
    """hnswlib (inner product) top-``depth``, exact scores, then the threshold."""
    try:
        import hnswlib
    except ImportError:
        raise InvalidParameter("--compare hnsw needs hnswlib (pip install .[bench])") from None
    n, dim = data.spec.gallery_size, data.profile.dim
    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=n, M=spec.hnsw_m, ef_construction=spec.hnsw_ef_construction, random_seed=spec.seed)
    advance = reporter.stage("hnsw build", n)
    t0 = time.perf_counter()
    for blk in _blocks(data, advance):
        index.add_items(blk.vectors, blk.row_ids)
    build_s = time.perf_counter() - t0
    k = min(params.depth, n)
    index.set_ef(max(spec.hnsw_ef_search, k))
    t0 = time.perf_counter()
    labels, dist = index.knn_query(probes.vectors, k=k)
    search_s = time.perf_counter() - t0
    scores = 1.0 - dist  # hnswlib's "ip" distance is 1 - inner product (exact)
    keep = scores >= params.threshold
    pi, ki = np.nonzero(keep)
    found = Candidates.from_pairs(probes.vectors.shape[0], pi, labels[pi, ki].astype(np.int64), scores[pi, ki],
                                  params.max_candidates)
    # hnswlib's documented memory: vectors plus about M*2*4 bytes of links per element.
    out = {"probes": probes.vectors.shape[0], "probes_per_s": probes.vectors.shape[0] / search_s,
           "search_s": search_s, "build_s": build_s,
           "ram_bytes_per_template": dim * 4 + spec.hnsw_m * 2 * 4 + 8,
           "M": spec.hnsw_m, "ef_construction": spec.hnsw_ef_construction, "ef_search": max(spec.hnsw_ef_search, k)}
    out.update(truth.score(found))
    return out


def summary_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """Rows of the human table: engine, probes/s, duplicate recall, false cand./probe, RAM B/template, build s."""
    rows = [("dedup IVF-PQ", f"{report['probes_per_s']:,.0f}", f"{report['duplicate_recall']:.4f}",
             f"{report['false_candidates_per_probe']:.2f}", f"{report['ram_bytes_per_template']:.1f}",
             f"{report['train_s'] + report['add_s']:.1f}")]
    for name, b in report.get("baselines", {}).items():
        rows.append((name, f"{b['probes_per_s']:,.0f}", f"{b['duplicate_recall']:.4f}",
                     f"{b['false_candidates_per_probe']:.2f}", f"{b['ram_bytes_per_template']:.1f}",
                     f"{b.get('build_s', 0.0):.1f}"))
    return rows


__all__ = ["BenchSpec", "ENGINES", "load_job", "run_bench", "resolve", "summary_rows", "BLOCK"]
