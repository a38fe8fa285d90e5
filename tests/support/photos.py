"""Helpers that make test photos from real ones (encode, rescale, rotate, combine)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image


def encode(rgb: np.ndarray, fmt: str = "PNG", **kwargs: Any) -> bytes:
    """Encode an array with Pillow."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **kwargs)
    return buf.getvalue()


def resize(rgb: np.ndarray, scale: float) -> np.ndarray:
    """Rescale a photo (bilinear)."""
    img = Image.fromarray(rgb)
    return np.asarray(img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BILINEAR))


def rotate(rgb: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate a photo counter-clockwise, expanding the canvas with grey."""
    return np.asarray(Image.fromarray(rgb).rotate(degrees, Image.Resampling.BILINEAR, expand=True, fillcolor=(128, 128, 128)))


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Two photos on one grey canvas, tops aligned."""
    h = max(left.shape[0], right.shape[0])
    canvas = np.full((h, left.shape[1] + right.shape[1], 3), 128, dtype=np.uint8)
    canvas[: left.shape[0], : left.shape[1]] = left
    canvas[: right.shape[0], left.shape[1] :] = right
    return canvas
