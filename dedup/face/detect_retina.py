"""Find the face in a photo with RetinaFace; dlib's 5-point predictor then marks the landmarks
the quality checks and the dlib chip use.

The rules mirror the HOG detector's (:mod:`dedup.face.detect`) with thresholds of this
detector's own, measured on the real test photos (benchmarks/face/README.md, "Calibration"):
real faces score 0.999-1.000 and the strongest false detections on those photos (clothing,
flags, ceiling lights) 0.02-0.18, so a candidate counts as a face from
``retinaface_min_score`` and, beside the chosen one, as a second person from
``retinaface_multi_face_min_score``. Of several faces, the largest is kept only when it
clearly dominates by box area (``retinaface_multi_face_area_ratio``), as with HOG. Its boxes
are tighter than HOG's: Grace Hopper beside the astronaut measures 3.4x by RetinaFace and
4.2x by HOG, so its ratio is 3.0 where HOG's is 4.0 (both keep Grace; two equal faces, or a
second face at 45% scale, stay ``multiple_faces``).

dlib's shape predictor was trained on HOG-style square boxes; a RetinaFace box is taller
(forehead to chin). On the test photos a HOG box is on average 1.08 x the RetinaFace box's
width, square, centred 0.04 x its height lower, so that is the box handed to the predictor.

No face found: the photo is tried once more at twice the resolution (at most twice
``retinaface_max_side``), as HOG retries with one more upsampling, so a small face gets the
specific ``face_too_small`` rather than ``no_face``.
"""

from __future__ import annotations

from dataclasses import dataclass

import dlib
import numpy as np
from PIL import Image

from dedup.face import assets, reasons
from dedup.face.detect import Detection
from dedup.face.reasons import Rejected
from dedup.face.retinaface import Face, RetinaFace, load_shipped_net

# HOG box from RetinaFace box (means over the test photos, see the module docstring).
_HOG_WIDTH = 1.08
_HOG_DROP = 0.04


@dataclass(frozen=True)
class RetinaParams:
    """RetinaFace detection settings (a slice of FaceSettings)."""

    max_side: int
    min_score: float
    multi_face_min_score: float
    multi_face_area_ratio: float


def dlib_box(face: Face) -> dlib.rectangle:
    """The HOG-like square box dlib's shape predictor expects, from a RetinaFace box."""
    x0, y0, x1, y1 = face.box
    side = _HOG_WIDTH * (x1 - x0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + _HOG_DROP * (y1 - y0)
    return dlib.rectangle(round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2))


def choose(faces: list[Face], params: RetinaParams) -> tuple[Face, int]:
    """The face to enrol among detections (score-sorted), and how many faces counted."""
    counted = [f for i, f in enumerate(faces) if i == 0 or f.score >= params.multi_face_min_score]
    areas = [float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1])) for f in counted]
    best = max(range(len(counted)), key=lambda i: (areas[i], counted[i].score))
    others = [a for i, a in enumerate(areas) if i != best]
    if others:
        ratio = areas[best] / max(max(others), 1e-9)
        if ratio < params.multi_face_area_ratio:
            raise Rejected(
                reasons.MULTIPLE_FACES,
                f"{len(counted)} faces; the largest is {ratio:.2f}x the area of the next"
                f" < {params.multi_face_area_ratio:g}x needed to keep it",
            )
    return counted[best], len(counted)


def retry_scale(shape: tuple[int, ...], max_side: int) -> float | None:
    """Scale of the no-face retry (twice the first pass, at most twice ``max_side``), or None
    when that would not enlarge the photo by at least 1.5x over the first pass."""
    longest = max(shape[:2])
    first = min(1.0, max_side / longest)
    second = min(2.0 * first, 2.0 * max_side / longest)
    return None if second <= first * 1.5 else second


def upscaled(rgb: np.ndarray, scale: float) -> np.ndarray:
    """The photo resized by ``scale`` (bilinear), for the no-face retry."""
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))


class RetinaDetector:
    """RetinaFace (torch: CPU float32 in worker processes, or the batched device path) and dlib's 5-point predictor."""

    def __init__(self, params: RetinaParams, detector: RetinaFace | None = None) -> None:
        self.params = params
        self.detector = detector or RetinaFace(load_shipped_net())
        self._predictor = dlib.shape_predictor(str(assets.model_file(assets.SHAPE_5)))

    def find(self, rgb: np.ndarray) -> list[Face]:
        """All detections at ``min_score`` or more, best first, in photo pixels (with the retry)."""
        p = self.params
        faces = self.detector.detect([rgb], p.min_score, p.max_side)[0]
        if faces:
            return faces
        second = retry_scale(rgb.shape[:2], p.max_side)
        if second is None:
            return []
        big = upscaled(rgb, second)
        found = self.detector.detect([big], p.min_score, max(big.shape[:2]))[0]
        return [Face(f.box / second, f.score, f.landmarks / second) for f in found]

    def detect(self, rgb: np.ndarray) -> Detection:
        """The face to enrol, or Rejected(no_face / multiple_faces)."""
        return self.decide(rgb, self.find(rgb))

    def decide(self, rgb: np.ndarray, faces: list[Face]) -> Detection:
        """The face to enrol among ``faces`` (photo pixels, best first), or Rejected(no_face / multiple_faces)."""
        if not faces:
            raise Rejected(reasons.NO_FACE, "no face found")
        return self.landmark(rgb, *choose(faces, self.params))

    def landmark(self, rgb: np.ndarray, face: Face, counted: int) -> Detection:
        """dlib's 5 landmarks inside the chosen face, as a Detection."""
        rect = dlib_box(face)
        shape = self._predictor(np.ascontiguousarray(rgb), rect)
        points = np.array([[q.x, q.y] for q in shape.parts()], dtype=np.float64)
        box = tuple(int(round(v)) for v in face.box)
        return Detection(box, face.score, points, counted, shape, face.landmarks)  # type: ignore[arg-type]
