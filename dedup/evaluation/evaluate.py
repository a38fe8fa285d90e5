"""``dedup eval``: accuracy of a face model on a labelled set, overall and by group.

One call, ``evaluate(labelled_set, EvalOptions())``, computes every number of the report:
score distributions, DET, FNMR at FMR targets, one-to-many FNIR at FPIR targets for chosen
gallery sizes (exact searches, nested galleries), rank-1, the impostor tail model and the
per-group table at the operating threshold. ``EvalResult.to_dict`` is the ``--json`` output.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from dedup.errors import InvalidParameter
from dedup.evaluation.data import LabelledSet
from dedup.evaluation.identification import (
    IdentificationPoint,
    SearchOutcome,
    fnir_at,
    fnir_at_fpir,
    fpir_at,
    rank1,
    search_prefixes,
    split_for_search,
)
from dedup.evaluation.metrics import DetCurve, GroupRow, OperatingPoint, det_curve, empirical_threshold, fnmr_at_fmr, per_group
from dedup.evaluation.scores import GenuineScores, ImpostorSample, ProgressFn, genuine_scores, impostor_sample
from dedup.evaluation.stats import wilson_interval
from dedup.evaluation.tail import TailModel, fit_tail, fpir_from_fmr
from dedup.operating_point import ThresholdInForce, threshold_for_target

InForceFn = Callable[[int], ThresholdInForce | None]   # gallery size -> the threshold in force, None without one

REPORT_VERSION = 1


@dataclass(frozen=True)
class EvalOptions:
    """What to compute. ``threshold`` None: the threshold in force (see ``evaluate``)."""

    threshold: float | None = None
    fmr_targets: tuple[float, ...] = (1e-3, 1e-4, 1e-5, 1e-6)
    fpir_targets: tuple[float, ...] = (0.003, 0.01)
    gallery_sizes: tuple[int, ...] | None = None
    max_impostor_pairs: int = 50_000_000
    max_searches: int = 10_000
    confidence: float = 0.95
    bootstrap: int = 200
    tail_fraction: float = 1e-4
    seed: int = 0
    target_fpir: float = 1e-3

    def __post_init__(self) -> None:
        if self.threshold is not None and not -1.0 <= self.threshold <= 1.0:
            raise InvalidParameter(f"threshold is a cosine between -1 and 1, got {self.threshold}")
        if any(not 0 < f < 1 for f in self.fmr_targets + self.fpir_targets):
            raise InvalidParameter("FMR and FPIR targets must be between 0 and 1")
        if not 0.5 <= self.confidence < 1:
            raise InvalidParameter(f"confidence must be in [0.5, 1), got {self.confidence}")
        if self.max_impostor_pairs < 1000:
            raise InvalidParameter("max impostor pairs must be >= 1000")
        if self.max_searches < 1:
            raise InvalidParameter("max searches must be >= 1")
        if self.bootstrap < 0:
            raise InvalidParameter("bootstrap must be >= 0")
        if self.gallery_sizes is not None and any(s < 1 for s in self.gallery_sizes):
            raise InvalidParameter("gallery sizes must be >= 1")


@dataclass
class SizeSummary:
    """One-to-many results for one gallery size."""

    gallery_size: int
    mated_searches: int
    nonmated_searches: int
    rank1: float | None
    rank1_ci: tuple[float, float] | None
    fpir_at_threshold: float | None
    fpir_at_threshold_ci: tuple[float, float] | None
    fpir_model_at_threshold: float | None   # the tail model's prediction, for comparison
    fnir_at_threshold: float | None
    fnir_at_threshold_ci: tuple[float, float] | None
    fnir_at_fpir: list[IdentificationPoint]


@dataclass
class EvalResult:
    """Everything ``dedup eval`` reports (statistics only: no template, no identity label)."""

    model_id: str
    synthetic: bool
    counts: dict[str, int]
    options: EvalOptions
    threshold: float
    threshold_source: str
    impostor: ImpostorSample
    genuine: GenuineScores
    det: DetCurve
    operating_points: list[OperatingPoint]
    tail: TailModel | None
    tail_note: str
    groups: list[GroupRow]
    overall_fmr: float
    overall_fmr_ci: tuple[float, float]
    overall_fnmr: float
    overall_fnmr_ci: tuple[float, float]
    identification: list[SizeSummary]
    outcome: SearchOutcome | None = field(default=None, repr=False)
    rejected: dict[str, int] = field(default_factory=dict)

    def figure_sources(self) -> dict[str, str]:
        """Where each kind of figure comes from, in words."""
        n, g = self.impostor.n_pairs, self.genuine.n_pairs
        fm = self.impostor.count_ge(self.threshold)
        at = (f"empirical: {fm:,} of {n:,} sampled impostor pairs and {self.genuine.count_lt(self.threshold):,} of {g:,} "
              "genuine pairs")
        if fm == 0:
            at += f"; FMR 0 observed: below 1/{n:,} it is not estimable from these pairs (see the tail model rows)"
        return {
            "fnmr_at_fmr": "per row: empirical (>= 10 impostor pairs above), tail-model (extrapolated) or not estimable",
            "at_threshold": at,
            "identification": "empirical: exact searches of nested galleries (FNIR at FPIR rows are not estimable "
                              "with fewer than 1/FPIR non-mated searches); 'fpir_model_at_threshold' is the tail model",
            "groups": "empirical: pairs within each group, Wilson intervals",
        }

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document: stable keys, numbers only."""
        imp = self.impostor
        det = _thin_det(self.det)
        return {
            "report_version": REPORT_VERSION,
            "model_id": self.model_id,
            "synthetic": self.synthetic,
            "rejected_photos": self.rejected,
            "counts": {**self.counts, "impostor_pairs": imp.n_pairs, "genuine_pairs": self.genuine.n_pairs,
                       "impostor_pairs_exhaustive": imp.exhaustive, "templates_paired": int(imp.rows.size)},
            "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.options).items()},
            "confidence_interval": f"Wilson score, {self.options.confidence:.0%} (binomial counts); "
                                   "tail model: percentile bootstrap over templates",
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "figure_sources": self.figure_sources(),
            "distributions": {
                "impostor": _moments_hist(imp.total),
                "genuine": _moments(self.genuine.scores),
            },
            "det": {"threshold": det.threshold.tolist(), "fmr": det.fmr.tolist(), "fnmr": det.fnmr.tolist()},
            "fnmr_at_fmr": [asdict(p) for p in self.operating_points],
            "at_threshold": {"fmr": self.overall_fmr, "fmr_ci": list(self.overall_fmr_ci),
                             "fnmr": self.overall_fnmr, "fnmr_ci": list(self.overall_fnmr_ci),
                             "impostor_pairs": imp.n_pairs, "genuine_pairs": self.genuine.n_pairs},
            "tail_model": None if self.tail is None else {
                "kind": "generalized Pareto above u (peaks over threshold)",
                "u": self.tail.u, "p_u": self.tail.p_u, "xi": self.tail.gpd.xi, "sigma": self.tail.gpd.sigma,
                "exceedances": self.tail.n_exceed, "bootstrap_replicates": int(self.tail.boot.shape[0]),
            },
            "tail_note": self.tail_note,
            "groups": [asdict(r) for r in self.groups],
            "identification": [{**{k: v for k, v in asdict(s).items() if k != "fnir_at_fpir"},
                                "fnir_at_fpir": [asdict(p) for p in s.fnir_at_fpir]} for s in self.identification],
            "machine": _machine(),
        }


