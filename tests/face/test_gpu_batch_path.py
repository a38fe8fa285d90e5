"""The batched device path (``embed_photos_on``: CPU workers decode; RetinaFace, the ArcFace warp
and the model run in device batches) against the per-photo path, on CPU torch: the same
templates and the same reject reasons on real photos. On a GPU machine the same function
runs with ``device="cuda"``; here it runs with ``"cpu"``."""

from __future__ import annotations

import numpy as np
import pytest

from dedup.config import FaceSettings
from dedup.face import reasons
from dedup.face.arcface_align import arcface_chip, arcface_matrix, warp_photos
from dedup.face.embed import EmbedResult, embed_photos, embed_photos_on, iter_decoded, uses_device_batches
from dedup.face.model import FaceModel, load_model
from dedup.face.prepare import PhotoBytes
from tests.face.builtin_models import shipped_retinaface
from tests.support.photos import encode, resize, side_by_side
from tests.support.real_photos import real_photos

SFACE = FaceSettings(workers=1, device="cpu", detector="retinaface", model="sface", batch_size=4)
DLIB_RETINA = FaceSettings(workers=1, device="cpu", detector="retinaface", batch_size=4)


def _small_face_on_canvas(astronaut: np.ndarray) -> np.ndarray:
    canvas = np.full((900, 1200, 3), 128, dtype=np.uint8)
    face = resize(astronaut, 0.25)
    canvas[300 : 300 + face.shape[0], 500 : 500 + face.shape[1]] = face
    return canvas


@pytest.fixture(scope="module")
def photos(astronaut, grace, grace_jpeg, coffee) -> list[PhotoBytes]:  # type: ignore[no-untyped-def]
    """Real photos of several sizes (two pairs of one size, so detection stacks them), a photo
    with no face, one with two equal faces, one kept beside a smaller face, a small face
    (two found only by the no-face retry), one over retinaface_max_side, and a truncated file."""
    items = [
        PhotoBytes("astronaut.png", encode(astronaut)),
        PhotoBytes("astronaut_mirror.png", encode(np.ascontiguousarray(astronaut[:, ::-1]))),
        PhotoBytes("grace.jpg", grace_jpeg),
        PhotoBytes("grace_dark.png", encode((grace * 0.8).astype(np.uint8))),
        PhotoBytes("coffee.png", encode(coffee)),
        PhotoBytes("two_faces.png", encode(side_by_side(astronaut, astronaut))),
        PhotoBytes("grace_beside_astronaut.png", encode(side_by_side(grace, astronaut))),
        PhotoBytes("astronaut_small.png", encode(resize(astronaut, 0.5))),
        PhotoBytes("astronaut_tiny.png", encode(resize(astronaut, 0.15))),  # found only by the retry
        PhotoBytes("small_face_on_large_canvas.png", encode(_small_face_on_canvas(astronaut))),  # ditto, shrunk first
        PhotoBytes("astronaut_large.jpg", encode(resize(astronaut, 1.7), "JPEG", quality=90)),
        PhotoBytes("truncated.jpg", grace_jpeg[: len(grace_jpeg) // 3]),
    ]
    real = real_photos()
    items += [PhotoBytes(name, p.path.read_bytes()) for name, p in sorted(real.items())]
    return items


@pytest.fixture(scope="module")
def sface_model() -> FaceModel:
    return load_model(SFACE)


@pytest.fixture(scope="module")
def dlib_model() -> FaceModel:
    return load_model(DLIB_RETINA)


def _same(per_photo: EmbedResult, batched: EmbedResult) -> float:
    """Assert the same records (source, reason, quality) and return the smallest template cosine."""
    assert per_photo.model_id == batched.model_id
    for a, b in zip(per_photo.results, batched.results, strict=True):
        assert (a.source, a.reason) == (b.source, b.reason), (a, b)
        assert a.detail == b.detail and a.row == b.row
        assert a.quality == pytest.approx(b.quality, abs=1e-6)
    assert per_photo.embeddings.shape == batched.embeddings.shape
    return float((per_photo.embeddings * batched.embeddings).sum(axis=1).min())


def test_batched_path_gives_the_per_photo_templates_and_reasons_sface(photos, sface_model) -> None:  # type: ignore[no-untyped-def]
    per_photo = embed_photos(photos, SFACE, model=sface_model)
    batched = embed_photos_on(photos, SFACE, "cpu", model=sface_model)
    assert _same(per_photo, batched) >= 0.9999
    got = {r.source: r.reason for r in batched.results}
    assert got["coffee.png"] == reasons.NO_FACE
    assert got["two_faces.png"] == reasons.MULTIPLE_FACES
    assert got["astronaut_small.png"] == reasons.FACE_TOO_SMALL
    assert got["astronaut_tiny.png"] == got["small_face_on_large_canvas.png"] == reasons.FACE_TOO_SMALL  # not no_face
    assert got["truncated.jpg"] == reasons.CORRUPT_IMAGE
    for name in ("astronaut.png", "astronaut_mirror.png", "grace.jpg", "grace_beside_astronaut.png", "astronaut_large.jpg",
                 "obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"):
        assert got[name] is None, name
    assert len(batched.accepted) >= 10


def test_batched_path_gives_the_per_photo_templates_and_reasons_dlib(photos, dlib_model) -> None:  # type: ignore[no-untyped-def]
    # dlib's chip is cut on the CPU in both paths: only detection is batched, so equal to float rounding.
    per_photo = embed_photos(photos, DLIB_RETINA, model=dlib_model)
    batched = embed_photos_on(photos, DLIB_RETINA, "cpu", model=dlib_model)
    assert _same(per_photo, batched) >= 0.99999


def test_device_warp_equals_the_cpu_arcface_crop(astronaut, grace) -> None:  # type: ignore[no-untyped-def]
    """warp_photos (regions of photos of different sizes in one grid_sample batch) reproduces
    Pillow's crop, also where the crop leaves the photo (a face at its corner)."""
    det = shipped_retinaface()
    corner = np.ascontiguousarray(astronaut[80:, 190:])  # the face cut at the photo's top-left
    photos = [astronaut, grace, corner]
    landmarks = [det.detect([p], 0.5, 640)[0][0].landmarks for p in photos]
    warped = warp_photos(photos, [arcface_matrix(lm) for lm in landmarks], "cpu")
    for photo, lm, chip in zip(photos, landmarks, warped):
        cpu = arcface_chip(photo, lm).astype(int)
        diff = np.abs(cpu - chip)
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    assert (arcface_chip(corner, landmarks[2]) == 0).all(axis=2).mean() > 0.1  # the test does reach outside


def test_decoding_in_worker_processes_matches_in_process(photos) -> None:  # type: ignore[no-untyped-def]
    few = photos[:3] + [photos[4], photos[11]]  # faces, no face, truncated
    alone = dict(iter_decoded(few, SFACE, 1))
    pooled = dict(iter_decoded(few, SFACE, 2))
    assert sorted(pooled) == list(range(len(few)))
    for i, a in alone.items():
        b = pooled[i]
        assert (a.source, a.reason, a.detail, a.scale) == (b.source, b.reason, b.detail, b.scale)
        if a.rgb is not None:
            assert b.rgb is not None and b.small is not None and a.small is not None
            assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.small, b.small)


def test_path_choice() -> None:
    assert not uses_device_batches(SFACE)  # device cpu: today's per-photo path
    assert not uses_device_batches(FaceSettings(device="cpu"))
    assert not uses_device_batches(FaceSettings(device="auto"))  # HOG never takes it
