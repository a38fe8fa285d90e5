"""Photos as the browser gets them: the stored photo, and the aligned face crop cut at view time.

The crop is the face pipeline's own chip (dlib's detector, 5 landmarks, ``face_chip`` at the
model's ``input_size`` and ``align_padding``: 150 px for the default model), computed from
the stored photo on every request and returned in memory. Nothing is cached, and nothing is
written anywhere: photos and crops are biometric data.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass

from dedup.config import FaceSettings

# Formats every browser shows as they are; others are re-encoded to PNG in memory.
_BROWSER_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif", "BMP": "image/bmp"}


@dataclass(frozen=True)
class Image:
    """Bytes for the browser and their media type."""

    data: bytes
    media_type: str


def for_browser(data: bytes) -> Image:
    """The stored photo as is when the browser can show it, else as PNG."""
    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(data)) as img:
        fmt = img.format or ""
        if fmt in _BROWSER_FORMATS:
            return Image(data, _BROWSER_FORMATS[fmt])
        out = io.BytesIO()
        img.convert("RGB").save(out, format="PNG")
    return Image(out.getvalue(), "image/png")


class CropMaker:
    """Cuts aligned face crops; the dlib models load on first use, one crop at a time."""

    def __init__(self, face: FaceSettings) -> None:
        self.face = face
        self._detector: object | None = None
        self._lock = threading.Lock()

    def crop(self, data: bytes) -> Image | None:
        """The aligned face crop as PNG, or None when no face is found in the photo."""
        from PIL import Image as PILImage

        from dedup.face.align import face_chip
        from dedup.face.decode import DecodeLimits, decode_image
        from dedup.face.detect import DetectParams, FaceDetector
        from dedup.face.reasons import Rejected

        f = self.face
        with self._lock:  # dlib's detector object is not shared between threads
            if self._detector is None:
                self._detector = FaceDetector(DetectParams(f.detect_max_side, f.detect_upsample, f.multi_face_area_ratio,
                                                           f.multi_face_min_score))
            detector = self._detector
            assert isinstance(detector, FaceDetector)
            try:
                rgb = decode_image(data, DecodeLimits(f.max_bytes, f.max_pixels, f.format_list))
                found = detector.detect(rgb)
                chip = face_chip(rgb, found.shape, f.input_size, f.align_padding)
            except Rejected:
                return None
        out = io.BytesIO()
        PILImage.fromarray(chip).save(out, format="PNG")
        return Image(out.getvalue(), "image/png")