def evaluate(data: LabelledSet, options: EvalOptions = EvalOptions(), progress: ProgressFn | None = None,
             keep_outcome: bool = False, in_force: InForceFn | None = None) -> EvalResult:
    """Compute the whole evaluation of a labelled set.

    The operating threshold: ``options.threshold`` when given; else ``in_force(N)``, the
    threshold in force for the set's model at the largest gallery evaluated
    (``dedup.operating_point.threshold_in_force``; None when the model has neither card nor
    calibration); else the threshold this set's own tail model gives for ``target_fpir`` at N;
    else, with too few pairs for a tail, the empirical threshold at FMR 1e-4, said to be one.
    """
    rng = np.random.default_rng(options.seed)
    counts = data.counts()
    if counts["identities"] < 2:
        raise InvalidParameter("a labelled set needs at least 2 identities")
    imp = impostor_sample(data.vectors, data.identity, data.group, data.group_names,
                          max_pairs=options.max_impostor_pairs, rng=rng, progress=progress)
    gen = genuine_scores(data.vectors, data.identity, data.group, rng=rng)
    if gen.n_pairs == 0:
        raise InvalidParameter("no identity has two captures: FNMR and FNIR need genuine pairs "
                               "(at least some identities with 2 or more templates)")
    tail, tail_note = None, ""
    try:
        tail = fit_tail(imp, options.tail_fraction, options.confidence, options.bootstrap, rng)
    except InvalidParameter as exc:
        tail_note = f"no tail model: {exc}"
    split = split_for_search(data.identity, options.max_searches, rng)
    sizes = _sizes(options.gallery_sizes, split.pool.size)
    n_for_threshold = max(sizes[-1] if sizes else int(split.pool.size), 1)
    found = in_force(n_for_threshold) if (options.threshold is None and in_force is not None) else None
    if options.threshold is not None:
        threshold, source = float(options.threshold), "given"
    elif found is not None:
        threshold = found.value
        source = f"threshold in force for {data.model_id} at N = {n_for_threshold:,}: {found.source}, {found.description}"
    elif tail is not None:
        threshold = threshold_for_target(tail, options.target_fpir, n_for_threshold)
        source = (f"no model card or calibration for {data.model_id}: this set's own tail model, FPIR "
                  f"{options.target_fpir:g} at N = {n_for_threshold:,}")
    else:
        threshold = empirical_threshold(imp, 1e-4)
        source = (f"no model card or calibration for {data.model_id}, and no tail model ({tail_note}): the empirical "
                  f"threshold at FMR 1e-4, not estimable from {imp.n_pairs:,} pairs (it is their highest score)"
                  if imp.n_pairs * 1e-4 < 1 else "empirical threshold at FMR 1e-4")
    ops = fnmr_at_fmr(imp, gen, list(options.fmr_targets), tail, options.confidence)
    groups = per_group(imp, gen, threshold, options.confidence)
    fm, fnm = imp.count_ge(threshold), gen.count_lt(threshold)
    fmr_ci = wilson_interval(fm, imp.n_pairs, options.confidence)
    fnmr_ci = wilson_interval(fnm, gen.n_pairs, options.confidence)

    ident_summaries: list[SizeSummary] = []
    outcome = None
    if sizes and split.probes.size:
        pool_v = data.vectors[split.pool]
        pool_id = data.identity[split.pool]
        chunks = ((pool_v[a:a + 65536], pool_id[a:a + 65536]) for a in range(0, sizes[-1], 65536))
        outcome = search_prefixes(data.vectors[split.probes], data.identity[split.probes], chunks, sizes,
                                  progress=progress)
        points = fnir_at_fpir(outcome, list(options.fpir_targets), options.confidence)
        for s, size in enumerate(sizes):
            r1, nm = rank1(outcome, s)
            fp, n_nm = fpir_at(outcome, s, threshold)
            miss, n_m = fnir_at(outcome, s, threshold)
            model = float(fpir_from_fmr(tail.fmr(threshold), size)) if tail is not None else None
            ident_summaries.append(SizeSummary(
                size, n_m, n_nm,
                r1 / nm if nm else None, _ci(r1, nm, options.confidence),
                fp / n_nm if n_nm else None, _ci(fp, n_nm, options.confidence), model,
                miss / n_m if n_m else None, _ci(miss, n_m, options.confidence),
                [p for p in points if p.gallery_size == size]))
    return EvalResult(data.model_id, data.synthetic, counts, options, threshold, source, imp, gen,
                      det_curve(imp, gen), ops, tail, tail_note, groups,
                      fm / imp.n_pairs, (float(fmr_ci[0]), float(fmr_ci[1])),
                      fnm / gen.n_pairs, (float(fnmr_ci[0]), float(fnmr_ci[1])),
                      ident_summaries, outcome if keep_outcome else None, dict(data.rejected))


