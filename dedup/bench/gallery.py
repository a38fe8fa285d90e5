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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from dedup.bench.synth import BLOCK, Probes, SyntheticData, SynthSpec, get_profile
from dedup.config import IndexSettings, Settings
from dedup.errors import BadInput, InvalidParameter
from dedup.evaluation.stats import wilson_interval
from dedup.index.codec import CodecSpec, choose_pq_m, fit_nlist
from dedup.index.coverage import MAX_PAIRS, measure_coverage
from dedup.index.gallery import Gallery
from dedup.index.memory import Budget, check_fits, gallery_budget
from dedup.index.params import SearchParams
from dedup.index.results import Candidates
from dedup.machine import machine_info
from dedup.operating_point import ThresholdInForce, threshold_in_force

ENGINES = ("exact", "faiss-refine", "hnsw", "scann")
ALIASES = {"flat": "exact"}  # the exact baseline's old name
# Largest float32 copy of the gallery held in RAM for the exact and faiss-refine baselines.
MAX_RAM_VECTORS = 6 << 30
FRESH_PAIRS = 60_000  # fresh captures paired with gallery rows for the list coverage (plus planted duplicates)


@dataclass(frozen=True)
class BenchSpec:
    """One scale test. ``None`` fields take the profile's or the settings' defaults."""

    gallery_size: int = 100_000
    queries: int = 2_000
    profile: str = "face-like"
    dim: int | None = None
    threshold: float | None = None
    shards: int = 1
    compare: tuple[str, ...] = ("exact",)
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
    hnsw_m: int = 16
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128  # unused since ef is swept; kept so older job files still load
    passes: int = 3            # interleaved timed passes per engine
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
        compare = tuple(dict.fromkeys(ALIASES.get(c, c) for c in self.compare))
        object.__setattr__(self, "compare", compare)
        unknown = [c for c in compare if c not in ENGINES]
        if unknown:
            raise InvalidParameter(f"--compare: unknown engine {unknown[0]!r}; choose from {', '.join(ENGINES)}")
        if "scann" in compare:
            try:
                import scann  # noqa: F401
            except ImportError:
                raise InvalidParameter("--compare scann needs the scann package, which is not installed here") from None
            raise InvalidParameter("--compare scann: not measured by this version of dedup bench")
        if self.passes < 1:
            raise InvalidParameter(f"passes must be >= 1, got {self.passes}")
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
    threshold = bench_threshold(spec, settings).value
    params = SearchParams(
        threshold=threshold,
        nprobe=spec.nprobe or s.nprobe,
        depth=spec.depth or s.depth,
        max_depth=max(s.max_depth, spec.depth or s.depth),
        max_candidates=spec.max_candidates or s.max_candidates,
        deepen_margin=s.deepen_margin,
        early_exit=s.early_exit,
        # --nprobe pins the list count; otherwise the planted duplicates' coverage sets it
        recall_target=0.0 if spec.nprobe else s.recall_target,
    )
    return data, index, params


def bench_threshold(spec: BenchSpec, settings: Settings) -> ThresholdInForce:
    """The threshold the bench searches at: the one policy (``dedup.operating_point``) for the
    profile's model at the bench's own gallery size; ``--threshold`` is an explicit setting."""
    profile = get_profile(spec.profile, spec.dim)
    if spec.threshold is not None:
        settings = settings.replace("search", threshold=spec.threshold)
    return threshold_in_force(profile.model_id, spec.gallery_size, settings)


# ---------------------------------------------------------------------------- progress


