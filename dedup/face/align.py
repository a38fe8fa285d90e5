"""Cut the aligned face crop ("chip") the model embeds.

The crop is dlib's own: ``dlib.get_face_chip(img, shape, size, padding)`` maps the 5
landmarks onto dlib's mean-face template by a similarity transform and resamples the
photo, so the default model sees exactly the chip dlib would embed. Plugged models choose
the crop size and padding (settings ``input_size`` and ``align_padding``).
"""

from __future__ import annotations

import dlib
import numpy as np

# The crop quality is measured on: dlib's default geometry, whatever the model.
QUALITY_CHIP_SIZE = 150
QUALITY_CHIP_PADDING = 0.25


def face_chip(rgb: np.ndarray, shape: dlib.full_object_detection, size: int, padding: float) -> np.ndarray:
    """(size, size, 3) uint8 RGB crop of the face whose landmarks are ``shape``."""
    chip = dlib.get_face_chip(np.ascontiguousarray(rgb), shape, size=size, padding=padding)
    return np.ascontiguousarray(chip, dtype=np.uint8)
