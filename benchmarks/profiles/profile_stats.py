"""Statistics of score distributions, shared by the fit and check scripts.

The same estimators are applied to real descriptors (``fit_face_like.py``) and to the
generator's templates, so targets and fits are compared like for like (in particular the
effective dimensionality is estimated from 100-template samples on both sides, because the
real set has 100 faces and the estimate depends on the sample size).
"""

from __future__ import annotations

import numpy as np

from dedup.bench.synth import Profile, SyntheticData, SynthSpec

PERCENTILES = (1, 5, 10, 50, 90, 95, 99, 99.9)


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def pair_cosines(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Cosines of all pairs within ``a`` (upper triangle) or between ``a`` and ``b``."""
    a = unit(a)
    if b is None:
        c = a @ a.T
        return c[np.triu_indices(len(a), 1)]
    return (a @ unit(b).T).ravel()


def summary(scores: np.ndarray) -> dict:
    s = np.asarray(scores, dtype=np.float64)
    out = {"n": int(s.size), "mean": float(s.mean()), "sd": float(s.std())}
    out.update({f"p{p:g}": float(np.percentile(s, p)) for p in PERCENTILES})
    return out


def spectrum(vectors: np.ndarray, top: int = 20) -> dict:
    """Covariance spectrum of unit vectors: participation ratio, power-law decay, leading share."""
    u = unit(vectors)
    eig = np.linalg.eigvalsh(np.cov(u, rowvar=False))[::-1]
    eig = np.clip(eig, 0.0, None)
    pr = float(eig.sum() ** 2 / (eig ** 2).sum())
    k = min(top, int((eig > 0).sum()))
    slope = -np.polyfit(np.log(np.arange(1, k + 1)), np.log(eig[:k]), 1)[0]
    return {
        "participation_ratio": pr,
        "decay_exponent_top20": float(slope),
        "variance_share_top10": float(eig[:10].sum() / eig.sum()),
        "total_variance": float(eig.sum()),
        "eigenvalues_top10_normalised": [float(v) for v in eig[:10] / eig.sum()],
    }


def spectrum_of_samples(vectors: np.ndarray, size: int = 100, repeats: int = 20, seed: int = 0) -> dict:
    """``spectrum`` averaged over random subsets of ``size`` vectors (matches a 100-face set)."""
    rng = np.random.default_rng(seed)
    runs = [spectrum(vectors[rng.choice(len(vectors), size, replace=False)]) for _ in range(repeats)]
    return {k: float(np.mean([r[k] for r in runs])) for k in
            ("participation_ratio", "decay_exponent_top20", "variance_share_top10", "total_variance")}


def simulate(profile: Profile, gallery: int = 4000, probes: int = 4000, seed: int = 0) -> dict:
    """Genuine and impostor scores of a profile, straight from ``dedup.bench.synth``.

    Genuine: each mated probe against its gallery mate (no planted duplicates, so one mate).
    Impostor: every non-mated probe against every gallery row; ``same_group`` marks pairs
    whose two people are in the same group (for group false-match rates).
    """
    data = SyntheticData(SynthSpec(profile, gallery_size=gallery, queries=probes,
                                   duplicate_rate=0.0, mated_fraction=0.5, seed=seed))
    g = data.gallery()
    pr = data.probes()
    m = np.flatnonzero(pr.mated)
    mate = pr.mate_rows[pr.mate_offsets[m]]
    genuine = np.einsum("ij,ij->i", pr.vectors[m].astype(np.float64), g.vectors[mate].astype(np.float64))
    n = np.flatnonzero(~pr.mated)
    imp = pr.vectors[n] @ g.vectors.T
    return {
        "gallery": g, "genuine": genuine, "genuine_group": pr.group[m],
        "impostor": imp, "probe_group": pr.group[n], "gallery_group": g.group,
    }


def fmr_by_group(sim: dict, threshold: float, names: list[str]) -> dict:
    """False-match rate over all impostor pairs and over pairs within each group."""
    imp = sim["impostor"]
    out = {"all": float((imp >= threshold).mean())}
    for gi, name in enumerate(names):
        rows = sim["probe_group"] == gi
        cols = sim["gallery_group"] == gi
        if rows.any() and cols.any():
            out[f"within_{name}"] = float((imp[np.ix_(rows, cols)] >= threshold).mean())
    return out


def profile_report(profile: Profile, gallery: int = 4000, probes: int = 4000, seed: int = 0) -> dict:
    """Everything the check script prints for one profile."""
    sim = simulate(profile, gallery, probes, seed)
    names = [g.name for g in profile.groups]
    genuine = sim["genuine"]
    return {
        "profile": profile.name,
        "dim": profile.dim,
        "threshold": profile.threshold,
        "threshold_source": profile.threshold_source,
        "impostor": summary(sim["impostor"].ravel()),
        "genuine": summary(genuine),
        "fmr_at_threshold": fmr_by_group(sim, profile.threshold, names),
        "fnmr_at_threshold": float((genuine < profile.threshold).mean()),
        "mean_vector_norm": float(np.linalg.norm(sim["gallery"].vectors.astype(np.float64).mean(axis=0))),
        "spectrum_100_samples": spectrum_of_samples(sim["gallery"].vectors),
        "groups": [{"name": g.name, "share": g.share, "spread": g.spread} for g in profile.groups],
        "parameters": {k: getattr(profile, k) for k in
                       ("w_mean", "w_group", "w_cluster", "n_clusters", "w_id", "w_cap", "alpha", "quality_sigma")},
        "sizes": {"gallery": gallery, "probes": probes, "seed": seed},
    }
