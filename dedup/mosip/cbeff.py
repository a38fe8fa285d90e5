"""The face BDBs of a MOSIP CBEFF document (ISO/IEC 19785-3 patron format, XML).

MOSIP 1.2 writes the ISO namespace ``http://standards.iso.org/iso-iec/19785/-3/ed-2/``,
older packets the OASIS one ``http://docs.oasis-open.org/bias/ns/biaspatronformat-1.0/``
(registration ``quality-classifier-stage/src/test/resources/CBEFF1.xml``). The root ``BIR``
holds one child ``BIR`` per segment; a face one has ``BDBInfo/Type`` ``Face`` and its image
record, base64 (URL-safe or standard), in ``BDB``. Segments marked as exceptions
(``others/entry[@key="EXCEPTION"]`` true) are skipped (mosip-config ``mosip-cbeff.xsd``,
documentation ``docs/biometrics/cbeff-xml.md``). Elements are matched by local name, so
both namespaces (and none) read the same.
"""

from __future__ import annotations

import base64
import binascii
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from dedup.errors import MosipFailure
from dedup.mosip.codes import Failure

ISO_NAMESPACE = "http://standards.iso.org/iso-iec/19785/-3/ed-2/"
OASIS_NAMESPACE = "http://docs.oasis-open.org/bias/ns/biaspatronformat-1.0/"
_DOCTYPE = re.compile(rb"<!(DOCTYPE|ENTITY)", re.IGNORECASE)


@dataclass(frozen=True)
class FaceSegment:
    """One face BIR: its decoded BDB and what BDBInfo says."""

    index: int  # position among the document's BIRs, for messages
    bdb: bytes
    quality: float | None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(el: ET.Element, name: str) -> ET.Element | None:
    for c in el:
        if _local(c.tag) == name:
            return c
    return None


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if _local(c.tag) == name]


def decode_base64(text: str) -> bytes:
    """URL-safe or standard base64, with or without padding and line breaks."""
    s = re.sub(r"\s+", "", text)
    s = s.replace("-", "+").replace("_", "/")
    s += "=" * (-len(s) % 4)
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise MosipFailure(Failure.INVALID_CBEFF_FORMAT, "a BDB is not base64") from None


def face_segments(document: bytes) -> list[FaceSegment]:
    """Every non-exception face segment with data, in document order.

    Raises ``MosipFailure`` 16 when the bytes are not a CBEFF document and 11 when it holds
    no face data.
    """
    text = document.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text:
        raise MosipFailure(Failure.CBEFF_NO_DATA, "the CBEFF document is empty")
    if _DOCTYPE.search(text[:4096]) or b"<!ENTITY" in text:
        raise MosipFailure(Failure.INVALID_CBEFF_FORMAT, "the CBEFF document declares a DTD or entities")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise MosipFailure(Failure.INVALID_CBEFF_FORMAT, f"the CBEFF document is not XML ({exc})") from None
    if _local(root.tag) != "BIR":
        raise MosipFailure(Failure.INVALID_CBEFF_FORMAT, f"the CBEFF root element is {_local(root.tag)!r}, not BIR")
    namespace = root.tag[1:].split("}")[0] if root.tag.startswith("{") else ""
    if namespace not in ("", ISO_NAMESPACE, OASIS_NAMESPACE):
        raise MosipFailure(Failure.INVALID_CBEFF_FORMAT, f"unknown CBEFF namespace {namespace!r}")
    birs = _children(root, "BIR") or [root]
    out: list[FaceSegment] = []
    for i, bir in enumerate(birs):
        info = _child(bir, "BDBInfo")
        if info is None:
            continue
        kind = _child(info, "Type")
        types = (kind.text or "").split() if kind is not None else []
        if not any(t.lower() == "face" for t in types):
            continue
        if _is_exception(bir):
            continue
        bdb = _child(bir, "BDB")
        if bdb is None or not (bdb.text or "").strip():
            continue
        data = decode_base64(bdb.text or "")
        if data:
            out.append(FaceSegment(i, data, _quality(info)))
    if not out:
        raise MosipFailure(Failure.CBEFF_NO_DATA, "the CBEFF document holds no face image")
    return out


def _is_exception(bir: ET.Element) -> bool:
    others = _child(bir, "others")
    if others is None:
        return False
    for entry in _children(others, "entry"):
        if (entry.get("key") or "").upper() == "EXCEPTION":
            return (entry.text or "").strip().lower() == "true"
    return False


def _quality(info: ET.Element) -> float | None:
    q = _child(info, "Quality")
    score = _child(q, "Score") if q is not None else None
    try:
        return float((score.text or "").strip()) if score is not None else None
    except ValueError:
        return None


def build_document(faces: list[bytes], exceptions: tuple[int, ...] = (), namespace: str = ISO_NAMESPACE,
                   extra_segments: tuple[str, ...] = ("Finger", "Iris")) -> bytes:
    """A CBEFF document as MOSIP builds them (for test data and benchmarks).

    ``faces`` are ISO 19794-5 records; other modalities get placeholder BIRs; indices in
    ``exceptions`` are marked as exception faces.
    """
    ns = namespace
    parts = [f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<BIR xmlns="{ns}">',
             "<BIRInfo><Integrity>false</Integrity></BIRInfo>"]
    segments = [("Face", base64.urlsafe_b64encode(f).decode().rstrip("="), i in exceptions) for i, f in enumerate(faces)]
    segments += [(kind, base64.urlsafe_b64encode(b"placeholder").decode(), False) for kind in extra_segments]
    for n, (kind, bdb, exc) in enumerate(segments):
        fmt_type = {"Face": 8, "Finger": 7, "Iris": 9}.get(kind, 0)
        parts.append(
            "<BIR><Version><Major>1</Major><Minor>1</Minor></Version>"
            "<CBEFFVersion><Major>1</Major><Minor>1</Minor></CBEFFVersion>"
            "<BIRInfo><Integrity>false</Integrity></BIRInfo>"
            f"<BDBInfo><Index>segment-{n}</Index><Format><Organization>Mosip</Organization><Type>{fmt_type}</Type></Format>"
            "<CreationDate>2022-07-27T15:29:22.988805100Z</CreationDate>"
            f"<Type>{kind}</Type><Subtype></Subtype><Level>Raw</Level><Purpose>Enroll</Purpose>"
            "<Quality><Algorithm><Organization>HMAC</Organization><Type>SHA-256</Type></Algorithm><Score>90</Score></Quality>"
            f"</BDBInfo><BDB>{bdb}</BDB>"
            f'<others><entry key="EXCEPTION">{"true" if exc else "false"}</entry><entry key="SDK_SCORE">0.0</entry></others>'
            "</BIR>")
    parts.append("</BIR>")
    return "".join(parts).encode("utf-8")
