"""dlib's match rule as a cosine threshold on L2-normalised templates.

dlib calls two faces the same person when the Euclidean distance between their raw
128-d descriptors is below 0.6. For raw descriptors a, b with norms |a|, |b| and cosine c:

    |a - b|^2 = |a|^2 + |b|^2 - 2 |a| |b| c

With both norms equal to r this is ``2 r^2 (1 - c)``, so ``|a - b| < d`` becomes
``c > 1 - d^2 / (2 r^2)``. dlib's descriptors are not unit length: we measured
r = 1.37 +- 0.05 on the 100 face crops of scikit-image's ``lfw_subset``, 1.455 on the
``astronaut`` photo and 1.41 on matplotlib's ``grace_hopper`` (tests/face checks that the
photos stay in that range). With r = 1.40, d = 0.6 gives cosine 0.9082. A norm 4% off r
moves the equivalent Euclidean distance by about 4% (0.6 +- 0.024), well inside the
spread between dlib's genuine and impostor distances, which is why one cosine threshold
can stand for dlib's rule.
"""

from __future__ import annotations

DLIB_DISTANCE_THRESHOLD = 0.6
DLIB_TYPICAL_NORM = 1.40


def cosine_for_distance(distance: float, norm: float = DLIB_TYPICAL_NORM) -> float:
    """Cosine threshold equivalent to a Euclidean threshold on raw vectors of length ``norm``."""
    return 1.0 - distance * distance / (2.0 * norm * norm)


DEFAULT_COSINE_THRESHOLD = round(cosine_for_distance(DLIB_DISTANCE_THRESHOLD), 4)  # 0.9082

# SFace's documented operating point: OpenCV Zoo's face_recognition_sface (sface.py,
# ``_threshold_cosine = 0.363``; its norm-L2 equivalent is 1.128), an LFW verification point.
# Like dlib's, it is not a large-gallery threshold; issue 13's model cards carry the measured one.
SFACE_COSINE_THRESHOLD = 0.363


def documented_cosine_threshold(model: str) -> float | None:
    """The published verification threshold of a built-in model (``face.model``), else None."""
    return {"dlib": DEFAULT_COSINE_THRESHOLD, "sface": SFACE_COSINE_THRESHOLD}.get(model)
