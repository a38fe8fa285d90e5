"""Anchor the ``face-like`` profile to dlib's own template distribution, and refit its genuine
scores to real pairs of different photographs (issue 13).

    python benchmarks/profiles/anchor_face_like.py [--out benchmarks/profiles/results]

1. Templates (dlib-bin, the same weights and chip as ``dedup embed``; L2-normalised) of every
   real face on hand: the 100 faces of ``skimage.data.lfw_subset()`` (upscaled 8x, as
   ``fit_face_like.py``), Eileen Collins (scikit-image), Grace Hopper (matplotlib) and the
   distinct captures of ``face_recognition`` 1.3.0's test photos (Obama three times, Biden;
   fetched into a cache by ``tests/support/real_photos.py``).
2. The **anchor**: their mean direction and the top ``K`` principal directions of what is left
   after the mean direction is projected out, written to ``dedup/bench/anchors/face-like.json``
   (statistics of 106 templates of about 100 people: no template of anyone can be recovered
   from a mean and a set of axes). ``dedup.bench.synth`` builds face-like templates around
   them: the shared direction is dlib's mean direction, and the identity's largest variances
   lie along dlib's own principal directions, in order.
3. The **genuine refit**: the face-like genuine targets were augmented copies of one photo
   (mean 0.979, p5 0.947). Real pairs of different photographs of one person score lower; the
   genuine mean target becomes theirs and p5 moves down by the same amount, then
   (``w_mean``, ``w_cap``, ``alpha``, ``quality_sigma``) are refitted by Nelder-Mead on the
   generator itself to those and to the unchanged impostor targets (mean, sd, p99).
4. The check: the real full-resolution photos scored against an anchored synthetic gallery.

Writes ``results/face-like-anchor.json`` (statistics only) and the anchor file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from dlib_measure import Dlib, rgb8, upscale_lfw  # noqa: E402
from profile_stats import simulate, summary  # noqa: E402

from dedup.bench import synth  # noqa: E402

K = 32                      # principal directions kept in the anchor
ANCHOR = ROOT / "dedup" / "bench" / "anchors" / "face-like.json"


def templates() -> dict:
    """Unit dlib templates of the real faces on hand (memory only) with who is in each."""
    import skimage.data as sd
    from PIL import Image

    from tests.support.real_photos import distinct_captures, real_photos, with_other_people

    net = Dlib.load()
    lfw = []
    for face in sd.lfw_subset()[:100]:
        img = upscale_lfw(face)
        vec, _ = net.describe(img, box=net.box(img, upsample=0), fallback_whole=True)
        lfw.append(vec)
    real, persons, names = [], [], []
    for photo in distinct_captures(with_other_people(real_photos())):
        vec, _ = net.describe(rgb8(np.asarray(Image.open(photo.path).convert("RGB"))))
        if vec is None:
            raise SystemExit(f"no face found in {photo.name}")
        real.append(vec)
        persons.append(photo.person)
        names.append(photo.name)

    def unit(x: list) -> np.ndarray:
        a = np.array(x, dtype=np.float64)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    return {"lfw": unit(lfw), "real": unit(real), "persons": persons, "names": names}


def anchor_of(lfw: np.ndarray, real: np.ndarray) -> dict:
    every = np.vstack([lfw, real])
    mean = every.mean(axis=0)
    m = mean / np.linalg.norm(mean)
    resid = every - np.outer(every @ m, m)
    _, s, vt = np.linalg.svd(resid - resid.mean(axis=0), full_matrices=False)
    var = s ** 2 / (every.shape[0] - 1)
    return {"model": "dlib_face_recognition_resnet_model_v1 (face-recognition-models), 150 px chip, padding 0.25",
            "templates": int(every.shape[0]), "people": "about 100 (lfw_subset) + 4 (real photos)",
            "mean_direction": np.round(m, 7).tolist(), "mean_vector_norm": float(np.linalg.norm(mean)),
            "principal_directions": np.round(vt[:K], 7).tolist(),
            "principal_variance_share": np.round(var[:K] / var.sum(), 5).tolist(),
            "written": time.strftime("%Y-%m-%d"), "by": "benchmarks/profiles/anchor_face_like.py"}


def pair_scores(real: np.ndarray, persons: list[str]) -> tuple[np.ndarray, np.ndarray]:
    s = real @ real.T
    iu = np.triu_indices(len(persons), k=1)
    same = np.array([persons[i] == persons[j] for i, j in zip(*iu)])
    return s[iu][same], s[iu][~same]


def against_gallery(profile: synth.Profile, probes: np.ndarray, size: int = 20_000, seed: int = 3) -> dict:
    g = synth.SyntheticData(synth.SynthSpec(profile, size, queries=0, seed=seed)).gallery().vectors
    scores = (probes.astype(np.float32) @ g.T).ravel()
    return summary(scores.astype(np.float64))


IMPOSTOR_TARGETS = {"mean": 0.818, "sd": 0.0439, "p99": 0.903}   # the crowding-corrected LFW ones (README)


def refit(base: synth.Profile, mean_target: float, p5_target: float, seed: int = 5) -> tuple[synth.Profile, dict]:
    """Nelder-Mead over (w_mean, log w_cap, alpha, quality_sigma), w_id = 1 - w_mean - w_group, to
    the impostor targets (unchanged) and the new genuine ones."""
    from scipy.optimize import minimize

    def make(x: np.ndarray) -> synth.Profile:
        w_mean = float(np.clip(x[0], 0.5, 0.95))
        return replace(base, w_mean=w_mean, w_id=1.0 - w_mean - base.w_group, w_cap=float(np.exp(x[1])),
                       alpha=float(np.clip(x[2], 0.0, 3.0)), quality_sigma=float(np.clip(x[3], 0.0, 2.0)))

    def loss(x: np.ndarray) -> float:
        sim = simulate(make(x), gallery=3000, probes=2000, seed=seed)
        gen, imp = sim["genuine"], sim["impostor"].ravel()
        return (((float(np.mean(gen)) - mean_target) / 0.002) ** 2 + ((float(np.quantile(gen, 0.05)) - p5_target) / 0.005) ** 2
                + ((float(imp.mean()) - IMPOSTOR_TARGETS["mean"]) / 0.002) ** 2
                + ((float(imp.std()) - IMPOSTOR_TARGETS["sd"]) / 0.001) ** 2
                + ((float(np.quantile(imp, 0.99)) - IMPOSTOR_TARGETS["p99"]) / 0.002) ** 2)

    x0 = np.array([base.w_mean, np.log(base.w_cap), base.alpha, base.quality_sigma])
    res = minimize(loss, x0, method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-2, "maxfev": 160})
    fitted = make(res.x)
    sim = simulate(fitted, gallery=3000, probes=2000, seed=seed + 1)
    return fitted, {"evaluations": int(res.nfev), "loss": float(res.fun), "w_mean": fitted.w_mean, "w_id": fitted.w_id,
                    "w_cap": fitted.w_cap, "alpha": fitted.alpha, "quality_sigma": fitted.quality_sigma,
                    "other_seed_genuine": summary(np.asarray(sim["genuine"], dtype=np.float64)),
                    "other_seed_impostor": summary(np.asarray(sim["impostor"], dtype=np.float64).ravel())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)
    t0 = time.time()
    got = templates()
    anchor = anchor_of(got["lfw"], got["real"])
    ANCHOR.parent.mkdir(parents=True, exist_ok=True)
    ANCHOR.write_text(json.dumps(anchor, indent=1) + "\n", encoding="utf-8")
    genuine, impostor = pair_scores(got["real"], got["persons"])
    synth.load_anchor.cache_clear()
    old = replace(synth.PROFILES["face-like"], anchor="face-like")
    shift = float(np.mean(genuine)) - 0.979
    fitted, fit = refit(old, float(np.mean(genuine)), 0.947 + shift)
    report = {
        "real_photos": got["names"], "real_people": sorted(set(got["persons"])),
        "real_genuine_pairs": len(genuine), "real_genuine_scores": np.round(np.sort(genuine), 4).tolist(),
        "real_impostor_pairs": len(impostor), "real_impostor_summary": summary(impostor),
        "real_dot_mean_direction": np.round(got["real"] @ np.array(anchor["mean_direction"]), 4).tolist(),
        "anchor": {k: v for k, v in anchor.items() if k not in ("mean_direction", "principal_directions")},
        "genuine_targets": {"mean": float(np.mean(genuine)), "p5": 0.947 + shift, "shift_from_augmented": shift},
        "genuine_fit": fit,
        "real_vs_synthetic_gallery": against_gallery(fitted, got["real"]),
        "real_vs_unanchored_gallery_before": against_gallery(synth.PROFILES["face-like"], got["real"]),
        "synthetic_vs_synthetic": summary(np.asarray(simulate(fitted, gallery=4000, probes=2000, seed=1)["impostor"],
                                                     dtype=np.float64)),
        "seconds": round(time.time() - t0, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "face-like-anchor.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: report[k] for k in ("real_genuine_scores", "genuine_targets", "genuine_fit",
                                             "real_vs_synthetic_gallery", "synthetic_vs_synthetic")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
