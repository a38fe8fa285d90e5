"""One photo from bytes to an aligned, quality-checked face crop (no model involved).

This is the CPU-heavy part of the pipeline (decode, detect, landmarks, align, quality);
:mod:`dedup.face.embed` runs it in worker processes and embeds the crops in batches.
A photo that fails any step becomes a :class:`Prepared` with a reason, never an exception.
For the batched device path (:mod:`dedup.face.device_batch`) the workers only decode
(:func:`decode_in_worker`); the steps after detection are :meth:`Preparer.finish`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

from dedup.config import FaceSettings
from dedup.face import reasons
from dedup.face.align import QUALITY_CHIP_PADDING, QUALITY_CHIP_SIZE, face_chip
from dedup.face.arcface_align import arcface_chip
from dedup.face.decode import DecodeLimits, decode_image, read_source_bytes
from dedup.face.detect import Detection, DetectParams, FaceDetector
from dedup.face.quality import QualityLimits, QualityReport, check, measure, score
from dedup.face.reasons import Rejected

if TYPE_CHECKING:
    from dedup.face.detect_retina import RetinaDetector


@dataclass(frozen=True)
class PhotoBytes:
    """A photo already in memory, with the name it is reported under."""

    name: str
    data: bytes


PhotoInput = Union[str, "os.PathLike[str]", PhotoBytes]


@dataclass(frozen=True)
class Prepared:
    """The outcome of the per-photo steps: a crop to embed, or a reason."""

    source: str
    reason: str | None  # None: the face passed and ``chip`` is set
    detail: str
    chip: np.ndarray | None  # (input_size, input_size, 3) uint8 RGB
    quality: float  # 0..1; 0 for rejects
    report: QualityReport | None  # measurements (None when no face was measured)
    landmarks: np.ndarray | None  # (5, 2) photo pixels


def source_name(item: PhotoInput) -> str:
    """The name a photo is reported under: the path as given, or PhotoBytes.name."""
    return item.name if isinstance(item, PhotoBytes) else os.fspath(item)


@dataclass(frozen=True)
class Decoded:
    """A photo decoded for the batched device path: full photo and its detection-size copy, or a reason."""

    source: str
    reason: str | None  # None: decoded, ``rgb`` and ``small`` are set
    detail: str
    rgb: np.ndarray | None  # (H, W, 3) uint8 RGB, upright
    small: np.ndarray | None  # the photo shrunk to the detector's max side (or ``rgb`` itself)
    scale: float  # small = rgb x scale


class Preparer:
    """The per-photo steps with their settings and dlib models, built once per process."""

    def __init__(self, settings: FaceSettings, detector: FaceDetector | RetinaDetector | None = None) -> None:
        self.settings = settings
        self.limits = DecodeLimits(settings.max_bytes, settings.max_pixels, settings.format_list)
        self.quality_limits = QualityLimits(
            settings.min_inter_eye, settings.min_sharpness, settings.min_brightness,
            settings.max_brightness, settings.max_roll, settings.max_yaw,
        )
        self.detector = detector or make_detector(settings)

    def prepare(self, item: PhotoInput) -> Prepared:
        """Decode, detect, align and check one photo; failures come back as data."""
        name = source_name(item)
        try:
            rgb = decode_photo(item, self.limits)
            found = self.detector.detect(rgb)
        except Exception as exc:  # noqa: BLE001 - one odd photo must not stop the batch
            return failed(name, exc)
        return self.finish(name, rgb, found)

    def finish(self, name: str, rgb: np.ndarray, found: Detection, with_chip: bool = True) -> Prepared:
        """Quality-check the detected face and cut the model's crop (``with_chip=False``: the
        caller cuts it, e.g. the ArcFace crop on a GPU); failures come back as data."""
        report: QualityReport | None = None
        try:
            qchip = face_chip(rgb, found.shape, QUALITY_CHIP_SIZE, QUALITY_CHIP_PADDING)
            report = measure(found.landmarks, qchip)
            check(report, self.quality_limits)
            chip = self._model_chip(rgb, found, qchip) if with_chip else None
            return Prepared(name, None, "", chip, score(report, self.quality_limits), report, found.landmarks)
        except Exception as exc:  # noqa: BLE001 - one odd photo must not stop the batch
            return failed(name, exc, report, found.landmarks)

    def _model_chip(self, rgb: np.ndarray, found: Detection, qchip: np.ndarray) -> np.ndarray:
        s = self.settings
        if s.model == "sface":
            assert found.points5 is not None  # config requires detector retinaface for sface
            return arcface_chip(rgb, found.points5)
        same_geometry = s.input_size == QUALITY_CHIP_SIZE and s.align_padding == QUALITY_CHIP_PADDING
        return qchip if same_geometry else face_chip(rgb, found.shape, s.input_size, s.align_padding)


def failed(name: str, exc: Exception, report: QualityReport | None = None, landmarks: np.ndarray | None = None) -> Prepared:
    """The record of a photo that failed a step: its reason (Rejected), or processing_error."""
    if isinstance(exc, Rejected):
        return Prepared(name, exc.reason, exc.detail, None, 0.0, report, landmarks)
    if isinstance(exc, MemoryError):
        return Prepared(name, reasons.PROCESSING_ERROR, "out of memory on this photo", None, 0.0, report, landmarks)
    text = str(exc).splitlines()[0][:160] if str(exc) else ""
    return Prepared(name, reasons.PROCESSING_ERROR, f"{type(exc).__name__}: {text}", None, 0.0, report, landmarks)


def decode_photo(item: PhotoInput, limits: DecodeLimits) -> np.ndarray:
    """The photo as (H, W, 3) uint8 RGB, upright; raises Rejected."""
    data = item.data if isinstance(item, PhotoBytes) else read_source_bytes(Path(item), limits.max_bytes)
    return decode_image(data, limits)


def decode_for_detection(item: PhotoInput, limits: DecodeLimits, max_side: int) -> Decoded:
    """Decode one photo and shrink a copy to RetinaFace's ``max_side`` (the CPU part of the batched path)."""
    from dedup.face.retinaface import shrink

    name = source_name(item)
    try:
        rgb = decode_photo(item, limits)
        small, scale = shrink(rgb, max_side)
        return Decoded(name, None, "", rgb, small, scale)
    except Exception as exc:  # noqa: BLE001 - one odd photo must not stop the batch
        rec = failed(name, exc)
        return Decoded(name, rec.reason, rec.detail, None, None, 0.0)


