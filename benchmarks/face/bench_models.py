"""HOG vs RetinaFace, dlib vs SFace, in one run on this machine's CPU.

    PYTHONPATH=. python benchmarks/face/bench_models.py [--out benchmarks/face/results-models-cpu.json]

Measures, each once per run:

- **detection**: CPU ms per photo (process CPU time, one thread, best of 3) and the share of
  faces found, HOG (dlib, the default settings: 1024 px, upsample retry) vs RetinaFace (our
  torch module, float32, ``retinaface_max_side`` 1024 and 640), on the real photos and on hard
  versions of them: half-cropped (the face cut through the middle), small (face about 40 px
  wide), rotated 30 and 60 degrees, and "turned" (a perspective warp squashing one side of
  the face: a crude synthetic stand-in for yaw; no real turned photos are available here).
  A face counts as found when the chosen box contains the face's centre, transformed with
  the photo (reference centre: eye/mouth midpoint on the original photo).
- **embedding**: CPU ms per chip, batch 64, one thread: dlib ResNet (150 px) vs SFace (112 px).
- **end to end**: wall photos/s of ``embed_photos`` with 2 worker processes, each combination.
- **real pairs**: genuine and impostor cosine scores for dlib+HOG, dlib+RetinaFace and
  SFace+RetinaFace on the face_recognition 1.3.0 photos (tests/support/real_photos.py) plus two
  more people, side by side, and SFace's documented operating point (OpenCV Zoo: cosine 0.363).
- **calibration**: RetinaFace's scores for the real faces and its strongest false detections
  on the same photos and on face-free photos (what the ``retinaface_*`` settings rest on).

Results go to JSON with the machine named. The photos are fetched once into the test cache
(pip download of face_recognition 1.3.0's sdist); nothing else leaves the machine.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.face.bench_face import machine  # noqa: E402
from dedup.config import FaceSettings  # noqa: E402
from dedup.face.decode import DecodeLimits, decode_image  # noqa: E402
from dedup.face.threshold import SFACE_COSINE_THRESHOLD  # noqa: E402
from tests.support.real_photos import distinct_captures, genuine_pairs, impostor_pairs, real_photos, with_other_people  # noqa: E402

LIMITS = DecodeLimits(50_000_000, 50_000_000, ("JPEG", "PNG"))
COMBOS = {
    "dlib+hog": {},
    "dlib+retinaface": {"detector": "retinaface"},
    "sface+retinaface": {"detector": "retinaface", "model": "sface"},
}
OPENCV_SFACE_COSINE = SFACE_COSINE_THRESHOLD  # opencv_zoo models/face_recognition_sface/sface.py
OPENCV_SFACE_L2 = 1.128


def best_of(fn, repeats: int = 3) -> float:  # type: ignore[no-untyped-def]
    """Smallest process CPU time of ``repeats`` calls, seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def load_photos() -> dict[str, np.ndarray]:
    photos = with_other_people(real_photos())
    return {name: decode_image(p.path.read_bytes(), LIMITS) for name, p in photos.items()}


def _affine(img: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    inv = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2].reshape(-1)
    grey = (128, 128, 128)
    return np.asarray(Image.fromarray(img).transform(size, Image.Transform.AFFINE, tuple(inv), Image.Resampling.BILINEAR, fillcolor=grey))


