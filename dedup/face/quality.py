"""Is this face good enough to enrol? Measurements, limits, and a 0..1 quality score.

Measured on the 5 landmarks (photo pixels) and on the 150 px dlib chip, so the numbers do
not depend on the photo's resolution:

- ``inter_eye``: distance between the eye centres (mean of each eye's two corners), photo
  pixels. The 150 px chip puts the eyes about 54 px apart, so a face below ~30 px is
  enlarged almost twofold to fill the chip.
- ``roll``: tilt of the eye line, degrees. ``yaw``: the nose's offset from the eye midpoint
  along the eye line, divided by the inter-eye distance (0 frontal, ~0.3 at a clear turn).
  Pitch is not measured: 5 landmarks do not separate it from face shape.
- ``brightness``: mean grey level (0..255) of the central half of the chip.
- ``sharpness``: 100 x std of the 4-neighbour Laplacian / std of the grey level, over the
  central half of the chip: contrast-independent, so a dark face is not also "blurry".

``score`` is the smallest headroom over all limits, each scaled to 0..1 (0 = at a limit,
1 = comfortably inside it): size is full at twice the limit, sharpness at three times,
brightness 40 grey levels inside its range, roll and yaw at zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dedup.face import reasons
from dedup.face.reasons import Rejected

_GREY = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class QualityLimits:
    """The quality limits (a slice of FaceSettings)."""

    min_inter_eye: float
    min_sharpness: float
    min_brightness: float
    max_brightness: float
    max_roll: float
    max_yaw: float


@dataclass(frozen=True)
class QualityReport:
    """Measurements of one face."""

    inter_eye: float
    roll: float
    yaw: float
    brightness: float
    sharpness: float


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image-left eye, image-right eye) centres from dlib's 5 points."""
    return landmarks[2:4].mean(axis=0), landmarks[0:2].mean(axis=0)


def measure(landmarks: np.ndarray, chip: np.ndarray) -> QualityReport:
    """Measure one face from its 5 landmarks and its 150 px dlib chip (uint8 RGB)."""
    left, right = eye_centres(landmarks)
    eye_vec = right - left
    inter_eye = float(np.hypot(*eye_vec))
    roll = math.degrees(math.atan2(eye_vec[1], eye_vec[0]))
    unit = eye_vec / inter_eye if inter_eye > 0 else np.array([1.0, 0.0])
    yaw = float(np.dot(landmarks[4] - (left + right) / 2.0, unit) / inter_eye) if inter_eye > 0 else 0.0
    grey = chip.astype(np.float64) @ _GREY
    h, w = grey.shape
    y0, y1, x0, x1 = h // 4, h - h // 4, w // 4, w - w // 4
    centre = grey[y0:y1, x0:x1]
    lap = (grey[y0 - 1 : y1 - 1, x0:x1] + grey[y0 + 1 : y1 + 1, x0:x1]
           + grey[y0:y1, x0 - 1 : x1 - 1] + grey[y0:y1, x0 + 1 : x1 + 1] - 4.0 * centre)
    spread = float(centre.std())
    sharpness = 100.0 * float(lap.std()) / spread if spread > 1e-6 else 0.0
    return QualityReport(inter_eye, roll, yaw, float(centre.mean()), sharpness)


def check(report: QualityReport, limits: QualityLimits) -> None:
    """Raise Rejected naming the first limit the face fails (measured value and limit)."""
    if report.inter_eye < limits.min_inter_eye:
        raise Rejected(reasons.FACE_TOO_SMALL, f"inter-eye distance {report.inter_eye:.1f} px < {limits.min_inter_eye:g} px")
    if abs(report.roll) > limits.max_roll:
        raise Rejected(reasons.EXTREME_POSE, f"roll {report.roll:+.1f} degrees beyond +-{limits.max_roll:g}")
    if abs(report.yaw) > limits.max_yaw:
        raise Rejected(reasons.EXTREME_POSE, f"yaw index {report.yaw:+.2f} beyond +-{limits.max_yaw:g}")
    if report.brightness < limits.min_brightness:
        raise Rejected(reasons.TOO_DARK, f"face brightness {report.brightness:.1f} < {limits.min_brightness:g}")
    if report.brightness > limits.max_brightness:
        raise Rejected(reasons.OVEREXPOSED, f"face brightness {report.brightness:.1f} > {limits.max_brightness:g}")
    if report.sharpness < limits.min_sharpness:
        raise Rejected(reasons.TOO_BLURRY, f"sharpness {report.sharpness:.1f} < {limits.min_sharpness:g}")


def score(report: QualityReport, limits: QualityLimits) -> float:
    """0..1 quality of a face that passed: its smallest headroom to any limit."""

    def ramp(x: float) -> float:
        return min(1.0, max(0.0, x))

    parts = [
        ramp((report.inter_eye - limits.min_inter_eye) / max(limits.min_inter_eye, 1.0)),
        ramp((report.sharpness - limits.min_sharpness) / max(2.0 * limits.min_sharpness, 1.0)),
        ramp(min(report.brightness - limits.min_brightness, limits.max_brightness - report.brightness) / 40.0),
        ramp(1.0 - abs(report.roll) / limits.max_roll),
        ramp(1.0 - abs(report.yaw) / limits.max_yaw),
    ]
    return float(min(parts))