def make_detector(settings: FaceSettings, device: str = "cpu") -> FaceDetector | RetinaDetector:
    """The detector the settings name (RetinaFace: float32 on ``device``)."""
    if settings.detector == "retinaface":
        from dedup.face.detect_retina import RetinaDetector, RetinaParams
        from dedup.face.retinaface import RetinaFace, load_shipped_net

        return RetinaDetector(RetinaParams(
            settings.retinaface_max_side, settings.retinaface_min_score,
            settings.retinaface_multi_face_min_score, settings.retinaface_multi_face_area_ratio,
        ), RetinaFace(load_shipped_net(), device=device))
    return FaceDetector(DetectParams(settings.detect_max_side, settings.detect_upsample, settings.multi_face_area_ratio,
                                     settings.multi_face_min_score))


# Worker-process entry points for embed's process pool. They live here, not in embed.py,
# so a spawned worker imports dlib and Pillow but not torch (unless it runs RetinaFace).
_WORKER: Preparer | None = None
_DECODE: tuple[DecodeLimits, int] | None = None


def init_worker(settings: FaceSettings, decode_only: bool = False) -> None:
    """Pool initializer: build this process's Preparer (dlib models) once.

    ``decode_only``: the worker only decodes (:func:`decode_in_worker`, for the batched
    device path), so no detector or model is built.
    """
    global _WORKER, _DECODE
    if settings.detector == "retinaface":
        import torch

        # One process per core already: a torch thread pool in each would oversubscribe.
        torch.set_num_threads(1)
    if decode_only:
        _DECODE = (DecodeLimits(settings.max_bytes, settings.max_pixels, settings.format_list), settings.retinaface_max_side)
    else:
        _WORKER = Preparer(settings)


def prepare_in_worker(item: PhotoInput) -> Prepared:
    """Pool task: prepare one photo with this process's Preparer."""
    if _WORKER is None:
        raise RuntimeError("worker not initialised")
    return _WORKER.prepare(item)


def decode_in_worker(item: PhotoInput) -> Decoded:
    """Pool task of the batched device path: decode one photo, with a detection-size copy."""
    if _DECODE is None:
        raise RuntimeError("worker not initialised for decoding")
    return decode_for_detection(item, *_DECODE)
