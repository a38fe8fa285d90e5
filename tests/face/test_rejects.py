"""Every reject reason, each from a real bad file made from the test photos."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageFilter

from dedup.face import reasons
from dedup.face.reasons import ALL_REASONS
from dedup.schemas import REJECTS_SCHEMA, check_schema, templates_schema
from tests.support.photos import encode, resize, rotate, side_by_side


def huge_png_header(width: int, height: int) -> bytes:
    """A real, valid 1x1 PNG whose header is rewritten to announce width x height (CRC fixed):
    the shape of a decompression bomb, a few dozen bytes long."""
    small = encode(np.zeros((1, 1, 3), dtype=np.uint8))
    ihdr = small.index(b"IHDR")
    body = bytearray(small[ihdr : ihdr + 4 + 13])
    body[4:12] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(bytes(body)) & 0xFFFFFFFF)
    return small[:ihdr] + bytes(body) + crc + small[ihdr + 4 + 13 + 4 :]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, astronaut, grace, coffee):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("bad")
    jpeg = encode(astronaut, "JPEG", quality=90)
    files = {
        "truncated.jpg": (jpeg[: len(jpeg) // 2], reasons.CORRUPT_IMAGE),
        "notes.jpg": (b"this is a text file, not a photo\n", reasons.NOT_AN_IMAGE),
        "empty.png": (b"", reasons.NOT_AN_IMAGE),
        "bomb.png": (huge_png_header(100_000, 100_000), reasons.TOO_LARGE),
        "big.png": (huge_png_header(8_000, 6_000), reasons.TOO_LARGE),  # under Pillow's limit, over ours
        "photo.ico": (encode(resize(astronaut, 0.25), "ICO"), reasons.UNSUPPORTED_FORMAT),
        "coffee.png": (encode(coffee), reasons.NO_FACE),
        "two_people.png": (encode(side_by_side(astronaut, resize(grace, 0.45))), reasons.MULTIPLE_FACES),
        "tiny_face.png": (encode(resize(astronaut, 0.5)), reasons.FACE_TOO_SMALL),
        "blurry.png": (encode(np.asarray(Image.fromarray(grace).filter(ImageFilter.GaussianBlur(5)))), reasons.TOO_BLURRY),
        "dark.png": (encode((astronaut * 0.15).astype(np.uint8)), reasons.TOO_DARK),
        "overexposed.png": (encode(np.clip(grace * 2.5, 0, 255).astype(np.uint8)), reasons.OVEREXPOSED),
        "tilted.png": (encode(rotate(astronaut, 35)), reasons.EXTREME_POSE),
    }
    for name, (data, _) in files.items():
        (d / name).write_bytes(data)
    (d / "good.png").write_bytes(encode(astronaut))
    return d, {name: reason for name, (_, reason) in files.items()}


def test_every_reason_from_a_real_file(bad_files, run) -> None:  # type: ignore[no-untyped-def]
    folder, expected = bad_files
    names = ["good.png", *expected, "missing.jpg"]
    result = run([str(folder / n) for n in names])
    got = {Path(r.source).name: r for r in result.results}
    assert [Path(r.source).name for r in result.results] == names  # input order, nothing lost
    assert got["good.png"].ok and got["good.png"].row == 0
    assert got["missing.jpg"].reason == reasons.NOT_FOUND
    for name, reason in expected.items():
        assert got[name].reason == reason, (name, got[name].detail)
        assert got[name].detail
    exercised = {r.reason for r in result.rejected}
    assert exercised == set(ALL_REASONS) - {reasons.PROCESSING_ERROR}
    assert result.embeddings.shape == (1, 128)


def test_details_give_measured_value_and_limit(bad_files, run) -> None:  # type: ignore[no-untyped-def]
    folder, _ = bad_files
    result = run([str(folder / n) for n in ("tiny_face.png", "bomb.png", "tilted.png")])
    tiny, bomb, tilted = result.results
    assert "inter-eye distance 21." in tiny.detail and "< 30 px" in tiny.detail
    assert "10000000000 pixels" in bomb.detail and "limit 40000000" in bomb.detail
    assert tilted.detail.startswith("roll") and "25" in tilted.detail


def test_byte_limit(tmp_path: Path, astronaut, run) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "astronaut.png"
    path.write_bytes(encode(astronaut))
    result = run([str(path)], max_bytes=100_000)
    assert result.results[0].reason == reasons.TOO_LARGE
    assert f"{path.stat().st_size} bytes > limit 100000" in result.results[0].detail


def test_dominant_face_is_kept(grace, astronaut, preparer) -> None:  # type: ignore[no-untyped-def]
    """Grace beside a smaller astronaut: both are real faces (scores > 1), Grace's box is
    about 6x larger, so she is kept; at similar sizes the photo is multiple_faces."""
    from dedup.face.prepare import PhotoBytes

    kept = preparer.prepare(PhotoBytes("g+a", encode(side_by_side(grace, astronaut))))
    alone = preparer.prepare(PhotoBytes("g", encode(grace)))
    assert kept.reason is None
    assert np.abs(kept.landmarks - alone.landmarks).max() <= 2  # it is Grace's face
    tie = preparer.prepare(PhotoBytes("a+a", encode(side_by_side(astronaut, astronaut))))
    assert tie.reason == reasons.MULTIPLE_FACES


def test_all_failing_batch_writes_empty_templates(tmp_path: Path, bad_files, run) -> None:  # type: ignore[no-untyped-def]
    folder, _ = bad_files
    result = run([str(folder / "notes.jpg"), str(folder / "coffee.png")])
    out, rej = tmp_path / "t.parquet", tmp_path / "r.parquet"
    result.write(out, rej)
    templates, rejects = pq.read_table(out), pq.read_table(rej)
    check_schema(templates.schema, templates_schema(128), "templates")
    check_schema(rejects.schema, REJECTS_SCHEMA, "rejects")
    assert templates.num_rows == 0 and rejects.column("reason").to_pylist() == ["not_an_image", "no_face"]


def test_pixel_limit_is_checked_before_decoding(bad_files, run) -> None:  # type: ignore[no-untyped-def]
    folder, _ = bad_files
    result = run([str(folder / "big.png")])
    assert result.results[0].detail == "image is 8000x6000 = 48000000 pixels > limit 40000000"
