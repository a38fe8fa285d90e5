"""The impostor tail: FMR(t) far beyond what any sample can count.

**Model.** Peaks over threshold (Pickands 1975; Balkema & de Haan 1974): above a high
threshold ``u`` the excess of impostor scores, ``S - u | S > u``, is modelled by a
generalized Pareto distribution GPD(xi, sigma), so

    FMR(t) = p_u                                      for t <= u read from the sample
    FMR(t) = p_u * (1 + xi (t - u) / sigma) ** (-1 / xi)    for t > u

with ``p_u`` the sampled fraction of impostor pairs above ``u``. Cosine scores are bounded
by 1, so xi is usually negative (a finite upper end ``u - sigma / xi``). The fit is weighted
maximum likelihood by the profile likelihood in theta = xi / sigma (Grimshaw 1993,
"Computing maximum likelihood estimates for the generalized Pareto distribution"), with
xi >= -1 (beyond that the likelihood is unbounded).

**Intervals.** Impostor pairs of a sample share templates, so they are not independent. The
bootstrap resamples *templates* (Poisson(1) weights per sampled row; a pair weighs the
product of its two rows' weights) and refits everything above ``u`` (Efron's bootstrap in
its Poisson form, as used for two-way data by Owen 2007, "The pigeonhole bootstrap"). Each
reported interval is the percentile interval of those replicates.

**One-to-many.** A search against N gallery rows false-positives when any of N impostor
comparisons reaches t. With the comparisons independent given nothing else,

    FPIR(N, t) = 1 - (1 - FMR(t)) ** N      (for N * FMR << 1, FPIR ~ N * FMR)

This is a model: scores of one probe against N rows share the probe, so the true FPIR is the
average over probes of 1 - (1 - FMR_p(t)) ** N, which is never above the model (Jensen) and
equals it to first order when FPIR is small. ``benchmarks/eval`` checks it against exact
searches of galleries up to 1M.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dedup.errors import InvalidParameter
from dedup.evaluation.scores import ImpostorSample

MIN_EXCEEDANCES = 200


@dataclass(frozen=True)
class GPD:
    """Generalized Pareto distribution of excesses y >= 0."""

    xi: float
    sigma: float

    def sf(self, y: np.ndarray | float) -> np.ndarray:
        """P(Y >= y)."""
        y = np.maximum(np.asarray(y, dtype=np.float64), 0.0)
        if abs(self.xi) < 1e-9:
            return np.exp(-y / self.sigma)
        base = 1.0 + self.xi * y / self.sigma
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(base > 0, np.power(np.maximum(base, 1e-300), -1.0 / self.xi), 0.0)
        return out

    def isf(self, q: np.ndarray | float) -> np.ndarray:
        """y with P(Y >= y) = q, for q in (0, 1]."""
        q = np.asarray(q, dtype=np.float64)
        if abs(self.xi) < 1e-9:
            return -self.sigma * np.log(q)
        return self.sigma / self.xi * (np.power(q, -self.xi) - 1.0)

    @property
    def upper_end(self) -> float:
        """Largest possible excess (inf when xi >= 0)."""
        return -self.sigma / self.xi if self.xi < 0 else math.inf


def fit_gpd(excess: np.ndarray, weights: np.ndarray | None = None) -> GPD:
    """Weighted maximum-likelihood GPD fit by the profile likelihood in theta = xi / sigma."""
    y = np.asarray(excess, dtype=np.float64)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64)
    keep = w > 0
    y, w = y[keep], w[keep]
    n = w.sum()
    if y.size < 10 or n <= 0:
        raise InvalidParameter(f"too few tail scores to fit a tail model ({y.size}); sample more impostor pairs")
    ymax = float(y.max())
    ymean = float((w * y).sum() / n)
    if ymax <= 0 or ymean <= 0:
        raise InvalidParameter("tail scores are all equal; cannot fit a tail model")

    def profile(theta: float) -> tuple[float, float]:
        if abs(theta) * ymax < 1e-12:
            return -n * (math.log(ymean) + 1.0), 0.0
        xi = float((w * np.log1p(theta * y)).sum() / n)
        if xi < -1.0 or xi / theta <= 0:
            return -math.inf, xi
        return -n * (math.log(xi / theta) + 1.0 + xi), xi

    neg = -(1.0 - np.logspace(-8, -0.001, 60)) / ymax
    pos = np.logspace(-4, 3, 60) / ymax
    grid = np.concatenate([neg, [0.0], pos])
    vals = np.array([profile(t)[0] for t in grid])
    best = int(np.nanargmax(vals))
    lo = grid[max(best - 1, 0)]
    hi = grid[min(best + 1, grid.size - 1)]
    # Golden-section refinement between the best grid point's neighbours.
    gr = (math.sqrt(5) - 1) / 2
    a, b = float(lo), float(hi)
    c, d = b - gr * (b - a), a + gr * (b - a)
    fc, fd = profile(c)[0], profile(d)[0]
    for _ in range(60):
        if fc >= fd:
            b, d, fd = d, c, fc
            c = b - gr * (b - a)
            fc = profile(c)[0]
        else:
            a, c, fc = c, d, fd
            d = a + gr * (b - a)
            fd = profile(d)[0]
    theta = c if fc >= fd else d
    if max(fc, fd) < vals[best]:
        theta = float(grid[best])
    ll, xi = profile(theta)
    if abs(theta) * ymax < 1e-12:
        return GPD(0.0, ymean)
    return GPD(xi, xi / theta)


@dataclass
class TailModel:
    """FMR(t) for impostor pairs: sampled counts up to ``u``, a GPD beyond.

    ``boot`` holds bootstrap replicates (p_u, xi, sigma) for intervals. ``curve_t``/
    ``curve_fmr`` is the sampled FMR at the 1e-4 bin edges from the upper part of the
    impostor distribution down to ``u`` (statistics only), kept so a model saved to JSON can
    answer FMR(t) below ``u`` too.
    """

    u: float
    p_u: float
    gpd: GPD
    n_pairs: int
    n_exceed: int
    confidence: float = 0.95
    boot: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    curve_t: np.ndarray = field(default_factory=lambda: np.zeros(0))
    curve_fmr: np.ndarray = field(default_factory=lambda: np.zeros(0))

    # ----------------------------------------------------------------- point estimates
    def fmr(self, t: np.ndarray | float) -> np.ndarray:
        """Modelled FMR at threshold(s) t."""
        t = np.asarray(t, dtype=np.float64)
        above = self.p_u * self.gpd.sf(t - self.u)
        if self.curve_t.size:
            # Sampled FMR below u: the value at the last bin edge <= t (a step curve).
            idx = np.clip(np.searchsorted(self.curve_t, t, side="right") - 1, 0, self.curve_t.size - 1)
            below = np.where(t < self.curve_t[0], 1.0, self.curve_fmr[idx])
        else:
            below = np.full(t.shape, self.p_u)
        return np.where(t > self.u, above, np.maximum(below, self.p_u))

    def threshold_for_fmr(self, f: float) -> float:
        """Smallest threshold with modelled FMR <= f."""
        if not 0 < f < 1:
            raise InvalidParameter(f"FMR target must be in (0, 1), got {f}")
        if f >= self.p_u and self.curve_t.size:
            ok = np.flatnonzero(self.curve_fmr <= f)
            if ok.size:
                return float(self.curve_t[ok[0]])
        return float(self.u + self.gpd.isf(min(f / self.p_u, 1.0)))

    # ----------------------------------------------------------------- intervals
    def _replicates(self) -> list[tuple[float, GPD]]:
        return [(float(p), GPD(float(xi), float(s))) for p, xi, s in self.boot]

    def threshold_interval(self, f: float) -> tuple[float, float]:
        """Percentile bootstrap interval of the threshold giving FMR f (nan without replicates)."""
        ts = []
        for p, g in self._replicates():
            ts.append(self.u + float(g.isf(min(f / p, 1.0))) if f < p else self.threshold_for_fmr(f))
        # A cosine never exceeds 1: an upper bound of 1.0 means the data cannot rule out that
        # no threshold holds the target.
        return _percentile_interval(np.clip(np.array(ts), -1.0, 1.0), self.confidence)

    def fmr_interval(self, t: float) -> tuple[float, float]:
        """Percentile bootstrap interval of FMR(t) (nan without replicates)."""
        if t <= self.u:
            v = float(self.fmr(t))
            return v, v
        vals = np.array([p * float(g.sf(t - self.u)) for p, g in self._replicates()])
        return _percentile_interval(vals, self.confidence)

    # ----------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        """Statistics only (no template, no score of an identified pair)."""
        return {
            "u": self.u, "p_u": self.p_u, "xi": self.gpd.xi, "sigma": self.gpd.sigma,
            "n_pairs": self.n_pairs, "n_exceed": self.n_exceed, "confidence": self.confidence,
            "boot": self.boot.tolist(), "curve_t": self.curve_t.tolist(), "curve_fmr": self.curve_fmr.tolist(),
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> TailModel:
        return TailModel(
            u=float(d["u"]), p_u=float(d["p_u"]), gpd=GPD(float(d["xi"]), float(d["sigma"])),
            n_pairs=int(d["n_pairs"]), n_exceed=int(d["n_exceed"]), confidence=float(d["confidence"]),
            boot=np.asarray(d["boot"], dtype=np.float64).reshape(-1, 3),
            curve_t=np.asarray(d["curve_t"], dtype=np.float64), curve_fmr=np.asarray(d["curve_fmr"], dtype=np.float64),
        )


def fpir_from_fmr(fmr: np.ndarray | float, gallery_size: int | np.ndarray) -> np.ndarray:
    """FPIR(N) = 1 - (1 - FMR) ** N (independent comparisons), computed without cancellation."""
    fmr = np.clip(np.asarray(fmr, dtype=np.float64), 0.0, 1.0 - 1e-16)
    return -np.expm1(np.asarray(gallery_size, dtype=np.float64) * np.log1p(-fmr))


def fmr_for_fpir(fpir: float, gallery_size: int) -> float:
    """The per-comparison FMR that gives ``fpir`` over a gallery of ``gallery_size``."""
    if not 0 < fpir < 1:
        raise InvalidParameter(f"FPIR target must be in (0, 1), got {fpir}")
    if gallery_size < 1:
        raise InvalidParameter(f"gallery size must be >= 1, got {gallery_size}")
    return float(-np.expm1(np.log1p(-fpir) / gallery_size))


def fit_tail(sample: ImpostorSample, tail_fraction: float = 1e-4, confidence: float = 0.95,
             bootstrap: int = 200, rng: np.random.Generator | None = None) -> TailModel:
    """Fit the tail model to an impostor sample, with a template bootstrap.

    ``u`` is set so that a fraction ``tail_fraction`` of the sampled pairs exceed it (at least
    ``MIN_EXCEEDANCES``, at most what the sample kept exactly).
    """
    rng = np.random.default_rng(0) if rng is None else rng
    n = sample.n_pairs
    scores = sample.tail_scores.astype(np.float64)
    order = np.argsort(-scores, kind="stable")
    scores = scores[order]
    ti, tj = sample.tail_i[order], sample.tail_j[order]
    k = int(min(max(round(tail_fraction * n), MIN_EXCEEDANCES), scores.size - 1))
    if k < MIN_EXCEEDANCES:
        raise InvalidParameter(
            f"only {scores.size} impostor pairs in the kept tail; a tail model needs at least "
            f"{MIN_EXCEEDANCES + 1}: give more templates or a larger --impostor-pairs")
    u = float(scores[k])
    ex = scores > u
    n_ex = int(ex.sum())
    gpd = fit_gpd(scores[ex] - u)
    ge = sample.total[::-1].cumsum()[::-1]
    from dedup.evaluation.scores import EDGES, edge_at_or_above

    k_u = edge_at_or_above(u)
    first = int(np.flatnonzero(ge > 0)[0]) if n else 0
    start = max(first, k_u - 20_000)
    curve_t = EDGES[start:k_u]
    curve_fmr = ge[start:k_u] / max(n, 1)
    model = TailModel(u, n_ex / n, gpd, n, n_ex, confidence, curve_t=curve_t, curve_fmr=curve_fmr)
    if bootstrap > 0:
        model.boot = _bootstrap(sample, scores[ex] - u, ti[ex], tj[ex], bootstrap, rng)
    return model


def _bootstrap(sample: ImpostorSample, excess: np.ndarray, ti: np.ndarray, tj: np.ndarray,
               reps: int, rng: np.random.Generator) -> np.ndarray:
    m = sample.rows.shape[0]
    ident = sample.row_identity
    _, inv = np.unique(ident, return_inverse=True)
    out = np.zeros((reps, 3))
    for r in range(reps):
        w = np.asarray(rng.poisson(1.0, size=m), dtype=np.float64)
        per_id = np.bincount(inv, weights=w)
        per_id_sq = np.bincount(inv, weights=w * w)
        total = (w.sum() ** 2 - (w * w).sum()) / 2 - (per_id ** 2 - per_id_sq).sum() / 2
        pw = w[ti] * w[tj]
        try:
            g = fit_gpd(excess, pw)
        except InvalidParameter:
            g = GPD(math.nan, math.nan)
        out[r] = (pw.sum() / total if total > 0 else math.nan, g.xi, g.sigma)
    return out[np.isfinite(out).all(axis=1)]


def _percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size < 10:
        return math.nan, math.nan
    a = (1 - confidence) / 2
    return float(np.quantile(values, a)), float(np.quantile(values, 1 - a))
