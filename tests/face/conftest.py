"""Fixtures for the face pipeline tests: real photos from installed packages, real dlib.

Photos: scikit-image's ``astronaut`` (Eileen Collins), matplotlib's ``grace_hopper.jpg``,
scikit-image's ``lfw_subset`` (25x25 grey face crops) and ``coffee`` (no face). Every bad
file is made from them by a real transformation, written to a temporary folder.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dlib
import numpy as np
import pytest
from PIL import Image

from dedup.config import FaceSettings
from dedup.face import assets

if TYPE_CHECKING:  # imported on use below: torch loads only for the tests that need a model
    from dedup.face.embed import EmbedResult
    from dedup.face.model import FaceModel
    from dedup.face.prepare import PhotoInput, Preparer


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut())


@pytest.fixture(scope="session")
def grace_jpeg() -> bytes:
    import matplotlib.cbook

    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).read_bytes()


@pytest.fixture(scope="session")
def grace(grace_jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(grace_jpeg)).convert("RGB"))


@pytest.fixture(scope="session")
def lfw_faces() -> np.ndarray:
    """The 100 face crops of lfw_subset as 8-bit grey (100, 25, 25)."""
    import skimage.data

    return (skimage.data.lfw_subset()[:100] * 255).round().astype(np.uint8)


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    import skimage.data

    return np.ascontiguousarray(skimage.data.coffee())


class Oracle:
    """dlib-bin's own pipeline: detector, 5-point predictor, chip, descriptor."""

    def __init__(self) -> None:
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(assets.model_file(assets.SHAPE_5)))
        self.recogniser = dlib.face_recognition_model_v1(str(assets.model_file(assets.RESNET)))

    def chip(self, rgb: np.ndarray) -> np.ndarray:
        rects, scores, _ = self.detector.run(rgb, 0, 0.0)
        assert len(rects) >= 1
        shape = self.predictor(rgb, rects[int(np.argmax(scores))])
        return np.asarray(dlib.get_face_chip(rgb, shape, size=150, padding=0.25))

    def descriptors(self, chips: np.ndarray) -> np.ndarray:
        return np.array([np.array(self.recogniser.compute_face_descriptor(np.ascontiguousarray(c))) for c in chips], dtype=np.float64)


@pytest.fixture(scope="session")
def oracle() -> Oracle:
    return Oracle()


@pytest.fixture(scope="session")
def face_settings() -> FaceSettings:
    return FaceSettings(workers=1, device="cpu")


@pytest.fixture(scope="session")
def cpu_model(face_settings: FaceSettings) -> FaceModel:
    from dedup.face.model import load_model

    return load_model(face_settings)


@pytest.fixture(scope="session")
def preparer(face_settings: FaceSettings) -> Preparer:
    from dedup.face.prepare import Preparer

    return Preparer(face_settings)


@pytest.fixture(scope="session")
def run(cpu_model: FaceModel) -> Callable[..., EmbedResult]:
    """embed_photos in this process with the session's CPU model and settings overrides."""
    from dedup.face import embed_photos

    def go(items: Sequence[PhotoInput], **overrides: Any) -> EmbedResult:
        return embed_photos(items, FaceSettings(workers=1, device="cpu", **overrides), model=cpu_model)

    return go
