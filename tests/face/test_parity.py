"""The torch port against dlib-bin on real photos and transformed captures of them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from dedup.face.decode import DecodeLimits, decode_image
from dedup.face.prepare import PhotoBytes
from tests.support.photos import encode, resize

LIMITS = DecodeLimits(20_000_000, 40_000_000, ("JPEG", "PNG"))


def exif_rotated_jpeg(rgb: np.ndarray) -> bytes:
    """Pixels stored turned 90 degrees counter-clockwise, with EXIF orientation 6
    ("rotate 90 clockwise to display"), as a phone camera writes a portrait photo."""
    img = Image.fromarray(np.ascontiguousarray(np.rot90(rgb, 1)))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, exif=exif)
    return buf.getvalue()


def variants(rgb: np.ndarray) -> dict[str, bytes]:
    img = Image.fromarray(rgb)
    h, w = rgb.shape[:2]
    return {
        "png": encode(rgb),
        "scaled_0.8": encode(resize(rgb, 0.8)),
        "scaled_1.5": encode(resize(rgb, 1.5)),
        "cropped": encode(np.ascontiguousarray(rgb[h // 10 : h - h // 8, w // 8 : w - w // 10])),
        "darker": encode(np.asarray(ImageEnhance.Brightness(img).enhance(0.7))),
        "brighter": encode(np.asarray(ImageEnhance.Brightness(img).enhance(1.2))),
        "jpeg_q40": encode(rgb, "JPEG", quality=40),
        "jpeg_twice": encode(np.asarray(Image.open(io.BytesIO(encode(rgb, "JPEG", quality=70)))), "JPEG", quality=50),
        "exif_rotated": exif_rotated_jpeg(rgb),
    }


@pytest.fixture(scope="module")
def prepared_variants(astronaut, grace, preparer):  # type: ignore[no-untyped-def]
    out = {}
    for person, rgb in (("astronaut", astronaut), ("grace", grace)):
        for name, data in variants(rgb).items():
            out[f"{person}/{name}"] = (data, preparer.prepare(PhotoBytes(f"{person}/{name}", data)))
    return out


def test_every_variant_passes(prepared_variants) -> None:  # type: ignore[no-untyped-def]
    failed = {k: (p.reason, p.detail) for k, (_, p) in prepared_variants.items() if p.reason}
    assert not failed


def test_chip_is_dlibs_chip(prepared_variants, oracle) -> None:  # type: ignore[no-untyped-def]
    """Our decode/detect/align gives byte-identical chips to dlib's own pipeline."""
    for key, (data, prep) in prepared_variants.items():
        rgb = decode_image(data, LIMITS)
        assert np.array_equal(prep.chip, oracle.chip(rgb)), key


def test_descriptors_match_dlib(prepared_variants, oracle, cpu_model) -> None:  # type: ignore[no-untyped-def]
    chips = np.stack([p.chip for _, p in prepared_variants.values()])
    ours = cpu_model.embed(chips, batch_size=8)
    ref = oracle.descriptors(chips)
    diff = np.abs(ours - ref).max(axis=1)
    assert diff.max() <= 1e-5, dict(zip(prepared_variants, diff))


def test_exif_orientation_is_applied(astronaut) -> None:  # type: ignore[no-untyped-def]
    data = exif_rotated_jpeg(astronaut)
    upright = decode_image(data, LIMITS)
    stored = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert stored.shape == (512, 512, 3)
    assert np.array_equal(upright, np.rot90(stored, -1))
    assert np.abs(upright.astype(int) - astronaut.astype(int)).mean() < 3  # only JPEG loss


def test_large_photo_detected_on_a_shrunk_copy(grace, preparer, oracle, cpu_model) -> None:  # type: ignore[no-untyped-def]
    """Over detect_max_side the box comes from a shrunk copy: parity still holds on our chip,
    and the template stays well inside the match threshold of the full-size detection."""
    big = resize(grace, 2.2)  # 1320 x 1126 > 1024
    prep = preparer.prepare(PhotoBytes("big", encode(big)))
    assert prep.reason is None
    ours, ref = cpu_model.embed(np.stack([prep.chip, oracle.chip(big)]), batch_size=2)
    assert np.linalg.norm(ours - ref) < 0.15  # another box, other landmarks: capture-level noise
    assert np.abs(ours - oracle.descriptors(prep.chip[None])[0]).max() <= 1e-5


def test_batch_equals_one_by_one(prepared_variants, cpu_model) -> None:  # type: ignore[no-untyped-def]
    chips = np.stack([p.chip for _, p in prepared_variants.values()])[::3]  # 6 chips, both people
    together = cpu_model.embed(chips, batch_size=len(chips))
    alone = np.concatenate([cpu_model.embed(c[None], batch_size=1) for c in chips])
    assert np.abs(together - alone).max() <= 1e-6
