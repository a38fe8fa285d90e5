"""Why a photo yields no template: stable reason codes, and the exception that carries one.

The pipeline turns a :class:`Rejected` into a row of the rejects table (``source``,
``reason``, ``detail``); it never stops the rest of a batch. ``detail`` is for people: the
measured value and the limit it failed.
"""

from __future__ import annotations

NOT_FOUND = "not_found"  # the path does not exist or cannot be opened
NOT_AN_IMAGE = "not_an_image"  # no known image format (e.g. a text file named .jpg)
CORRUPT_IMAGE = "corrupt_image"  # a known format whose data is truncated or broken
UNSUPPORTED_FORMAT = "unsupported_format"  # an image format not in face.formats
TOO_LARGE = "too_large"  # file bytes or pixel count above the limits (decompression bombs)
NO_FACE = "no_face"
MULTIPLE_FACES = "multiple_faces"
FACE_TOO_SMALL = "face_too_small"
TOO_BLURRY = "too_blurry"
TOO_DARK = "too_dark"
OVEREXPOSED = "overexposed"
EXTREME_POSE = "extreme_pose"
PROCESSING_ERROR = "processing_error"  # an unexpected failure on this photo (kept as data)

ALL_REASONS = (
    NOT_FOUND,
    NOT_AN_IMAGE,
    CORRUPT_IMAGE,
    UNSUPPORTED_FORMAT,
    TOO_LARGE,
    NO_FACE,
    MULTIPLE_FACES,
    FACE_TOO_SMALL,
    TOO_BLURRY,
    TOO_DARK,
    OVEREXPOSED,
    EXTREME_POSE,
    PROCESSING_ERROR,
)


class Rejected(Exception):
    """Raised inside the per-photo steps; the pipeline records it as a reject row."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
