"""Fit the ``face-like`` synthetic profile to dlib's face-recognition ResNet (128-d).

    python benchmarks/profiles/fit_face_like.py [--captures 40] [--out benchmarks/profiles/results]

Steps (``README.md`` in this folder explains them and the numbers):
1. descriptors of the 100 LFW faces in ``skimage.data.lfw_subset()`` (25x25, upscaled 8x);
2. descriptors of the real photos that matplotlib and scikit-image ship, and of random
   augmented captures of them (scale, crop shift, light, blur, JPEG, rotation, flip);
3. the crowding correction: the same captures degraded to look like lfw_subset faces
   (framing, grey, 25x25) crowd together; the ratio of impostor distances before and after
   degradation rescales the LFW impostor distribution;
4. a Nelder-Mead fit of the profile's weights so that ``dedup.bench.synth`` reproduces the
   corrected impostor targets and the genuine (augmented-capture) targets;
5. dlib's Euclidean 0.6 rule as a cosine threshold.

Writes ``face-like-fit.json`` (statistics only: no descriptor and no image is stored).
Needs dlib-bin, face-recognition-models, scikit-image, matplotlib, scipy, pillow. Takes a few
minutes on one core.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dlib_measure import (
    Dlib,
    degrade_like_lfw,
    lfw_frame,
    random_capture,
    real_photos,
    single_augmentations,
    upscale_lfw,
)
from profile_stats import pair_cosines, simulate, spectrum, spectrum_of_samples, summary, unit

from dedup.bench.synth import PROFILES

DLIB_EUCLIDEAN_THRESHOLD = 0.6  # dlib's documented rule for "same person" (dnn_face_recognition_ex.cpp)
DLIB_LFW_ACCURACY = 0.9938      # dlib's published LFW accuracy for this model


def machine() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            key, _, val = line.partition(":")
            if key.strip() == "Model name":
                info["cpu_model"] = val.strip()
            if key.strip() == "CPU(s)":
                info["cpu_count"] = int(val.strip())
    except (OSError, subprocess.CalledProcessError):
        pass
    import dlib

    info["dlib"] = dlib.__version__
    return info


# ----------------------------------------------------------------------------- measurement
def measure(n_captures: int, seed: int) -> dict:
    """Descriptors (kept in memory only) and their statistics."""
    import skimage.data as sd

    net = Dlib.load()
    # (a) LFW faces: detect on the 8x upscaled face; where the detector finds nothing, the
    # whole frame is the face box and the 5-point predictor aligns inside it.
    faces = sd.lfw_subset()[:100]
    lfw, hows, boxes = [], [], []
    for face in faces:
        img = upscale_lfw(face)
        box = net.box(img, upsample=0)
        if box is not None:
            boxes.append([box.left(), box.top(), box.right(), box.bottom()])
        vec, how = net.describe(img, box=box, fallback_whole=True)
        lfw.append(vec)
        hows.append(how)
    lfw = np.array(lfw)
    frame = lfw_frame(np.array(boxes, dtype=np.float64) / upscale_lfw(faces[0]).shape[0])

    # (b, c) real photos and their augmented captures, at full resolution and degraded.
    rng = np.random.default_rng(seed)
    photos, full, degraded, singles, left_out, originals = {}, {}, {}, {}, {}, {}
    for name, img in real_photos().items():
        box = net.box(img)
        if box is None:
            left_out[name] = "dlib's frontal detector finds no face (the face is in profile)"
            continue
        original, _ = net.describe(img, box=box)
        originals[name] = original
        singles[name] = {}
        for aug, aimg in single_augmentations(img, box).items():
            vec, how = net.describe(aimg)
            singles[name][aug] = None if vec is None else float(pair_cosines(original[None], vec[None])[0])
        vf, vd, misses = [], [], 0
        while len(vf) < n_captures:
            cap = random_capture(img, box, rng)
            cbox = net.box(cap)
            if cbox is None:
                misses += 1
                continue
            vf.append(net.describe(cap, box=cbox)[0])
            vd.append(net.describe(degrade_like_lfw(cap, cbox, frame), fallback_whole=True)[0])
        full[name], degraded[name] = np.array(vf), np.array(vd)
        photos[name] = {"size": list(img.shape[:2]), "face_box_width": int(box.right() - box.left()),
                        "captures": n_captures, "captures_without_detection": misses}
    return {"lfw": lfw, "lfw_how": hows, "frame": frame, "full": full, "degraded": degraded,
            "singles": singles, "photos": photos, "left_out": left_out, "originals": originals}


def crowding(full: dict, degraded: dict, seed: int) -> dict:
    """kappa = mean impostor distance (1 - cos) at full resolution / the same after degradation."""
    names = sorted(full)
    if len(names) < 2:
        raise SystemExit("the crowding correction needs two real people; found " + ", ".join(names))
    a, b = names[:2]
    cf = pair_cosines(full[a], full[b])
    cd = pair_cosines(degraded[a], degraded[b])
    kappa = float((1 - cf).mean() / (1 - cd).mean())
    rng = np.random.default_rng(seed)
    boots = []
    n_a, n_b = len(full[a]), len(full[b])
    for _ in range(500):
        ia, ib = rng.integers(0, n_a, n_a), rng.integers(0, n_b, n_b)
        f = pair_cosines(full[a][ia], full[b][ib])
        d = pair_cosines(degraded[a][ia], degraded[b][ib])
        boots.append((1 - f).mean() / (1 - d).mean())
    gen_full = np.concatenate([pair_cosines(full[n]) for n in names])
    gen_deg = np.concatenate([pair_cosines(degraded[n]) for n in names])
    return {
        "kappa": kappa,
        "kappa_bootstrap_p5_p95_over_captures": [float(np.percentile(boots, 5)), float(np.percentile(boots, 95))],
        "identity_pair": [a, b],
        "impostor_full_resolution": summary(cf),
        "impostor_degraded_like_lfw": summary(cd),
        "genuine_full_resolution": summary(gen_full),
        "genuine_degraded_like_lfw": summary(gen_deg),
    }


def corrected(cos: np.ndarray, kappa: float) -> np.ndarray:
    """Undo the crowding: distances from the (near) shared direction grow by kappa."""
    return 1.0 - kappa * (1.0 - cos)


def threshold_from_dlib(norms: np.ndarray, seed: int) -> dict:
    """dlib's Euclidean rule as a cosine on L2-normalised descriptors.

    |x1 - x2|^2 = r1^2 + r2^2 - 2 r1 r2 cos, so |x1 - x2| = 0.6 means
    cos = (r1^2 + r2^2 - 0.36) / (2 r1 r2), which is 1 - 0.36 / (2 r^2) for equal norms r.
    """
    d2 = DLIB_EUCLIDEAN_THRESHOLD ** 2
    r = float(np.median(norms))
    rng = np.random.default_rng(seed)
    r1, r2 = rng.choice(norms, 20000), rng.choice(norms, 20000)
    per_pair = (r1 ** 2 + r2 ** 2 - d2) / (2 * r1 * r2)
    return {
        "median_norm": r,
        "cosine": float(1 - d2 / (2 * r * r)),
        "per_pair_p5_p50_p95": [float(np.percentile(per_pair, q)) for q in (5, 50, 95)],
        "norm_p5_p95": [float(np.percentile(norms, 5)), float(np.percentile(norms, 95))],
    }


# ----------------------------------------------------------------------------- fit
FIT_SCALE = {  # tolerance-like scale of each target in the loss
    "impostor_mean": 0.004, "impostor_sd": 0.002, "impostor_p99": 0.004,
    "participation_ratio": 1.5, "genuine_mean": 0.003, "genuine_p5": 0.006,
}


def generated(params: np.ndarray, base, seed: int) -> tuple[dict, object]:
    w_mean, log_cap, alpha, qsig = params
    w_mean = float(np.clip(w_mean, 0.0, 0.98))
    w_group = base.w_group
    profile = replace(base, w_mean=w_mean, w_id=max(1.0 - w_mean - w_group, 1e-3),
                      w_cap=float(np.exp(log_cap)), alpha=float(max(alpha, 0.0)),
                      quality_sigma=float(np.clip(qsig, 0.0, 2.0)))
    sim = simulate(profile, gallery=3000, probes=2000, seed=seed)
    imp = sim["impostor"].ravel()
    spec = spectrum_of_samples(sim["gallery"].vectors, repeats=10, seed=seed)
    return {
        "impostor_mean": float(imp.mean()), "impostor_sd": float(imp.std()),
        "impostor_p99": float(np.percentile(imp, 99)),
        "participation_ratio": spec["participation_ratio"],
        "genuine_mean": float(sim["genuine"].mean()), "genuine_p5": float(np.percentile(sim["genuine"], 5)),
    }, profile


def fit(targets: dict, seed: int) -> tuple[object, dict, int]:
    from scipy.optimize import minimize

    base = PROFILES["face-like"]

    def loss(params: np.ndarray) -> float:
        got, _ = generated(params, base, seed)
        return float(sum(((got[k] - targets[k]) / s) ** 2 for k, s in FIT_SCALE.items()))

    x0 = np.array([base.w_mean, np.log(base.w_cap), base.alpha, base.quality_sigma])
    res = minimize(loss, x0, method="Nelder-Mead",
                   options={"xatol": 1e-3, "fatol": 1e-2, "maxfev": 160, "initial_simplex": _simplex(x0)})
    got, profile = generated(res.x, base, seed)
    return profile, got, int(res.nfev)


def _simplex(x0: np.ndarray) -> np.ndarray:
    steps = np.array([0.05, 0.5, 0.3, 0.15])
    return np.vstack([x0] + [x0 + np.eye(len(x0))[i] * steps[i] for i in range(len(x0))])


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--captures", type=int, default=40, help="random augmented captures per real photo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)
    t0 = time.time()

    m = measure(args.captures, args.seed)
    lfw = m["lfw"]
    lfw_cos = pair_cosines(lfw)
    crowd = crowding(m["full"], m["degraded"], args.seed)
    kappa = crowd["kappa"]
    lfw_corr = corrected(lfw_cos, kappa)
    names = sorted(m["full"])
    genuine = np.concatenate([pair_cosines(m["full"][n]) for n in names])
    norms_full = np.concatenate([np.linalg.norm(m["full"][n], axis=1) for n in names])
    norms_lfw = np.linalg.norm(lfw, axis=1)
    thr = threshold_from_dlib(norms_full, args.seed)
    real_pair = pair_cosines(m["originals"][names[0]][None], m["originals"][names[1]][None])
    u = unit(lfw)

    targets = {
        "impostor_mean": float(lfw_corr.mean()), "impostor_sd": float(lfw_corr.std()),
        "impostor_p99": float(np.percentile(lfw_corr, 99)),
        "participation_ratio": spectrum(lfw)["participation_ratio"],
        "genuine_mean": float(genuine.mean()), "genuine_p5": float(np.percentile(genuine, 5)),
    }
    profile, got, nfev = fit(targets, args.seed)
    profile = replace(profile, threshold=round(thr["cosine"], 3))
    check = simulate(profile, gallery=4000, probes=4000, seed=args.seed + 1)
    fmr = float((check["impostor"] >= profile.threshold).mean())
    fnmr = float((check["genuine"] < profile.threshold).mean())

    result = {
        "what": "face-like profile fitted to dlib_face_recognition_resnet_model_v1 (128-d) via dlib-bin",
        "machine": machine(),
        "seconds": round(time.time() - t0, 1),
        "sources": {
            "lfw_subset": {"faces": len(lfw), "detected_after_8x_upscale": m["lfw_how"].count("detected"),
                           "whole_frame_fallback": m["lfw_how"].count("whole-frame"),
                           "mean_detection_box_in_frame_ltrb": [float(v) for v in m["frame"]]},
            "real_photos": m["photos"], "left_out": m["left_out"],
        },
        "raw_descriptor_norms": {"lfw_subset": summary(norms_lfw), "real_photo_captures": summary(norms_full)},
        "lfw_subset_uncorrected": {
            "impostor_cosine": summary(lfw_cos), "mean_vector_norm": float(np.linalg.norm(u.mean(axis=0))),
            "spectrum": spectrum(lfw),
            "fmr_at_dlib_threshold": float((lfw_cos >= thr["cosine"]).mean()),
        },
        "crowding_correction": crowd,
        "lfw_subset_corrected": {
            "impostor_cosine": summary(lfw_corr),
            "mean_vector_norm_implied": float(np.sqrt(max(lfw_corr.mean(), 0.0))),
            "fmr_at_dlib_threshold": float((lfw_corr >= thr["cosine"]).mean()),
        },
        "real_photos_original_pair_cosine": {"pair": names[:2], "cosine": float(real_pair[0])},
        "genuine_augmented_captures": summary(genuine),
        "single_augmentation_cosine_to_original": m["singles"],
        "dlib_threshold": {"euclidean": DLIB_EUCLIDEAN_THRESHOLD, **thr,
                           "published_lfw_accuracy": DLIB_LFW_ACCURACY},
        "fit": {
            "targets": targets, "generated": got, "loss_scales": FIT_SCALE, "evaluations": nfev,
            "fixed": {"w_group": profile.w_group, "w_cluster": profile.w_cluster,
                      "groups": [[g.name, g.share, g.spread] for g in profile.groups]},
            "parameters": {k: round(float(getattr(profile, k)), 4) for k in
                           ("w_mean", "w_group", "w_id", "w_cap", "alpha", "quality_sigma")},
            "threshold": profile.threshold,
            "check_other_seed": {"fmr_at_threshold": fmr, "fnmr_at_threshold": fnmr,
                                 "impostor": summary(check["impostor"].ravel()),
                                 "genuine": summary(check["genuine"])},
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "face-like-fit.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"targets": targets, "generated": got, "parameters": result["fit"]["parameters"],
                      "threshold": profile.threshold, "kappa": kappa,
                      "check": result["fit"]["check_other_seed"]["fmr_at_threshold"]}, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
