"""Where the model files shipped by ``face-recognition-models`` are.

``import face_recognition_models`` fails on current setuptools (it imports
``pkg_resources``), so the package is located without importing it. Nothing here
downloads anything.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from dedup.errors import FaceModelError

RESNET = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE_5 = "shape_predictor_5_face_landmarks.dat"


def model_file(name: str) -> Path:
    """Path of one file in face_recognition_models/models/, checked to exist."""
    spec = importlib.util.find_spec("face_recognition_models")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise FaceModelError("package face-recognition-models is not installed (pip install face-recognition-models)")
    path = Path(locations[0]) / "models" / name
    if not path.is_file():
        raise FaceModelError(f"{path} is missing: reinstall face-recognition-models")
    return path