def _sizes(asked: tuple[int, ...] | None, pool: int) -> list[int]:
    if asked:
        too_big = [s for s in asked if s > pool]
        if too_big:
            raise InvalidParameter(f"gallery size {max(too_big)} is larger than the set allows ({pool} enrolled "
                                   "identities after holding out searches); choose sizes up to that")
        return sorted(set(asked))
    if pool < 1:
        return []
    sizes = [10 ** k for k in range(3, 9) if 10 ** k < pool]
    return sizes[-2:] + [pool]


def _ci(k: int, n: int, confidence: float) -> tuple[float, float] | None:
    if n == 0:
        return None
    lo, hi = wilson_interval(k, n, confidence)
    return float(lo), float(hi)


def _moments(x: np.ndarray) -> dict[str, float | int | None]:
    if x.size == 0:
        return {"n": 0, "mean": None, "sd": None, "p01": None, "p50": None, "p99": None}
    q = np.quantile(x.astype(np.float64), [0.01, 0.5, 0.99])
    return {"n": int(x.size), "mean": float(x.mean()), "sd": float(x.std()),
            "p01": float(q[0]), "p50": float(q[1]), "p99": float(q[2])}


def _moments_hist(counts: np.ndarray) -> dict[str, float | int | None]:
    from dedup.evaluation.scores import BIN, EDGES

    n = int(counts.sum())
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "p01": None, "p50": None, "p99": None}
    mid = EDGES[:-1] + BIN / 2
    mean = float((counts * mid).sum() / n)
    sd = math.sqrt(max(float((counts * (mid - mean) ** 2).sum() / n), 0.0))
    cum = np.cumsum(counts) / n
    q = [float(mid[int(np.searchsorted(cum, p))]) for p in (0.01, 0.5, 0.99)]
    return {"n": n, "mean": mean, "sd": sd, "p01": q[0], "p50": q[1], "p99": q[2]}


def _thin_det(det: DetCurve, points: int = 400) -> DetCurve:
    """At most ``points`` DET points, log-spaced in FMR, for the JSON report."""
    if det.threshold.size <= points:
        return det
    idx = np.unique(np.linspace(0, det.threshold.size - 1, points).astype(int))
    return DetCurve(det.threshold[idx], det.fmr[idx], det.fnmr[idx])


def _machine() -> dict[str, Any]:
    from dedup.machine import cpu_model, usable_cores

    return {"cpu": cpu_model(), "cores": usable_cores(), "python": platform.python_version()}
