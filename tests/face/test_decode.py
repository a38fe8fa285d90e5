"""Decoding: every Pillow mode to 8-bit RGB, formats, and fuzzed bytes never escaping as exceptions."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dedup.face import reasons
from dedup.face.decode import DecodeLimits, decode_image
from dedup.face.reasons import Rejected
from tests.support.photos import encode

LIMITS = DecodeLimits(20_000_000, 40_000_000, ("JPEG", "PNG", "GIF", "TIFF", "WEBP", "BMP"))


def save(img: Image.Image, fmt: str, **kw) -> bytes:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_grey_palette_and_cmyk(astronaut) -> None:  # type: ignore[no-untyped-def]
    img = Image.fromarray(astronaut)
    grey = decode_image(save(img.convert("L"), "PNG"), LIMITS)
    assert grey.shape == (512, 512, 3) and grey.dtype == np.uint8
    assert np.array_equal(grey[..., 0], grey[..., 2]) and np.array_equal(grey[..., 0], np.asarray(img.convert("L")))
    palette = decode_image(save(img.convert("P"), "GIF"), LIMITS)
    assert palette.shape == (512, 512, 3) and np.abs(palette.astype(int) - astronaut).mean() < 20
    cmyk = decode_image(save(img.convert("CMYK"), "JPEG", quality=95), LIMITS)
    assert np.abs(cmyk.astype(int) - astronaut).mean() < 6


def test_transparency_goes_on_white(astronaut) -> None:  # type: ignore[no-untyped-def]
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    rgba[:100, :100, 3] = 0  # a transparent corner
    out = decode_image(save(Image.fromarray(rgba, "RGBA"), "PNG"), LIMITS)
    assert (out[:100, :100] == 255).all()
    assert np.array_equal(out[200:, 200:], astronaut[200:, 200:])


def test_sixteen_bit_grey_is_scaled_not_clipped(astronaut) -> None:  # type: ignore[no-untyped-def]
    grey8 = np.asarray(Image.fromarray(astronaut).convert("L"))
    grey16 = grey8.astype(np.uint16) * 257  # full 16-bit range
    out = decode_image(save(Image.fromarray(grey16), "PNG"), LIMITS)
    assert np.array_equal(out[..., 0], grey8)


def test_format_allow_list(astronaut) -> None:  # type: ignore[no-untyped-def]
    data = encode(astronaut, "PNG")
    with pytest.raises(Rejected) as info:
        decode_image(data, DecodeLimits(20_000_000, 40_000_000, ("JPEG",)))
    assert info.value.reason == reasons.UNSUPPORTED_FORMAT and "PNG" in info.value.detail


@pytest.fixture(scope="module")
def small_photos(astronaut) -> list[bytes]:  # type: ignore[no-untyped-def]
    small = np.asarray(Image.fromarray(astronaut).resize((48, 48)))
    return [encode(small, "JPEG", quality=80), encode(small, "PNG"), save(Image.fromarray(small).convert("P"), "GIF")]


@given(data=st.data())
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_damaged_bytes_give_an_image_or_a_reason(small_photos, data) -> None:  # type: ignore[no-untyped-def]
    """Flipped, cut or random bytes: the decoder returns RGB or raises Rejected, nothing else."""
    original = bytearray(data.draw(st.sampled_from(small_photos)))
    action = data.draw(st.sampled_from(["flip", "cut", "random"]))
    if action == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            pos = data.draw(st.integers(0, len(original) - 1))
            original[pos] = data.draw(st.integers(0, 255))
        blob = bytes(original)
    elif action == "cut":
        blob = bytes(original[: data.draw(st.integers(0, len(original) - 1))])
    else:
        blob = data.draw(st.binary(max_size=300))
    try:
        out = decode_image(blob, LIMITS)
    except Rejected as rej:
        assert rej.reason in reasons.ALL_REASONS and rej.detail
    else:
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
