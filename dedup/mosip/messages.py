"""MOSIP ABIS requests and responses: parse, validate in MOSIP's order, build answers.

Facts (MOSIP documentation@1.2.0 ``docs/biometrics/abis-api.md``; registration
``registration-processor-core/.../dto/abis/*.java``):

- one JSON object per message; ``id`` names the operation (``mosip.abis.insert`` ...);
- MOSIP's own DTO sends the version as ``ver`` (``AbisCommonRequestDto``), the spec and the
  testing kit as ``version``: both are read; MOSIP sends ``"1.1"``;
- ``requesttime``/``responsetime`` are UTC ``yyyy-MM-dd'T'HH:mm:ss.SSS'Z'``;
- IDENTIFY's reference URL is ``referenceUrl`` in MOSIP's DTO and ``referenceURL`` in the
  spec: any spelling is read;
- every value of a response is a string, and ``requestId`` is the only correlation key.

Checks run in the order of mosip-mock-services ``Listener.getFailureReason``: id (14),
version (13), requestId (6), requesttime missing (9), its format (15), referenceId (5),
INSERT's referenceURL (8), then the request's structure (4).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dedup.errors import MosipFailure
from dedup.mosip.codes import RETURN_FAILED, RETURN_SUCCESS, Failure

INSERT = "mosip.abis.insert"
IDENTIFY = "mosip.abis.identify"
DELETE = "mosip.abis.delete"
PING = "mosip.abis.ping"
PENDING_JOBS = "mosip.abis.pendingJobs"
REFERENCE_COUNT = "mosip.abis.referenceCount"
OPERATIONS = (INSERT, IDENTIFY, DELETE, PING, PENDING_JOBS, REFERENCE_COUNT)
VERSIONS = ("1.1",)
MAX_ID_LENGTH = 256

_COMMON_KEYS = {"id", "ver", "version", "requestid", "requesttime"}
_KEYS = {
    INSERT: {"referenceid", "referenceurl"},
    IDENTIFY: {"referenceid", "referenceurl", "flags", "gallery"},
    DELETE: {"referenceid"},
    PING: set(),
    PENDING_JOBS: set(),
    REFERENCE_COUNT: set(),
}
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@dataclass(frozen=True)
class Request:
    """A valid request (what the operation needs of it)."""

    op: str
    request_id: str
    requesttime: str
    reference_id: str | None = None
    reference_url: str | None = None
    max_results: int | None = None
    target_fpir: float | None = None
    gallery: tuple[str, ...] | None = None  # IDENTIFY restricted to these referenceIds
    flags: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Parsed:
    """A message read: what to echo, and the request or the reason it failed."""

    echo_id: str
    request_id: str
    request: Request | None
    failure: MosipFailure | None


def utc_time(now: datetime | None = None) -> str:
    """``responsetime`` in MOSIP's pattern: ``2020-03-29T07:01:24.692Z``."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def parse(body: bytes | str) -> Parsed:
    """Read one message body; never raises (a bad message gives a ``failure``)."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        doc = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        return Parsed("", "", None, MosipFailure(Failure.INVALID_STRUCTURE, "the message is not a JSON document"))
    if not isinstance(doc, dict):
        return Parsed("", "", None, MosipFailure(Failure.INVALID_STRUCTURE, "the message is not a JSON object"))
    op = doc.get("id")
    echo_id = op if isinstance(op, str) else ""
    rid = doc.get("requestId")
    request_id = rid if isinstance(rid, str) else ""
    try:
        return Parsed(echo_id, request_id, _validate(doc), None)
    except MosipFailure as exc:
        return Parsed(echo_id, request_id, None, exc)


def _lower_keys(doc: dict[str, Any]) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in doc.items()}


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _validate(doc: dict[str, Any]) -> Request:
    keys = _lower_keys(doc)
    op = doc.get("id")
    if op not in OPERATIONS:
        raise MosipFailure(Failure.INVALID_ID, f"id {op!r} is not an ABIS operation")
    version = doc.get("ver", doc.get("version"))
    if version not in VERSIONS:
        raise MosipFailure(Failure.INVALID_VERSION, f"version {version!r} is not supported (supported: {', '.join(VERSIONS)})")
    request_id = doc.get("requestId")
    if _blank(request_id) or not isinstance(request_id, str):
        raise MosipFailure(Failure.MISSING_REQUEST_ID, "requestId is missing")
    if len(request_id) > MAX_ID_LENGTH:
        raise MosipFailure(Failure.INVALID_STRUCTURE, f"requestId is longer than {MAX_ID_LENGTH} characters")
    requesttime = doc.get("requesttime")
    if _blank(requesttime):
        raise MosipFailure(Failure.MISSING_REQUESTTIME, "requesttime is missing")
    if not isinstance(requesttime, str) or not _valid_time(requesttime):
        raise MosipFailure(Failure.INVALID_REQUESTTIME_FORMAT, "requesttime is not yyyy-MM-dd'T'HH:mm:ss.SSS'Z'")
    reference_id = keys.get("referenceid")
    reference_url = keys.get("referenceurl")
    if op in (INSERT, DELETE) and _blank(reference_id):
        raise MosipFailure(Failure.MISSING_REFERENCE_ID, "referenceId is missing")
    if op == IDENTIFY and _blank(reference_id) and _blank(reference_url):
        raise MosipFailure(Failure.MISSING_REFERENCE_ID, "referenceId and referenceURL are both missing")
    if op == INSERT and _blank(reference_url):
        raise MosipFailure(Failure.MISSING_REFERENCE_URL, "referenceURL is missing")
    unknown = sorted(set(keys) - _COMMON_KEYS - _KEYS[op])
    if unknown:
        raise MosipFailure(Failure.INVALID_STRUCTURE, f"unknown key {unknown[0]!r} in a {op} request")
    for name, value in (("referenceId", reference_id), ("referenceURL", reference_url)):
        if not _blank(value) and (not isinstance(value, str) or len(value) > (MAX_ID_LENGTH if name == "referenceId" else 4096)):
            raise MosipFailure(Failure.INVALID_STRUCTURE, f"{name} must be a string")
    flags = keys.get("flags")
    if flags is not None and not isinstance(flags, dict):
        raise MosipFailure(Failure.INVALID_STRUCTURE, "flags must be an object")
    flags = flags or {}
    max_results = _positive_int(flags.get("maxResults"), "flags.maxResults")
    target = _number(flags.get("targetFPIR"), "flags.targetFPIR")
    gallery = _gallery(keys.get("gallery")) if op == IDENTIFY else None
    return Request(op, request_id, requesttime,
                   None if _blank(reference_id) else str(reference_id).strip(),
                   None if _blank(reference_url) else str(reference_url).strip(),
                   max_results, target, gallery, dict(flags))


def _valid_time(text: str) -> bool:
    if not _TIME.match(text):
        return False
    try:
        datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return False
    return True


def _positive_int(value: Any, name: str) -> int | None:
    if _blank(value):
        return None
    try:
        n = int(str(value).strip())
    except ValueError:
        raise MosipFailure(Failure.INVALID_STRUCTURE, f"{name} must be a whole number") from None
    if n < 1:
        raise MosipFailure(Failure.INVALID_STRUCTURE, f"{name} must be at least 1")
    return n


def _number(value: Any, name: str) -> float | None:
    if _blank(value):
        return None
    try:
        x = float(str(value).strip())
    except ValueError:
        raise MosipFailure(Failure.INVALID_STRUCTURE, f"{name} must be a number") from None
    if not 0 < x < 200:  # FPIR = 10^(-t/10): t in (0, 200) covers 1 .. 1e-20
        raise MosipFailure(Failure.INVALID_STRUCTURE, f"{name} must be between 0 and 200")
    return x


def _gallery(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise MosipFailure(Failure.INVALID_STRUCTURE, "gallery must be an object")
    ids = _lower_keys(value).get("referenceids")
    if ids is None:
        return None
    if not isinstance(ids, list):
        raise MosipFailure(Failure.INVALID_STRUCTURE, "gallery.referenceIds must be a list")
    out: list[str] = []
    for item in ids:
        ref = _lower_keys(item).get("referenceid") if isinstance(item, dict) else item
        if _blank(ref) or not isinstance(ref, str):
            raise MosipFailure(Failure.INVALID_STRUCTURE, "gallery.referenceIds holds an entry without a referenceId")
        out.append(ref.strip())
    return tuple(dict.fromkeys(out))


# ---------------------------------------------------------------------------- responses

def success(echo_id: str, request_id: str, **extra: Any) -> dict[str, Any]:
    """A ``returnValue "1"`` response; ``extra`` adds operation fields (already strings)."""
    return {"id": echo_id, "requestId": request_id, "responsetime": utc_time(), "returnValue": RETURN_SUCCESS, **extra}


def failure(echo_id: str, request_id: str, code: int) -> dict[str, Any]:
    """A ``returnValue "2"`` response with its failure reason."""
    return {"id": echo_id, "requestId": request_id, "responsetime": utc_time(), "returnValue": RETURN_FAILED,
            "failureReason": str(int(code))}


def encode(response: dict[str, Any]) -> str:
    """The JSON text sent on the outbound queue."""
    return json.dumps(response, separators=(",", ":"), ensure_ascii=False)
