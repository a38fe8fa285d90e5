"""Matching: the same person in two captures is within the threshold, two people are not.

The packages ship one photo of each person, so the second capture is made from the first
by what differs between two real captures: the head turned the other way (mirror), a
tilt, another distance to the camera, other light and another JPEG encoder.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance

from dedup.face import DEFAULT_COSINE_THRESHOLD, DLIB_DISTANCE_THRESHOLD, PhotoBytes
from dedup.face.threshold import DLIB_TYPICAL_NORM, cosine_for_distance
from tests.support.photos import encode, resize, rotate


def recapture(rgb: np.ndarray) -> bytes:
    mirrored = np.ascontiguousarray(rgb[:, ::-1])
    tilted = rotate(resize(mirrored, 0.85), 8)
    lit = np.asarray(ImageEnhance.Brightness(Image.fromarray(tilted)).enhance(0.8))
    return encode(lit, "JPEG", quality=60)


def test_threshold_constant() -> None:
    assert DEFAULT_COSINE_THRESHOLD == round(1 - 0.6**2 / (2 * 1.4**2), 4) == 0.9082
    # Equal norms: the cosine rule and dlib's Euclidean rule are the same rule.
    a = np.array([DLIB_TYPICAL_NORM, 0.0])
    angle = np.arccos(cosine_for_distance(0.6))
    b = DLIB_TYPICAL_NORM * np.array([np.cos(angle), np.sin(angle)])
    assert abs(np.linalg.norm(a - b) - 0.6) < 1e-12


def test_same_person_matches_and_different_people_do_not(astronaut, grace, preparer, cpu_model) -> None:  # type: ignore[no-untyped-def]
    photos = {
        "astronaut": encode(astronaut),
        "astronaut_again": recapture(astronaut),
        "grace": encode(grace, "JPEG", quality=90),
        "grace_again": recapture(grace),
    }
    chips = []
    for name, data in photos.items():
        prep = preparer.prepare(PhotoBytes(name, data))
        assert prep.reason is None, (name, prep.detail)
        chips.append(prep.chip)
    raw = cpu_model.embed(np.stack(chips), batch_size=4).astype(np.float64)
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    dist = np.linalg.norm(raw[:, None] - raw[None], axis=2)
    cos = unit @ unit.T
    same = [(0, 1), (2, 3)]
    different = [(0, 2), (0, 3), (1, 2), (1, 3)]
    for i, j in same:
        assert dist[i, j] < DLIB_DISTANCE_THRESHOLD and cos[i, j] >= DEFAULT_COSINE_THRESHOLD, (i, j, dist[i, j], cos[i, j])
    for i, j in different:
        assert dist[i, j] >= DLIB_DISTANCE_THRESHOLD and cos[i, j] < DEFAULT_COSINE_THRESHOLD, (i, j, dist[i, j], cos[i, j])
    # The photos' descriptor norms lie where the threshold's derivation assumes.
    assert np.all(np.abs(np.linalg.norm(raw, axis=1) - DLIB_TYPICAL_NORM) < 0.1)


def test_typical_norm_on_lfw_faces(lfw_faces, cpu_model) -> None:  # type: ignore[no-untyped-def]
    """The norm the threshold is derived with, re-measured on the 100 lfw_subset faces
    (25 px crops enlarged to the 150 px chip)."""
    chips = np.stack([np.asarray(Image.fromarray(f).convert("RGB").resize((150, 150), Image.Resampling.BICUBIC)) for f in lfw_faces])
    norms = np.linalg.norm(cpu_model.embed(chips, batch_size=50), axis=1)
    assert abs(norms.mean() - DLIB_TYPICAL_NORM) < 0.05
    assert norms.std() < 0.08
