"""The dlib file parser: primitives against hand-encoded bytes, the real file, bad files."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dedup.errors import FaceModelError
from dedup.face import assets
from dedup.face.dlib_format import DlibReader
from dedup.face.dlib_resnet import DESCRIPTOR_DIM, parse_dlib_resnet


def enc_int(v: int) -> bytes:
    """dlib's integer encoding, written independently for the test."""
    mag = abs(v)
    body = mag.to_bytes(max(1, (mag.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if v < 0 else 0)]) + body


@given(st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1))
@settings(max_examples=200, deadline=None)
def test_integers_round_trip(v: int) -> None:
    r = DlibReader(enc_int(v))
    assert r.integer() == v and r.at_end()


def test_known_encodings() -> None:
    assert DlibReader(b"\x01\x00").integer() == 0
    assert DlibReader(b"\x81\x04").integer() == -4
    # 0.04 as float_details writes it: mantissa 0xa3d70a, exponent -28.
    assert DlibReader(b"\x03\x0a\xd7\xa3\x81\x1c").scalar() == pytest.approx(0.04, rel=1e-7)
    assert DlibReader(enc_int(1) + enc_int(32000)).scalar() == math.inf
    assert math.isnan(DlibReader(enc_int(0) + enc_int(32002)).scalar())


def test_tensor_layout() -> None:
    data = np.arange(6, dtype="<f4")
    raw = enc_int(2) + b"".join(enc_int(d) for d in (1, 2, 3, 1)) + data.tobytes()
    t = DlibReader(raw).tensor()
    assert t.shape == (1, 2, 3, 1) and t.reshape(-1).tolist() == data.tolist()


def test_truncated_and_bad_bytes_are_clear_errors() -> None:
    with pytest.raises(FaceModelError, match="unexpected end"):
        DlibReader(b"\x04\x01").integer()
    with pytest.raises(FaceModelError, match="bad integer"):
        DlibReader(b"\x3f").integer()
    with pytest.raises(FaceModelError, match="expected a bool"):
        DlibReader(b"x").boolean()
    raw = enc_int(2) + b"".join(enc_int(d) for d in (1, 1, 1, 4)) + struct.pack("<2f", 1, 2)
    with pytest.raises(FaceModelError, match="unexpected end"):
        DlibReader(raw).tensor()


def test_real_file_parses_to_the_architecture() -> None:
    parsed = parse_dlib_resnet(assets.model_file(assets.RESNET))
    assert parsed.input_size == 150
    assert parsed.mean == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    assert parsed.fc_weight.shape == (DESCRIPTOR_DIM, 256)
    convs = [layer for layer in parsed.layers if type(layer).__name__ == "ConvRecord"]
    assert len(convs) == 29  # stem + 14 blocks x 2
    assert convs[0].weight.shape == (32, 3, 7, 7) and convs[0].stride == 2 and convs[0].padding == 0
    assert convs[-1].weight.shape == (256, 256, 3, 3) and convs[-1].padding == 1


def test_truncated_model_file(tmp_path: Path) -> None:
    data = assets.model_file(assets.RESNET).read_bytes()
    bad = tmp_path / "cut.dat"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(FaceModelError, match="unexpected end"):
        parse_dlib_resnet(bad)
    extra = tmp_path / "extra.dat"
    extra.write_bytes(data + b"\x00")
    with pytest.raises(FaceModelError, match="unexpected bytes"):
        parse_dlib_resnet(extra)


def test_other_dlib_file_is_refused() -> None:
    with pytest.raises(FaceModelError):
        parse_dlib_resnet(assets.model_file(assets.SHAPE_5))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FaceModelError, match="cannot read"):
        parse_dlib_resnet(tmp_path / "nope.dat")
