"""Find the face in a photo: dlib's frontal (HOG) detector and 5-point shape predictor.

One face found: it is used. Several: weak detections (score below
``multi_face_min_score``; HOG's false positives on clothing score ~0.0-0.3, real faces
~1.0-1.6) are ignored; of the faces left, the largest is used only when it clearly
dominates, i.e. its box has at least ``multi_face_area_ratio`` times the area of every
other face (a bystander far behind the subject). Otherwise the photo is
``multiple_faces``: we cannot know which person is enrolling. Size, not score, picks the
face among several because HOG scores of faces of different sizes do not compare: a
half-size copy of a photo beside the original scores higher (1.55 vs 1.48).
"""

from __future__ import annotations

from dataclasses import dataclass

import dlib
import numpy as np
from PIL import Image

from dedup.face import assets, reasons
from dedup.face.reasons import Rejected


@dataclass(frozen=True)
class DetectParams:
    """Detection settings (a slice of FaceSettings)."""

    max_side: int
    upsample: int
    multi_face_area_ratio: float
    multi_face_min_score: float


@dataclass(frozen=True)
class Detection:
    """The chosen face: its box and score, the 5 landmarks, and how many faces were seen."""

    box: tuple[int, int, int, int]  # left, top, right, bottom, photo pixels
    score: float
    landmarks: np.ndarray  # (5, 2) float64 x, y: image-right eye outer, inner; image-left eye outer, inner; nose
    faces_found: int
    shape: dlib.full_object_detection  # dlib's landmark object, for chip extraction (not picklable)
    points5: np.ndarray | None = None  # RetinaFace's own 5 landmarks (ArcFace order), when it detected


class FaceDetector:
    """dlib's detector and 5-point predictor, loaded once per process."""

    def __init__(self, params: DetectParams) -> None:
        self.params = params
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(assets.model_file(assets.SHAPE_5)))

    def _run(self, rgb: np.ndarray, upsample: int) -> tuple[list[dlib.rectangle], list[float]]:
        height, width = rgb.shape[:2]
        scale = 1.0
        img = rgb
        if max(height, width) > self.params.max_side:
            # Detection is the costly step and proportional to pixels; landmarks and the
            # chip still come from the full-resolution photo.
            scale = self.params.max_side / max(height, width)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            img = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
        rects, scores, _ = self._detector.run(np.ascontiguousarray(img), upsample, 0.0)
        if scale != 1.0:
            rects = [
                dlib.rectangle(round(r.left() / scale), round(r.top() / scale), round(r.right() / scale), round(r.bottom() / scale))
                for r in rects
            ]
        return list(rects), [float(s) for s in scores]

    def detect(self, rgb: np.ndarray) -> Detection:
        """The face to enrol, or Rejected(no_face / multiple_faces)."""
        rects, scores = self._run(rgb, self.params.upsample)
        if not rects and self.params.upsample < 2:
            # A small face is worth finding: it then gets the specific face_too_small.
            rects, scores = self._run(rgb, self.params.upsample + 1)
        if not rects:
            raise Rejected(reasons.NO_FACE, "no face found")
        top = int(np.argmax(scores))
        counted = [i for i in range(len(rects)) if i == top or scores[i] >= self.params.multi_face_min_score]
        areas = {i: float(rects[i].width() * rects[i].height()) for i in counted}
        best = max(counted, key=lambda i: (areas[i], scores[i]))
        others = [areas[i] for i in counted if i != best]
        if others:
            ratio = areas[best] / max(others)
            if ratio < self.params.multi_face_area_ratio:
                raise Rejected(
                    reasons.MULTIPLE_FACES,
                    f"{len(counted)} faces; the largest is {ratio:.2f}x the area of the next"
                    f" < {self.params.multi_face_area_ratio:g}x needed to keep it",
                )
        rect = rects[best]
        shape = self._predictor(np.ascontiguousarray(rgb), rect)
        points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        box = (rect.left(), rect.top(), rect.right(), rect.bottom())
        return Detection(box, scores[best], points, len(counted), shape)
