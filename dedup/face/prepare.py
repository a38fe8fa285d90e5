"""One photo from bytes to an aligned, quality-checked face crop (no model involved).

This is the CPU-heavy part of the pipeline (decode, detect, landmarks, align, quality);
:mod:`dedup.face.embed` runs it in worker processes and embeds the crops in batches.
A photo that fails any step becomes a :class:`Prepared` with a reason, never an exception.
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
from dedup.face.detect import DetectParams, FaceDetector
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


class Preparer:
    """The per-photo steps with their settings and dlib models, built once per process."""

    def __init__(self, settings: FaceSettings) -> None:
        self.settings = settings
        self.limits = DecodeLimits(settings.max_bytes, settings.max_pixels, settings.format_list)
        self.quality_limits = QualityLimits(
            settings.min_inter_eye, settings.min_sharpness, settings.min_brightness,
            settings.max_brightness, settings.max_roll, settings.max_yaw,
        )
        self.detector = make_detector(settings)

    def prepare(self, item: PhotoInput) -> Prepared:
        """Decode, detect, align and check one photo; failures come back as data."""
        name = source_name(item)
        report: QualityReport | None = None
        landmarks: np.ndarray | None = None
        try:
            data = item.data if isinstance(item, PhotoBytes) else read_source_bytes(Path(item), self.limits.max_bytes)
            rgb = decode_image(data, self.limits)
            found = self.detector.detect(rgb)
            landmarks = found.landmarks
            qchip = face_chip(rgb, found.shape, QUALITY_CHIP_SIZE, QUALITY_CHIP_PADDING)
            report = measure(found.landmarks, qchip)
            check(report, self.quality_limits)
            s = self.settings
            if s.model == "sface":
                assert found.points5 is not None  # config requires detector retinaface for sface
                chip = arcface_chip(rgb, found.points5)
            else:
                same_geometry = s.input_size == QUALITY_CHIP_SIZE and s.align_padding == QUALITY_CHIP_PADDING
                chip = qchip if same_geometry else face_chip(rgb, found.shape, s.input_size, s.align_padding)
            return Prepared(name, None, "", chip, score(report, self.quality_limits), report, landmarks)
        except Rejected as rej:
            return Prepared(name, rej.reason, rej.detail, None, 0.0, report, landmarks)
        except MemoryError:
            return Prepared(name, reasons.PROCESSING_ERROR, "out of memory on this photo", None, 0.0, report, landmarks)
        except Exception as exc:  # noqa: BLE001 - one odd photo must not stop the batch
            text = str(exc).splitlines()[0][:160] if str(exc) else ""
            return Prepared(name, reasons.PROCESSING_ERROR, f"{type(exc).__name__}: {text}", None, 0.0, report, landmarks)


def make_detector(settings: FaceSettings) -> FaceDetector | RetinaDetector:
    """The detector the settings name (RetinaFace: float32 on this process's CPU)."""
    if settings.detector == "retinaface":
        from dedup.face.detect_retina import RetinaDetector, RetinaParams

        return RetinaDetector(RetinaParams(
            settings.retinaface_max_side, settings.retinaface_min_score,
            settings.retinaface_multi_face_min_score, settings.retinaface_multi_face_area_ratio,
        ))
    return FaceDetector(DetectParams(settings.detect_max_side, settings.detect_upsample, settings.multi_face_area_ratio,
                                     settings.multi_face_min_score))


# Worker-process entry points for embed's process pool. They live here, not in embed.py,
# so a spawned worker imports dlib and Pillow but not torch (unless it runs RetinaFace).
_WORKER: Preparer | None = None


def init_worker(settings: FaceSettings) -> None:
    """Pool initializer: build this process's Preparer (dlib models) once."""
    global _WORKER
    if settings.detector == "retinaface":
        import torch

        # One process per core already: a torch thread pool in each would oversubscribe.
        torch.set_num_threads(1)
    _WORKER = Preparer(settings)


def prepare_in_worker(item: PhotoInput) -> Prepared:
    """Pool task: prepare one photo with this process's Preparer."""
    if _WORKER is None:
        raise RuntimeError("worker not initialised")
    return _WORKER.prepare(item)