def hard_cases(rgb: np.ndarray, centre: np.ndarray, face_w: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Hard versions of one photo, each with the face centre moved as the photo was."""
    h, w = rgb.shape[:2]
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {"original": (rgb, centre)}
    cx = int(centre[0])
    out["half_cropped"] = (np.ascontiguousarray(rgb[:, : cx + 1]), centre.copy())  # cut through the face centre
    f = 40.0 / face_w
    small = np.asarray(Image.fromarray(rgb).resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BILINEAR))
    out["small_40px"] = (small, centre * f)
    for deg in (30, 60):
        a = np.radians(deg)
        rot = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])  # counter-clockwise on screen
        corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=float) @ rot.T
        shift = -corners.min(axis=0)
        size = tuple(int(v) for v in np.ceil(corners.max(axis=0) + shift))
        m = np.hstack([rot, shift[:, None]])
        out[f"rotated_{deg}"] = (_affine(rgb, m, size), m[:, :2] @ centre + m[:, 2])
    # "turned": squash the image's left part horizontally around the face (perspective-like).
    xs = np.arange(w, dtype=float)
    left = xs < centre[0]
    src_x = np.where(left, centre[0] - (centre[0] - xs) * 1.8, xs)  # left side compressed 1.8x
    valid = src_x >= 0
    cols = np.clip(src_x, 0, w - 1).astype(int)
    turned = rgb[:, cols].copy()
    turned[:, ~valid] = 128
    out["turned"] = (turned, centre.copy())
    return out


def face_centres(photos: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, float]]:
    """Reference centre (eyes and mouth) and width of the face in each photo, from RetinaFace and
    HOG agreeing on the original (photos where they disagree are left out)."""
    import dlib

    from dedup.face.retinaface import RetinaFace, load_shipped_net, shrink

    det = RetinaFace(load_shipped_net())
    hog = dlib.get_frontal_face_detector()
    out = {}
    for name, rgb in photos.items():
        faces = det.detect([rgb], 0.5, 1024)[0]
        small, f = shrink(rgb, 1024)
        rects, scores, _ = hog.run(small, 1, 0.0)
        if not faces or not rects:
            continue
        centre = faces[0].landmarks.mean(axis=0)
        r = rects[int(np.argmax(scores))]
        if not (r.left() / f <= centre[0] <= r.right() / f and r.top() / f <= centre[1] <= r.bottom() / f):
            continue
        out[name] = (centre, float(faces[0].box[2] - faces[0].box[0]))
    return out


def bench_detection(photos: dict[str, np.ndarray]) -> dict[str, object]:
    from dedup.face.detect_retina import RetinaDetector, RetinaParams
    from dedup.face.prepare import make_detector
    from dedup.face.reasons import Rejected

    refs = face_centres(photos)
    cases: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for name, (centre, width) in refs.items():
        for kind, case in hard_cases(photos[name], centre, width).items():
            cases.setdefault(kind, []).append(case)
    s = FaceSettings()
    def params(side: int) -> RetinaParams:
        return RetinaParams(side, s.retinaface_min_score, s.retinaface_multi_face_min_score, s.retinaface_multi_face_area_ratio)

    rf = RetinaDetector(params(s.retinaface_max_side))
    detectors = {"hog": make_detector(s), f"retinaface_{s.retinaface_max_side}": rf}
    for side in (640, 1024):
        if side != s.retinaface_max_side:
            detectors[f"retinaface_{side}"] = RetinaDetector(params(side), rf.detector)
    result: dict[str, object] = {"photos_per_kind": {k: len(v) for k, v in cases.items()}}
    for dname, det in detectors.items():
        per_kind = {}
        for kind, items in cases.items():
            found = 0
            for rgb, centre in items:
                try:
                    d = det.detect(rgb)
                    x0, y0, x1, y1 = d.box
                    found += int(x0 <= centre[0] <= x1 and y0 <= centre[1] <= y1)
                except Rejected:
                    pass

            def run_all(det=det, items=items) -> None:  # type: ignore[no-untyped-def]
                for rgb, _ in items:
                    try:
                        det.detect(rgb)
                    except Rejected:
                        pass

            ms = best_of(run_all) / len(items) * 1000
            per_kind[kind] = {"ms_per_photo_cpu": round(ms, 1), "found": found, "of": len(items),
                              "share_found": round(found / len(items), 3)}
        result[dname] = per_kind
    return result


def bench_embedding(photos: dict[str, np.ndarray]) -> dict[str, object]:
    import torch

    from dedup.face.model import load_model
    from dedup.face.prepare import PhotoBytes, Preparer

    torch.set_num_threads(1)
    out: dict[str, object] = {"threads": 1, "batch": 64, "clock": "process CPU time, best of 3"}
    for combo in ("dlib+retinaface", "sface+retinaface"):
        s = FaceSettings(workers=1, device="cpu", **COMBOS[combo])
        prep, model = Preparer(s), load_model(s)
        import io

        chips = []
        for rgb in photos.values():
            buf = io.BytesIO()
            Image.fromarray(rgb).save(buf, "PNG")
            p = prep.prepare(PhotoBytes("p", buf.getvalue()))
            if p.chip is not None:
                chips.append(p.chip)
        batch = np.stack([chips[i % len(chips)] for i in range(64)])
        model.embed(batch, 64)
        ms = best_of(lambda model=model, batch=batch: model.embed(batch, 64)) / 64 * 1000
        out[combo.split("+")[0]] = {"input_px": int(batch.shape[1]), "ms_per_chip": round(ms, 2), "chips_per_s": round(1000 / ms, 1)}
    return out


def bench_end_to_end(photos: dict[str, np.ndarray], copies: int = 8, workers: int = 2) -> dict[str, object]:
    from dedup.face import embed_photos

    out: dict[str, object] = {"workers": workers}
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for c in range(copies):
            for name, rgb in photos.items():
                f = 0.5 + 0.15 * c  # copies at different sizes
                img = Image.fromarray(rgb).resize((round(rgb.shape[1] * f), round(rgb.shape[0] * f)), Image.Resampling.BILINEAR)
                path = Path(tmp) / f"{c}-{name}.jpg"
                img.save(path, "JPEG", quality=92)
                paths.append(str(path))
        for combo, extra in COMBOS.items():
            s = FaceSettings(workers=workers, device="cpu", **extra)
            start = time.time()
            r = embed_photos(paths, s)
            seconds = time.time() - start
            out[combo] = {"photos": len(paths), "seconds": round(seconds, 2), "photos_per_s": round(len(paths) / seconds, 2),
                          "accepted": len(r.accepted), "rejects": r.reason_counts()}
    return out


def bench_pairs() -> dict[str, object]:
    from dedup.face import embed_photos

    photos = with_other_people(real_photos())
    captures = distinct_captures(photos)
    out: dict[str, object] = {
        "source": ("face_recognition 1.3.0 sdist tests/test_images (obama x3 captures, biden) + scikit-image astronaut "
                   "(Eileen Collins) + matplotlib grace_hopper.jpg"),
        "captures": [p.name for p in captures],
    }
    for combo, extra in COMBOS.items():
        r = embed_photos([str(p.path) for p in captures], FaceSettings(workers=1, device="cpu", **extra))
        assert len(r.accepted) == len(captures), r.reason_counts()
        e = r.embeddings
        idx = {p.name: i for i, p in enumerate(captures)}
        g = {f"{a.name}~{b.name}": round(float(e[idx[a.name]] @ e[idx[b.name]]), 4) for a, b in genuine_pairs(photos)}
        i = {f"{a.name}~{b.name}": round(float(e[idx[a.name]] @ e[idx[b.name]]), 4) for a, b in impostor_pairs(photos)}
        out[combo] = {
            "model_id": r.model_id, "genuine": g, "impostor": i,
            "min_genuine": min(g.values()), "max_impostor": max(i.values()),
            "margin": round(min(g.values()) - max(i.values()), 4),
        }
    out["sface_operating_point"] = {
        "cosine": OPENCV_SFACE_COSINE, "norm_l2": OPENCV_SFACE_L2,
        "source": "OpenCV Zoo models/face_recognition_sface/sface.py (_threshold_cosine, _threshold_norml2), verified",
        "on_these_pairs": ("every genuine pair above it and every impostor below it "
                           "(3 genuine, 12 impostor pairs: far too few to fit a tail)"),
    }
    return out


def bench_calibration(photos: dict[str, np.ndarray]) -> dict[str, object]:
    import skimage.data

    from dedup.face.retinaface import RetinaFace, load_shipped_net

    det = RetinaFace(load_shipped_net())
    faces, false = [], []
    for rgb in photos.values():
        found = det.detect([rgb], 0.02, 1024)[0]
        faces.append(found[0].score)
        false.extend(f.score for f in found[1:])
    no_face = {}
    for name in ("coffee", "rocket", "chelsea", "coins", "hubble_deep_field", "immunohistochemistry"):
        img = getattr(skimage.data, name)()
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        found = det.detect([np.ascontiguousarray(img[..., :3])], 0.02, 1024)[0]
        no_face[name] = round(max((f.score for f in found), default=0.0), 4)
    return {
        "real_face_scores_min": round(min(faces), 4),
        "other_detections_on_face_photos_max": round(max(false, default=0.0), 4),
        "max_score_on_face_free_photos": no_face,
        "chosen": {"retinaface_min_score": 0.5, "retinaface_multi_face_min_score": 0.9},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/face/results-models-cpu.json"))
    parser.add_argument("--skip-end-to-end", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    photos = load_photos()
    report: dict[str, object] = {"benchmark": "face-models-cpu", "machine": machine()}
    for key, fn in (("calibration", lambda: bench_calibration(photos)), ("detection", lambda: bench_detection(photos)),
                    ("embedding", lambda: bench_embedding(photos)), ("real_pairs", bench_pairs)):
        t = time.time()
        report[key] = fn()
        print(f"{key}: {time.time() - t:.0f} s", file=sys.stderr)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    if not args.skip_end_to_end:
        report["end_to_end"] = bench_end_to_end(photos)
    report["load_average_at_end"] = os.getloadavg()
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
