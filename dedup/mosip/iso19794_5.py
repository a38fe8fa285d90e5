"""The face image inside an ISO/IEC 19794-5 face record (the BDB of a MOSIP face BIR).

Read by its length fields, never "to the end": MOSIP's samples carry tens of kilobytes of
trailing bytes after the record (documentation@1.2.0 individualBiometrics_bio_CBEFF.xml:
a 23,088-byte record in a 64,714-byte BDB). Layouts:

- 2011 (``FAC\\0`` ``030\\0``): general header 17 bytes (format id, version, record length
  u32, representations u16, certification flag u8, temporal semantics u16); each
  representation: length u32, capture date-time 9, capture device technology 1, vendor u16,
  type u16, quality blocks (count u8, 5 bytes each), landmark count u16, gender, eye colour,
  hair colour, height (4), property mask 3, expression 2, pose 3 + uncertainty 3, landmarks
  8 bytes each, face image type 1, image data type 1 (0 JPEG, 1 JPEG2000 lossy, 2 JPEG2000
  lossless), width u16, height u16, spatial sampling 1, post-acquisition processing 2,
  cross reference 1, colour space 1, image length u32, image.
- 2005 (``010\\0``): header 14 bytes (id, version, length u32, faces u16); each face block:
  length u32, landmark count u16, gender, eye, hair (3), property mask 3, expression 2,
  pose 3 + uncertainty 3, landmarks 8 each, then 12 bytes of image information and the
  image (block length minus the rest).

Older MOSIP samples put a bare JPEG, JPEG2000 or PNG in the BDB: recognised by magic bytes.
(Layout: ISO/IEC 19794-5; MOSIP's reader bio-utils ``biometrics-util/.../face/FaceDecoder.java``.)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from dedup.errors import MosipFailure
from dedup.mosip.codes import Failure

JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
J2K_CODESTREAM = b"\xff\x4f\xff\x51"
JPEG = b"\xff\xd8\xff"
PNG = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class FaceImage:
    """An encoded face image and what the record says about it."""

    data: bytes
    kind: str  # "jpeg", "jpeg2000", "png"
    width: int | None = None
    height: int | None = None


def sniff(data: bytes) -> str | None:
    """The image kind of some bytes by their magic, or None."""
    if data.startswith(JP2_SIGNATURE) or data.startswith(J2K_CODESTREAM):
        return "jpeg2000"
    if data.startswith(JPEG):
        return "jpeg"
    if data.startswith(PNG):
        return "png"
    return None


def face_image(bdb: bytes) -> FaceImage:
    """The first face image of a BDB: an ISO 19794-5 record or a bare image.

    Raises ``MosipFailure`` 16 (invalid CBEFF format) for bytes that are neither, or a record
    whose lengths do not fit its bytes.
    """
    if bdb.startswith(b"FAC\x00"):
        return _record(bdb)
    kind = sniff(bdb)
    if kind is None:
        raise MosipFailure(Failure.INVALID_CBEFF_FORMAT, "the face BDB is neither an ISO/IEC 19794-5 record nor an image")
    return FaceImage(bdb, kind)


class _Reader:
    def __init__(self, data: bytes, start: int, end: int) -> None:
        self.data, self.pos, self.end = data, start, end

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise MosipFailure(Failure.INVALID_CBEFF_FORMAT, "the ISO/IEC 19794-5 face record is truncated")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])


def _record(bdb: bytes) -> FaceImage:
    version = bdb[4:8]
    head = _Reader(bdb, 8, len(bdb))
    length = head.u32()
    if length > len(bdb) or length < 14:
        raise MosipFailure(Failure.INVALID_CBEFF_FORMAT, f"the face record says {length} bytes, the BDB has {len(bdb)}")
    count = head.u16()
    if count < 1:
        raise MosipFailure(Failure.INVALID_CBEFF_FORMAT, "the face record holds no face image")
    if version == b"030\x00":
        head = _Reader(bdb, head.pos, length)
        head.take(3)  # certification flag, temporal semantics
        rep_len = head.u32()
        r = _Reader(bdb, head.pos, head.pos - 4 + rep_len if rep_len >= 4 else -1)
        if r.end > length or r.end < r.pos:
            raise MosipFailure(Failure.INVALID_CBEFF_FORMAT, "the face representation's length does not fit the record")
        r.take(9 + 1 + 2 + 2)  # capture time, device technology, vendor, type
        r.take(5 * r.u8())  # quality blocks
        landmarks = r.u16()
        r.take(4 + 3 + 2 + 6)  # gender .. height, property mask, expression, pose + uncertainty
        r.take(8 * landmarks)
        r.take(1)  # face image type
        data_type = r.u8()
        width, height = r.u16(), r.u16()
        r.take(1 + 2 + 1 + 1)  # spatial sampling, post-processing, cross reference, colour space
        image = r.take(r.u32())
    elif version == b"010\x00":
        head = _Reader(bdb, 14, length)
        block = head.u32()
        r = _Reader(bdb, head.pos, 14 + block)
        if r.end > length or block < 32:
            raise MosipFailure(Failure.INVALID_CBEFF_FORMAT, "the face block's length does not fit the record")
        landmarks = r.u16()
        r.take(3 + 3 + 2 + 6)
        r.take(8 * landmarks)
        r.take(1)
        data_type = r.u8()
        width, height = r.u16(), r.u16()
        r.take(1 + 1 + 2 + 2)  # colour space, source type, device type, quality
        image = r.take(r.end - r.pos)
    else:
        raise MosipFailure(Failure.INVALID_CBEFF_FORMAT, f"face record version {version!r} is not 010 or 030")
    kind = sniff(image)
    if kind is None:
        raise MosipFailure(Failure.INVALID_CBEFF_FORMAT, f"the face record's image (data type {data_type}) is not JPEG, JPEG2000 or PNG")
    return FaceImage(image, kind, width, height)


def build_record(image: bytes, width: int, height: int, data_type: int = 2) -> bytes:
    """An ISO/IEC 19794-5:2011 record around one image (for test data and benchmarks).

    One representation, one quality block, no landmarks, as MOSIP's mock SBI writes them.
    """
    rep = bytearray()
    rep += b"\x07\xe3\x0a\x1d\x0e\x26\x0f\x00\x0f"  # capture date-time (2019-10-29 14:38:15)
    rep += bytes([0]) + b"\x00\x00" + b"\x00\x00"  # device technology, vendor, type
    rep += bytes([1]) + b"\x00\x00\x00\x00\x00"  # one quality block
    rep += struct.pack(">H", 0)  # landmarks
    rep += bytes(4 + 3 + 2 + 6)
    rep += bytes([1, data_type]) + struct.pack(">HH", width, height)
    rep += bytes([0]) + b"\x00\x01" + bytes([0, 0])
    rep += struct.pack(">I", len(image)) + image
    rep_block = struct.pack(">I", len(rep) + 4) + bytes(rep)
    total = 17 + len(rep_block)
    return b"FAC\x00030\x00" + struct.pack(">IHBH", total, 1, 0, 0) + rep_block
