"""The content-addressed photo store and the image check made at submission.

A photo is kept once, under the SHA-256 of its bytes (``store/photos/ab/abcdef...``),
exactly as the centre sent it. Files are written to a temporary name and renamed, so a
crash never leaves half a photo under a real name; the folder is ``0700`` and the files
``0600``: photos are biometric data, for the deployment's operator only.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from dedup.errors import NotFound, StoreError
from dedup.fsutil import atomic_write_bytes


@dataclass(frozen=True)
class ImageCheck:
    """Outcome of checking that bytes are a usable image: ok, or a reason code and detail."""

    ok: bool
    reason: str | None = None
    detail: str | None = None
    width: int = 0
    height: int = 0


def check_image(data: bytes, max_pixels: int) -> ImageCheck:
    """Decode the image fully (a truncated or corrupt file fails here, not in ``dedup run``)."""
    from PIL import Image

    if not data:
        return ImageCheck(False, "unreadable_image", "the photo is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # PIL warns about very large images; our own pixel limit decides.
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                fmt = img.format
                width, height = img.size
                if width * height > max_pixels:
                    return ImageCheck(False, "photo_too_large", f"{width}x{height} pixels; the limit is {max_pixels} pixels")
                img.load()
    except Image.UnidentifiedImageError:
        return ImageCheck(False, "unreadable_image", "not an image in a known format (or its header is corrupt)")
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad data; all mean the same here
        return ImageCheck(False, "unreadable_image", f"the image cannot be decoded ({type(exc).__name__}: {str(exc)[:120]})")
    if fmt not in {"JPEG", "PNG", "BMP", "TIFF", "WEBP", "PPM", "JPEG2000"}:
        return ImageCheck(False, "unreadable_image", f"image format {fmt} is not accepted; send JPEG, PNG, BMP, TIFF or WebP")
    return ImageCheck(True, width=width, height=height)


PHOTOS_DIR = "photos"


def photo_store(store: Path) -> PhotoStore:
    """The photo store inside a deployment's store folder (``store/photos``): the one place that says where photos live."""
    return PhotoStore(Path(store) / PHOTOS_DIR)


class PhotoStore:
    """Photos by content hash under ``root`` (the deployment's ``store/photos``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        """Where the photo with this hash is (or would be) kept."""
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Store ``data`` (once) and return its SHA-256."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if target.exists() and target.stat().st_size == len(data):
            return digest
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write_bytes(target, data, mode=0o600)  # biometric data: the operator only
        return digest

    def read(self, sha256: str) -> bytes:
        """The photo's bytes (callers check the reader's access first)."""
        target = self.path(sha256)
        try:
            data = target.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"photo {sha256[:12]}... is missing from the store {self.root}") from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise StoreError(f"photo {sha256[:12]}... in the store is corrupt (hash mismatch)")
        return data
