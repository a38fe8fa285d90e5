"""RetinaFace in torch against the shipped graph in onnxruntime, decoding, batching, and the
detector's rules on real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dedup.config import FaceSettings
from dedup.face import reasons
from dedup.face.decode import decode_image
from dedup.face.prepare import PhotoBytes, Preparer
from dedup.face.retinaface import RetinaFace, decode, level_sizes, priors
from tests.face.builtin_models import LIMITS, retinaface_reference, retinaface_session, shipped_retinaface, variants
from tests.support.photos import encode, resize, side_by_side
from tests.support.real_photos import real_photos

TOL = 1e-4


@pytest.fixture(scope="module")
def detector() -> RetinaFace:
    return shipped_retinaface()


@pytest.fixture(scope="module")
def session():  # type: ignore[no-untyped-def]
    return retinaface_session()


@pytest.fixture(scope="module")
def obama() -> np.ndarray:
    path = real_photos()["obama.jpg"].path
    from dedup.face.retinaface import shrink

    return shrink(decode_image(path.read_bytes(), LIMITS), 640)[0]


def _check_parity(detector: RetinaFace, session, rgb: np.ndarray, label: str) -> None:  # type: ignore[no-untyped-def]
    loc, scores, lmk = (t.numpy() for t in detector.raw(rgb[None]))
    ref_loc, ref_scores, ref_lmk = retinaface_reference(session, rgb[None])
    assert loc.shape == ref_loc.shape, label
    assert np.abs(scores - ref_scores).max() <= TOL, label
    assert np.abs(loc - ref_loc).max() <= TOL, label
    assert np.abs(lmk - ref_lmk).max() <= TOL, label
    # Decoded boxes and landmarks (fractions of the image) agree too.
    h, w = rgb.shape[:2]
    anchors = priors(h, w, level_sizes(h, w))
    b, p = decode(torch.from_numpy(loc), torch.from_numpy(lmk), anchors)
    rb, rp = decode(torch.from_numpy(ref_loc), torch.from_numpy(ref_lmk), anchors)
    assert (b - rb).abs().max() <= TOL and (p - rp).abs().max() <= TOL, label


def test_parity_with_onnxruntime_on_real_photos(detector, session, astronaut, grace) -> None:  # type: ignore[no-untyped-def]
    for name, photo in (("astronaut", astronaut), ("grace", grace)):
        for kind, rgb in variants(photo).items():
            _check_parity(detector, session, rgb, f"{name}/{kind}")


def test_parity_on_a_second_persons_photo(detector, session, obama) -> None:  # type: ignore[no-untyped-def]
    for kind, rgb in variants(obama).items():
        _check_parity(detector, session, rgb, f"obama/{kind}")


def test_exif_rotated_variant_is_upright(astronaut) -> None:  # type: ignore[no-untyped-def]
    v = variants(astronaut)["exif_rotated"]
    assert v.shape == astronaut.shape and np.abs(v.astype(int) - astronaut).mean() < 4


def test_priors_follow_the_published_layout() -> None:
    anchors = priors(64, 96, level_sizes(64, 96))
    # stride 8: 8 x 12 cells, 2 anchors each; then 4 x 6 and 2 x 3 cells.
    assert anchors.shape == (2 * (8 * 12 + 4 * 6 + 2 * 3), 4)
    assert torch.allclose(anchors[0], torch.tensor([4 / 96, 4 / 64, 16 / 96, 16 / 64]))
    assert torch.allclose(anchors[1], torch.tensor([4 / 96, 4 / 64, 32 / 96, 32 / 64]))
    assert torch.allclose(anchors[2], torch.tensor([12 / 96, 4 / 64, 16 / 96, 16 / 64]))
    first16 = 2 * 8 * 12
    assert torch.allclose(anchors[first16], torch.tensor([8 / 96, 8 / 64, 64 / 96, 64 / 64]))


def test_landmarks_land_on_the_face(detector, preparer, astronaut, grace) -> None:  # type: ignore[no-untyped-def]
    """Decoded RetinaFace eyes fall within a few pixels of dlib's eye centres (HOG path)."""
    for photo in (astronaut, grace):
        faces = detector.detect([photo], 0.5, 1024)[0]
        assert faces and faces[0].score > 0.99
        pts = faces[0].landmarks
        dl = preparer.prepare(PhotoBytes("p", encode(photo))).landmarks
        eye_left_of_image, eye_right_of_image = dl[2:4].mean(axis=0), dl[0:2].mean(axis=0)
        inter_eye = np.hypot(*(eye_right_of_image - eye_left_of_image))
        assert np.hypot(*(pts[0] - eye_left_of_image)) < 0.15 * inter_eye
        assert np.hypot(*(pts[1] - eye_right_of_image)) < 0.15 * inter_eye
        x0, y0, x1, y1 = faces[0].box
        assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in pts)


def test_batch_equals_one_by_one(detector, astronaut, grace) -> None:  # type: ignore[no-untyped-def]
    photos = [astronaut, np.ascontiguousarray(astronaut[:, ::-1]), variants(astronaut)["jpeg50"], grace, resize(grace, 0.7)]
    batched = detector.detect(photos, 0.5, 640, batch_size=8)  # 3 of one size stacked
    for photo, together in zip(photos, batched):
        alone = detector.detect([photo], 0.5, 640)[0]
        assert len(alone) == len(together) >= 1
        for a, b in zip(alone, together):
            assert np.abs(a.box - b.box).max() < 1e-3 and np.abs(a.landmarks - b.landmarks).max() < 1e-3
            assert abs(a.score - b.score) < 1e-5


def test_float16_is_refused_on_cpu() -> None:
    from dedup.errors import FaceModelError

    with pytest.raises(FaceModelError, match="GPU"):
        RetinaFace(shipped_retinaface().net, device="cpu", half=True)  # refused before anything moves


@pytest.fixture(scope="module")
def retina_preparer() -> Preparer:
    return Preparer(FaceSettings(workers=1, device="cpu", detector="retinaface"))


def test_detector_rules_on_real_photos(retina_preparer, astronaut, grace, coffee) -> None:  # type: ignore[no-untyped-def]
    def prep(rgb: np.ndarray):  # type: ignore[no-untyped-def]
        return retina_preparer.prepare(PhotoBytes("p", encode(rgb)))

    assert prep(astronaut).reason is None
    assert prep(coffee).reason == reasons.NO_FACE
    assert prep(side_by_side(astronaut, resize(grace, 0.45))).reason == reasons.MULTIPLE_FACES
    assert prep(side_by_side(astronaut, astronaut)).reason == reasons.MULTIPLE_FACES
    kept = prep(side_by_side(grace, astronaut))  # RetinaFace: Grace's box is 3.4x the astronaut's area (HOG: 4.2x)
    alone = prep(grace)
    assert kept.reason is None and np.abs(kept.landmarks - alone.landmarks).max() <= 2
    tiny = prep(resize(astronaut, 0.5))
    assert tiny.reason == reasons.FACE_TOO_SMALL, tiny.detail
