"""Decode one photo into an 8-bit RGB array, safely.

Limits are checked before pixels are decoded: the file's size in bytes, then the pixel
count that the image header announces (a few hundred bytes of PNG can announce a
gigapixel image: a decompression bomb). EXIF orientation is applied, and every mode Pillow
opens (grey, palette, RGBA, CMYK, 16-bit, float) becomes 8-bit RGB. Failures raise
:class:`~dedup.face.reasons.Rejected` with a specific reason.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dedup.face import reasons
from dedup.face.reasons import Rejected


@dataclass(frozen=True)
class DecodeLimits:
    """What :func:`decode_image` accepts."""

    max_bytes: int
    max_pixels: int
    formats: tuple[str, ...]


def read_source_bytes(path: Path, max_bytes: int) -> bytes:
    """Read a photo file, refusing files over ``max_bytes`` before reading them."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise Rejected(reasons.NOT_FOUND, "no such file") from None
    except OSError as exc:
        raise Rejected(reasons.NOT_FOUND, f"cannot open: {exc.strerror or exc}") from None
    if not path.is_file():
        raise Rejected(reasons.NOT_FOUND, "not a regular file")
    if size > max_bytes:
        raise Rejected(reasons.TOO_LARGE, f"file is {size} bytes > limit {max_bytes}")
    try:
        with open(path, "rb") as fh:
            # Read at most one byte past the limit, in case the file grew since stat().
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise Rejected(reasons.NOT_FOUND, f"cannot read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise Rejected(reasons.TOO_LARGE, f"file is over the limit of {max_bytes} bytes")
    return data


def decode_image(data: bytes, limits: DecodeLimits) -> np.ndarray:
    """Photo bytes -> (H, W, 3) uint8 RGB, upright per EXIF. Raises Rejected."""
    if len(data) > limits.max_bytes:
        raise Rejected(reasons.TOO_LARGE, f"file is {len(data)} bytes > limit {limits.max_bytes}")
    if not data:
        raise Rejected(reasons.NOT_AN_IMAGE, "empty file")
    with warnings.catch_warnings():
        # Pillow warns about odd but decodable files (corrupt EXIF, ...): not our concern,
        # and never printed from library code. Its bomb warning (between its limit and
        # twice it) becomes an error so it cannot slip past.
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise Rejected(reasons.NOT_AN_IMAGE, "not a recognised image format") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            # Pillow refuses far-over-limit headers already while opening.
            raise Rejected(reasons.TOO_LARGE, f"limit {limits.max_pixels} pixels; the decoder refused it: {_short(exc)}") from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise Rejected(reasons.CORRUPT_IMAGE, f"unreadable image header ({_short(exc)})") from None
        with img:
            fmt = img.format or "unknown"
            if fmt not in limits.formats:
                raise Rejected(reasons.UNSUPPORTED_FORMAT, f"format {fmt} is not accepted (accepted: {', '.join(limits.formats)})")
            width, height = img.size
            pixels = width * height
            if pixels > limits.max_pixels:
                raise Rejected(reasons.TOO_LARGE, f"image is {width}x{height} = {pixels} pixels > limit {limits.max_pixels}")
            if width < 1 or height < 1:
                raise Rejected(reasons.CORRUPT_IMAGE, f"image has no pixels ({width}x{height})")
            try:
                img.load()
                upright = ImageOps.exif_transpose(img) or img
                return to_rgb8(upright)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise Rejected(reasons.TOO_LARGE, f"limit {limits.max_pixels} pixels; the decoder refused it: {_short(exc)}") from None
            except (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error) as exc:
                raise Rejected(reasons.CORRUPT_IMAGE, f"{fmt} data is truncated or corrupt ({_short(exc)})") from None


def to_rgb8(img: Image.Image) -> np.ndarray:
    """Any Pillow image -> (H, W, 3) uint8 RGB.

    Transparency is flattened onto white (ID-photo backgrounds are light); 16-bit and
    32-bit grey are scaled to 8 bits rather than clipped (Pillow's convert would clip).
    """
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        grey = np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img).astype(np.float64)
        top = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
        grey = np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
