"""The face pipeline: decode, detect, align, quality-check and embed photos.

The main entry point is :func:`embed_photos` (paths or :class:`PhotoBytes` in, an
:class:`EmbedResult` with templates and per-photo reasons out). ``DEFAULT_COSINE_THRESHOLD``
is dlib's Euclidean 0.6 rule expressed on L2-normalised templates, and
:func:`default_model_id` names the default model without loading it.

Heavy parts (torch, dlib) are imported on first use, so importing this package is cheap
and worker processes that detect faces with HOG never import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dedup.face.threshold import DEFAULT_COSINE_THRESHOLD, DLIB_DISTANCE_THRESHOLD, cosine_for_distance

if TYPE_CHECKING:
    from dedup.face.embed import EmbedResult, PhotoResult, embed_photos
    from dedup.face.model import FaceModel, default_model_id, load_model
    from dedup.face.prepare import PhotoBytes

_LAZY = {
    "EmbedResult": "dedup.face.embed",
    "PhotoResult": "dedup.face.embed",
    "embed_photos": "dedup.face.embed",
    "FaceModel": "dedup.face.model",
    "default_model_id": "dedup.face.model",
    "load_model": "dedup.face.model",
    "PhotoBytes": "dedup.face.prepare",
}

# Spelled out (not ``*_LAZY``) so that linters see the lazy names as exported.
__all__ = ["DEFAULT_COSINE_THRESHOLD", "DLIB_DISTANCE_THRESHOLD", "cosine_for_distance",
           "EmbedResult", "PhotoResult", "embed_photos", "FaceModel", "default_model_id", "load_model", "PhotoBytes"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dedup.face' has no attribute {name!r}")
