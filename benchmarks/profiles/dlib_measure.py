"""Measure dlib's ResNet (128-d) on the real face photos that installed packages ship.

Used by ``fit_face_like.py``. Nothing is downloaded and nothing but statistics leaves this
module: descriptors stay in memory and images are never written.

Sources (all ship with the packages in the dev environment):
- ``skimage.data.lfw_subset()``: 100 LFW faces, 25x25 grey (the other 100 are non-faces);
- ``matplotlib.cbook.get_sample_data("grace_hopper.jpg")``: Grace Hopper, 512x600 colour;
- ``skimage.data.astronaut()``: Eileen Collins, 512x512 colour;
- ``skimage.data.camera()``: the cameraman (tried; his face is in profile and dlib's frontal
  detector finds none, so he is reported and left out).
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHIP = 150
PADDING = 0.25
LFW_UPSCALE = 8  # 25x25 -> 200x200 before detection


def model_dir() -> Path:
    """Where ``face_recognition_models`` keeps its files (importing it fails without pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("face_recognition_models is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


@dataclass
class Dlib:
    detector: object
    shapes: object
    net: object

    @classmethod
    def load(cls) -> Dlib:
        import dlib

        d = model_dir()
        return cls(
            dlib.get_frontal_face_detector(),
            dlib.shape_predictor(str(d / "shape_predictor_5_face_landmarks.dat")),
            dlib.face_recognition_model_v1(str(d / "dlib_face_recognition_resnet_model_v1.dat")),
        )

    def box(self, img: np.ndarray, upsample: int = 1):
        """The top-scoring frontal detection, or None."""
        dets, scores, _ = self.detector.run(img, upsample)
        if not len(dets):
            return None
        return dets[int(np.argmax(scores))]

    def describe(self, img: np.ndarray, box=None, fallback_whole: bool = False) -> tuple[np.ndarray | None, str]:
        """Raw 128-d descriptor of the top face and how it was found ('detected' / 'whole-frame').

        With ``fallback_whole``, an image where the detector finds nothing is treated as a
        face crop: the whole frame is the face box and the 5-point predictor aligns inside it.
        """
        import dlib

        how = "detected"
        if box is None:
            box = self.box(img)
        if box is None:
            if not fallback_whole:
                return None, "no-face"
            h, w = img.shape[:2]
            box, how = dlib.rectangle(0, 0, w - 1, h - 1), "whole-frame"
        shape = self.shapes(img, box)
        chip = dlib.get_face_chip(img, shape, size=CHIP, padding=PADDING)
        return np.asarray(self.net.compute_face_descriptor(chip), dtype=np.float64), how


def rgb8(x: np.ndarray) -> np.ndarray:
    """float [0,1] or uint8, grey or colour -> contiguous uint8 RGB."""
    if x.dtype != np.uint8:
        x = (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if x.ndim == 2:
        x = np.stack([x] * 3, axis=-1)
    return np.ascontiguousarray(x[..., :3])


def upscale_lfw(face: np.ndarray) -> np.ndarray:
    """A 25x25 grey LFW face -> 200x200 RGB (bicubic)."""
    from skimage.transform import resize

    n = face.shape[0] * LFW_UPSCALE
    return rgb8(resize(face, (n, n), order=3, anti_aliasing=False))


def real_photos() -> dict[str, np.ndarray]:
    """The real photos of faces that the installed packages ship, as uint8 RGB."""
    import matplotlib.cbook as cbook
    import skimage.data as sd
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = np.asarray(Image.open(f).convert("RGB"))
    return {"grace_hopper": rgb8(hopper), "astronaut": rgb8(sd.astronaut()), "camera": rgb8(sd.camera())}


# ----------------------------------------------------------------------------- augmentations
def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def _scale(img: np.ndarray, s: float) -> np.ndarray:
    from skimage.transform import rescale

    return rgb8(rescale(img, s, channel_axis=-1, order=1, anti_aliasing=s < 1))


def _rotate(img: np.ndarray, deg: float) -> np.ndarray:
    from skimage.transform import rotate

    return rgb8(rotate(img, deg, mode="edge", order=1))


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.filters import gaussian

    return rgb8(gaussian(img, sigma=sigma, channel_axis=-1))


def _light(img: np.ndarray, contrast: float, brightness: float) -> np.ndarray:
    x = img.astype(np.float64) / 255.0
    return rgb8((x - 0.5) * contrast + 0.5 + brightness)


def _shift(img: np.ndarray, box, dx: float, dy: float) -> np.ndarray:
    """Crop a frame around the face moved by (dx, dy) face widths (a different framing)."""
    h, w = img.shape[:2]
    fw = box.right() - box.left()
    cx = (box.left() + box.right()) / 2 + dx * fw
    cy = (box.top() + box.bottom()) / 2 + dy * fw
    half = 1.4 * fw
    x0, x1 = int(max(0, cx - half)), int(min(w, cx + half))
    y0, y1 = int(max(0, cy - half)), int(min(h, cy + half))
    return np.ascontiguousarray(img[y0:y1, x0:x1])


def single_augmentations(img: np.ndarray, box) -> dict[str, np.ndarray]:
    """One capture change at a time, at a mild and a strong setting."""
    return {
        "scale_0.5": _scale(img, 0.5),
        "scale_0.3": _scale(img, 0.3),
        "shift_0.15": _shift(img, box, 0.15, -0.1),
        "shift_-0.25": _shift(img, box, -0.25, 0.2),
        "dark_low_contrast": _light(img, 0.6, -0.15),
        "bright_high_contrast": _light(img, 1.4, 0.12),
        "blur_1.5": _blur(img, 1.5),
        "blur_3": _blur(img, 3.0),
        "jpeg_40": _jpeg(img, 40),
        "jpeg_10": _jpeg(img, 10),
        "rotate_6": _rotate(img, 6.0),
        "rotate_-12": _rotate(img, -12.0),
        "flip": np.ascontiguousarray(img[:, ::-1]),
        "grey": rgb8(np.asarray(img, dtype=np.float64).mean(axis=-1) / 255.0),
    }


def random_capture(img: np.ndarray, box, rng: np.random.Generator) -> np.ndarray:
    """A new 'capture': a random combination of every change above."""
    out = _shift(img, box, rng.uniform(-0.2, 0.2), rng.uniform(-0.15, 0.15))
    out = _rotate(out, rng.uniform(-10, 10))
    out = _scale(out, rng.uniform(0.3, 1.0))
    out = _light(out, rng.uniform(0.6, 1.4), rng.uniform(-0.15, 0.15))
    if rng.random() < 0.5:
        out = _blur(out, rng.uniform(0.5, 2.5))
    if rng.random() < 0.5:
        out = np.ascontiguousarray(out[:, ::-1])
    return _jpeg(out, int(rng.integers(15, 90)))


# ----------------------------------------------------------------------------- LFW-like degradation
def lfw_frame(lfw_boxes: np.ndarray) -> np.ndarray:
    """Mean detection box inside the 25x25 LFW frame, as fractions (left, top, right, bottom)."""
    return lfw_boxes.mean(axis=0)


def degrade_like_lfw(img: np.ndarray, box, frame: np.ndarray) -> np.ndarray:
    """Make a photo look like an lfw_subset face: same framing, grey, 25x25, then upscaled.

    The crop is placed so that the photo's detection box sits where detections sit inside
    the upscaled LFW faces (``frame``); outside the photo the edge pixels are repeated.
    """
    from skimage.transform import resize

    left, top, right, _ = frame
    side = (box.right() - box.left()) / (right - left)
    x0 = box.left() - left * side
    y0 = box.top() - top * side
    pad = int(side) + 2
    grey = np.asarray(img, dtype=np.float64).mean(axis=-1) / 255.0
    padded = np.pad(grey, pad, mode="edge")
    xi, yi = int(round(x0)) + pad, int(round(y0)) + pad
    crop = padded[yi:yi + int(round(side)), xi:xi + int(round(side))]
    small = resize(crop, (25, 25), order=1, anti_aliasing=True)
    return upscale_lfw(small)