class Reporter:
    """Progress bars for the stages (rich), or nothing."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Any = None

    @contextmanager
    def running(self) -> Iterator[Reporter]:
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
    in_force = bench_threshold(spec, settings)
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
    keep_vectors = bool({"exact", "faiss-refine"} & set(spec.compare))
    if keep_vectors:
        if n * dim * 4 > MAX_RAM_VECTORS:
            raise InvalidParameter(f"--compare exact/faiss-refine hold the gallery as float32 in RAM "
                                   f"({n * dim * 4 / 2**30:.1f} GiB); above {MAX_RAM_VECTORS >> 30} GiB compare fewer engines")
        budget = budget + Budget(n * dim * 4, 0, "float32 gallery for the exact baselines")
    if "faiss-refine" in spec.compare:
        budget = budget + Budget(n * (dim * 4 + codec_spec.code_bytes + 16), 0, "faiss IVFPQ + refine index")
    workdir = Path(spec.workdir) if spec.workdir else Path(tempfile.mkdtemp(prefix="dedup-bench-"))
    check_fits(budget, workdir)

    report: dict[str, Any] = {
        "gallery_size": n,
        "queries": spec.queries,
        "dim": dim,
        "profile": profile.name,
        "seed": spec.seed,
        "threshold": params.threshold,
        "threshold_in_force": in_force.to_dict(),
        "target_fpir": in_force.target_fpir,
        "warnings": list(in_force.warnings),
        "shards": spec.shards,
        "codec": {**asdict(codec_spec), "rotation": index_settings.rotation},
        "train_size": train_n,
        "exact_dtype": index_settings.exact_dtype,
        "search": _search_json(params),
        "machine": machine_info(),
    }
    reporter = Reporter(progress)
    try:
        with reporter.running():
            probes = data.probes()
            truth = _Truth(probes, params.threshold)
            vectors = np.zeros((n, dim), dtype=np.float32) if keep_vectors else None
            row_ids = np.arange(n, dtype=np.int64) if keep_vectors else None
            gallery, timings = _build(data, index_settings, workdir / "gallery", train_n, truth, reporter, vectors)
            report.update(timings)
            stats = gallery.stats()
            report["ram_bytes_per_template"] = stats["index_bytes_per_template"]
            report["disk_bytes_per_template"] = stats["disk_bytes_per_template"]
            report["shards"] = stats["shards"]
            report["nlist"] = stats["codec"]["nlist"] if stats["codec"] else None
            coverage = gallery.coverage
            report["list_coverage"] = coverage.summary(params.threshold, params.recall_target) if coverage else None

            from dedup.bench.compare import compare

            dedup, baselines = compare(
                gallery, probes.vectors, params, truth.score, spec.compare, vectors, row_ids,
                (lambda: ((b.vectors, b.row_ids) for b in _blocks(data, lambda k: None))), settings.search.probe_block,
                min(spec.flat_queries, spec.queries), spec.passes, spec.hnsw_m, spec.hnsw_ef_construction, spec.seed,
                stage=reporter.stage)
            report.update(dedup)
            report["search"] = _search_json(gallery.with_measured(params))
            report["search_s"] = spec.queries / report["probes_per_s"]
            if spec.device:
                from dedup.bench.scaling import torch_exact_baseline

                baselines["torch-exact"] = torch_exact_baseline(workdir / "gallery", probes.vectors, params,
                                                                spec.device, truth.score)
                baselines["torch-exact"]["speedup_of_dedup"] = report["probes_per_s"] / baselines["torch-exact"]["probes_per_s"]
            if spec.workers:
                from dedup.bench.scaling import bench_scaling

                report["scaling"] = bench_scaling(
                    workdir / "gallery", probes.vectors, params, spec.workers,
                    spec.scheduler or settings.runtime.scheduler or None, truth.score,
                    device=spec.device or settings.runtime.device, probe_block=settings.search.probe_block)
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

    def score(self, found: Candidates, probe_subset: int | None = None) -> dict[str, Any]:
        """duplicate_recall, capped probes and false candidates per probe for a result."""
        q = found.n_probes if probe_subset is None else probe_subset
        mask = (self.pair_probe < q) & (self.pair_score >= self.threshold)
        wanted = set(zip(self.pair_probe[mask].tolist(), self.pair_row[mask].tolist()))
        got_probe = found.probe_index()
        got = set(zip(got_probe.tolist(), found.row_ids.tolist()))
        all_mates = set(zip(self.pair_probe[self.pair_probe < q].tolist(), self.pair_row[self.pair_probe < q].tolist()))
        returned_mates = len(got & all_mates)
        # FPIR: non-mated probes (no mate in the gallery) that returned any candidate at all.
        nonmated = ~self.probes.mated[:q]
        hit = found.counts()[:q] > 0
        n_nm, fp = int(nonmated.sum()), int((hit & nonmated).sum())
        lo, hi = wilson_interval(fp, n_nm) if n_nm else (math.nan, math.nan)
        return {
            "fpir": fp / n_nm if n_nm else None,
            "fpir_ci": [float(lo), float(hi)] if n_nm else None,
            "nonmated_probes": n_nm,
            "false_positive_probes": fp,
            "duplicate_pairs": len(wanted),
            "duplicate_recall": (len(wanted & got) / len(wanted)) if wanted else 1.0,
            "missed_pairs": len(wanted - got),
            "false_candidates_per_probe": (len(got) - returned_mates) / max(q, 1),
            "capped_probes": int(found.capped[:q].sum()),
            "mean_candidates_per_probe": float(found.counts()[:q].mean()) if q else 0.0,
        }


def _blocks(data: SyntheticData, advance: Callable[[int], None]) -> Iterator[Any]:
    for b in range(data.n_blocks):
        blk = data.block(b)
        yield blk
        advance(blk.row_ids.size)


def _search_json(params: SearchParams) -> dict[str, Any]:
    """The search parameters for the report: the bounds in force at the threshold, not the grid."""
    out = {k: v for k, v in asdict(params).items() if k != "bounds"}
    limits = params.bounds.at(params.threshold) if params.bounds is not None else None
    out["bounds_at_threshold"] = {"list_gap": limits[0], "est_error": limits[1]} if limits else None
    return out


def _build(data: SyntheticData, index_settings: IndexSettings, root: Path, train_n: int, truth: _Truth,
           reporter: Reporter, keep: np.ndarray | None = None) -> tuple[Gallery, dict[str, float]]:
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
    # Pairs found without the search, for the gallery's list coverage (dedup.index.coverage):
    # the planted duplicates with their first captures (same block), and fresh captures of
    # a seeded sample of FRESH_PAIRS rows with those rows (as a deployment's labelled set
    # would be): enough pairs that the recall target's miss allowance is not one or two.
    pairs: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    n_planted = 0
    fresh_per_block = -(-FRESH_PAIRS // max(1, data.n_blocks))
    pick = np.random.default_rng([data.spec.seed, 63])
    with gallery.writer() as writer:
        for b, blk in enumerate(_blocks(data, advance)):
            truth.observe(blk.row_ids, blk.vectors)
            dup = np.flatnonzero(blk.duplicate)[: max(0, MAX_PAIRS - FRESH_PAIRS - n_planted)]
            pairs[0].append(blk.vectors[dup])
            pairs[1].append(blk.vectors[blk.identity[dup] - blk.row_ids[0]])
            n_planted += dup.size
            local = np.sort(pick.choice(blk.row_ids.size, size=min(fresh_per_block, blk.row_ids.size), replace=False))
            pairs[0].append(data.fresh_captures(b, blk.row_ids[local]))
            pairs[1].append(blk.vectors[local])
            if keep is not None:
                keep[blk.row_ids] = blk.vectors
            ids = [f"synth-{r}" for r in blk.row_ids.tolist()]
            t0 = time.perf_counter()
            writer.add_rows(blk.vectors, blk.row_ids, ids)
            add_s += time.perf_counter() - t0
        writer.next_row_id = data.spec.gallery_size
        t0 = time.perf_counter()
    add_s += time.perf_counter() - t0  # shard files written on leaving the block
    gallery = Gallery.open(root, index_settings)
    if pairs[0]:
        codec = gallery.codec
        assert codec is not None
        gallery.save_coverage(measure_coverage(codec.trained, codec.version, np.concatenate(pairs[0]),
                                               np.concatenate(pairs[1]),
                                               "planted duplicates and fresh captures of the bench gallery's rows"))
    return gallery, {"train_s": train_s, "add_s": add_s}


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
