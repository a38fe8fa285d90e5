"""Photos as the browser gets them: the stored photo, and the aligned face crop cut at view time.

The crop is the face pipeline's own chip (dlib's detector, 5 landmarks, ``face_chip`` at the
model's ``input_size`` and ``align_padding``: 150 px for the default model), computed from
the stored photo on every request and returned in memory. Large photos are decoded
smaller for the crop (``web.crop_max_pixels``), and a few crops run at once
(``web.crop_workers``), not one behind a global lock. Nothing is cached, and nothing is
written anywhere: photos and crops are biometric data.
"""

from __future__ import annotations

import io
import math
import queue
import threading
from dataclasses import dataclass
from typing import Any

from dedup.config import FaceSettings, WebSettings
from dedup.errors import Busy

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
    """Cuts aligned face crops, ``web.crop_workers`` at once, each with its own dlib detector
    (a detector object is not shared between threads). A photo over ``web.crop_max_pixels``
    is decoded smaller first (JPEG by DCT scaling), so one crop's work is bounded whatever the
    photo's size; a request that finds no free worker within ``web.crop_wait_seconds`` is 503."""

    def __init__(self, face: FaceSettings, web: WebSettings) -> None:
        self.face = face
        self.max_pixels = web.crop_max_pixels
        self.wait = web.crop_wait_seconds
        self._slots = threading.BoundedSemaphore(web.crop_workers)
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()  # detectors not in use (made on demand)

    def crop(self, data: bytes) -> Image | None:
        """The aligned face crop as PNG, or None when no face is found in the photo."""
        from PIL import Image as PILImage

        from dedup.face.align import face_chip
        from dedup.face.detect import DetectParams, FaceDetector
        from dedup.face.reasons import Rejected

        if not self._slots.acquire(timeout=self.wait):
            raise Busy("every crop worker is busy; try again in a moment")
        try:
            try:
                detector = self._idle.get_nowait()
            except queue.Empty:
                f = self.face
                detector = FaceDetector(DetectParams(f.detect_max_side, f.detect_upsample, f.multi_face_area_ratio,
                                                     f.multi_face_min_score))
            try:
                rgb = decode_bounded(data, self.face, self.max_pixels)
                found = detector.detect(rgb)
                chip = face_chip(rgb, found.shape, self.face.input_size, self.face.align_padding)
            except Rejected:
                return None
            finally:
                self._idle.put(detector)
        finally:
            self._slots.release()
        out = io.BytesIO()
        PILImage.fromarray(chip).save(out, format="PNG")
        return Image(out.getvalue(), "image/png")


def decode_bounded(data: bytes, face: FaceSettings, max_pixels: int) -> Any:
    """The photo as (H, W, 3) uint8 RGB with at most about ``max_pixels`` pixels (Rejected as the
    face pipeline's decoder would reject it). Smaller photos decode as the pipeline decodes them."""
    from PIL import Image as PILImage
    from PIL import ImageOps

    from dedup.face import reasons
    from dedup.face.decode import DecodeLimits, decode_image, to_rgb8
    from dedup.face.reasons import Rejected

    limits = DecodeLimits(face.max_bytes, face.max_pixels, face.format_list)
    try:
        with PILImage.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Exception:  # noqa: BLE001 - decode_image names the problem
        return decode_image(data, limits)
    pixels = width * height
    if pixels <= max_pixels or len(data) > face.max_bytes or pixels > face.max_pixels:
        return decode_image(data, limits)
    scale = math.sqrt(max_pixels / pixels)
    try:
        with PILImage.open(io.BytesIO(data)) as img:
            if (img.format or "") not in limits.formats:
                return decode_image(data, limits)  # the pipeline's own refusal
            # JPEG: decode at 1/2, 1/4 or 1/8 scale. Asking for half the wanted side makes the
            # scale picked land within max_pixels (draft picks the smallest one at least as large).
            img.draft("RGB", (max(1, int(width * scale / 2)), max(1, int(height * scale / 2))))
            img.load()
            w, h = img.size
            if w * h > max_pixels:  # no draft (PNG, ...): decoded whole, then reduced
                shrink = math.sqrt(max_pixels / (w * h))
                small = img.resize((max(1, int(w * shrink)), max(1, int(h * shrink))), PILImage.Resampling.BILINEAR)
            else:
                small = img.copy() if img.mode == "P" else img
            ImageOps.exif_transpose(small, in_place=True)
            return to_rgb8(small)
    except (OSError, ValueError, SyntaxError, EOFError, IndexError) as exc:
        raise Rejected(reasons.CORRUPT_IMAGE, f"data is truncated or corrupt ({type(exc).__name__})") from None
