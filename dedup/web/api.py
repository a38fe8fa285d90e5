"""The centres' JSON API: submit a batch, read its receipt, read outcomes.

Authentication is the centre's API token (``Authorization: Bearer dk_...``); a token acts as
one centre user, so it submits for and reads its own centre only. A batch comes either as the
Parquet manifest itself (photos inside it as bytes) or as ``multipart/form-data`` with a
``manifest`` part and one ``photos`` part per photo, each part's filename being the path the
manifest names. Uploads are streamed into a private folder inside the deployment's store
(never the system's temporary folder), submitted exactly like ``dedup submit``, and deleted.
The schema of these routes is committed as ``schemas/openapi.json``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from pydantic import BaseModel, Field
from python_multipart.multipart import MultipartParser
from starlette.concurrency import run_in_threadpool

from dedup.errors import BadInput, DedupError
from dedup.ingest.submit import submit_batch
from dedup.store import audit, batches
from dedup.store.batches import BatchOutcomes, EnrolmentOutcomes, Receipt
from dedup.store.users import Actor, authorize
from dedup.web.deps import Centre, Conn, Ctx, WebContext
from dedup.web.limits import timed_chunks

OPENAPI_PATH = "/api/v1/openapi.json"
router = APIRouter(prefix="/api/v1", tags=["centres"])

API_META: dict[str, Any] = {
    "title": "dedup centre API",
    "version": "1",
    "description": ("Enrolment centres submit batches and read receipts and outcomes. Authenticate with the centre's "
                    "API token: `Authorization: Bearer dk_...` (an admin creates one with `dedup token create CENTRE`). "
                    "A token reaches its own centre's batches only."),
}

UPLOADS_DIR = "uploads"
_PART_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,127}$")


class TooLarge(DedupError):
    """The upload is over ``web.max_upload_bytes`` (HTTP 413)."""

    exit_code = 2
    http_status = 413


# ---------------------------------------------------------------- response models
# Receipts and outcomes are the store's dataclasses (dedup.store.batches); only the error body is the API's own.


class ErrorBody(BaseModel):
    """Every error: a stable code and a sentence for people."""

    error: str = Field(description="unauthenticated, forbidden, not_found, conflict, bad_request, timeout, too_large, "
                                   "too_many_requests, unavailable or internal_error")
    message: str


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "no token, or an unknown or revoked one"},
    404: {"model": ErrorBody, "description": "no such batch or enrolment at this centre (another centre's answers the same)"},
}

_UPLOAD_BODY = {
    "required": True,
    "content": {
        "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["manifest"],
                "properties": {
                    "manifest": {"type": "string", "format": "binary", "description": "the Parquet manifest"},
                    "photos": {"type": "array", "items": {"type": "string", "format": "binary"},
                               "description": "the photos; each part's filename is the path the manifest names"},
                },
            }
        },
    },
}


# ---------------------------------------------------------------- routes


@router.post("/batches", status_code=201, response_model=Receipt, operation_id="submit_batch",
             summary="Submit a batch (Parquet manifest, or multipart manifest + photos)",
             responses={200: {"model": Receipt, "description": "this manifest was already received: its stored receipt"},
                        400: {"model": ErrorBody, "description": "not a Parquet manifest, wrong schema, bad upload"},
                        401: ERRORS[401],
                        403: {"model": ErrorBody, "description": "this manifest was already received from another centre"},
                        408: {"model": ErrorBody, "description": "the body came too slowly (web.body_idle_timeout, web.body_timeout)"},
                        413: {"model": ErrorBody, "description": "over the upload limit"},
                        429: {"model": ErrorBody, "description": "this centre already has web.uploads_per_token uploads in progress"}},
             openapi_extra={"requestBody": _UPLOAD_BODY})
async def submit(request: Request, response: Response, ctx: Ctx, actor: Centre) -> Receipt:
    """Validate every row, keep the good ones, return the receipt (201; 200 when already received)."""
    authorize(actor, "batch.submit")
    with ctx.uploads.slot(actor.name):  # no database connection is held while the body streams in
        folder = _upload_folder(ctx.dep.store)
        try:
            manifest = await _receive(request, folder, ctx.dep.settings.web.max_upload_bytes, ctx.dep.settings.store.max_photo_bytes)
            receipt, new = await run_in_threadpool(_submit, ctx, actor, manifest)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    response.status_code = 201 if new else 200
    return receipt


def _submit(ctx: WebContext, actor: Actor, manifest: Path) -> tuple[Receipt, bool]:
    with ctx.connection() as conn:
        return submit_batch(ctx.dep, conn, actor, manifest)


@router.get("/batches/{batch_id}", response_model=Receipt, operation_id="get_receipt", summary="A batch's receipt",
            responses=ERRORS)
def get_receipt(batch_id: str, conn: Conn, actor: Centre) -> Receipt:
    authorize(actor, "batch.report")
    receipt = batches.get_receipt(conn, batch_id)
    batches.check_batch_readable(conn, actor, None if receipt is None else receipt.centre_id, batch_id, receipt is not None)
    assert receipt is not None
    with conn.transaction():
        audit.record(conn, actor.name, "batch.receipt", "batch", batch_id, {"via": "api"})
    return receipt


@router.get("/batches/{batch_id}/outcomes", response_model=BatchOutcomes, operation_id="get_batch_outcomes",
            summary="Every row of a batch with its current state", responses=ERRORS)
def batch_outcomes(batch_id: str, conn: Conn, actor: Centre) -> BatchOutcomes:
    return BatchOutcomes(batch_id, batches.batch_report(conn, actor, batch_id))


@router.get("/enrolments/{enrolment_id}", response_model=EnrolmentOutcomes, operation_id="get_enrolment_outcome",
            summary="An enrolment's current state (the centre's own enrolments)",
            responses={401: ERRORS[401], 404: {"model": ErrorBody, "description": "no such enrolment at this centre"}})
def enrolment_outcome(enrolment_id: str, conn: Conn, actor: Centre) -> EnrolmentOutcomes:
    return EnrolmentOutcomes(enrolment_id, batches.enrolment_status(conn, actor, enrolment_id, actor.centre_id))


# ---------------------------------------------------------------- receiving uploads


def _upload_folder(store: Path) -> Path:
    """A fresh private folder for one upload, inside the deployment's store."""
    root = store / UPLOADS_DIR
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder = root / f"up-{secrets.token_hex(8)}"
    folder.mkdir(mode=0o700)
    return folder


async def _receive(request: Request, folder: Path, max_total: int, max_photo: int) -> Path:
    """Stream the request body into ``folder``; return the manifest's path."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_total:
        raise TooLarge(f"the upload is {declared} bytes; the limit is {max_total} (web.max_upload_bytes)")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("application/vnd.apache.parquet", "application/octet-stream", "application/x-parquet"):
        path = folder / "manifest.parquet"
        total = 0
        with _private_file(path) as f:
            async for chunk in _body(request):
                total += len(chunk)
                if total > max_total:
                    raise TooLarge(f"the upload is over the limit of {max_total} bytes (web.max_upload_bytes)")
                f.write(chunk)
        if total == 0:
            raise BadInput("the request body is empty; send the Parquet manifest")
        return path
    if kind == "multipart/form-data":
        return await _receive_multipart(request, folder, max_total, max_photo)
    raise BadInput("send the manifest as application/vnd.apache.parquet, or multipart/form-data with 'manifest' and 'photos' parts")


class _PartWriter:
    """Writes the parts of a multipart body as files under the upload folder."""

    def __init__(self, folder: Path, max_photo: int) -> None:
        self.folder = folder
        self.max_photo = max_photo
        self.manifest: Path | None = None
        self.headers: dict[str, str] = {}
        self._field = b""
        self._value = b""
        self._file: Any = None
        self._size = 0
        self._limit = 0
        self.error: DedupError | None = None

    # python-multipart callbacks
    def on_part_begin(self) -> None:
        self.headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self._field.decode("latin-1").lower()] = self._value.decode("utf-8", "replace")
        self._field, self._value = b"", b""

    def on_headers_finished(self) -> None:
        name, filename = _disposition(self.headers.get("content-disposition", ""))
        if name == "manifest":
            target = self.folder / "manifest.parquet"
            if self.manifest is not None:
                raise BadInput("the upload has two 'manifest' parts")
            self.manifest = target
            self._limit = 1 << 62
        elif name == "photos":
            target = self.folder / _photo_path(filename)
            self._limit = self.max_photo
        else:
            raise BadInput(f"unexpected form part {name[:40]!r}; send 'manifest' and 'photos'")
        if target.exists():
            raise BadInput(f"two parts are named {target.relative_to(self.folder)}")
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._file = open(target, "xb")  # noqa: SIM115 - closed in on_part_end / close()
        os.chmod(target, 0o600)
        self._size = 0

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        if self._size > self._limit:
            raise BadInput(f"a photo part is over {self.max_photo} bytes (store.max_photo_bytes)")
        self._file.write(data[start:end])

    def on_part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        self.on_part_end()


async def _receive_multipart(request: Request, folder: Path, max_total: int, max_photo: int) -> Path:
    ctype = request.headers.get("content-type", "")
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    if not m:
        raise BadInput("multipart/form-data without a boundary")
    writer = _PartWriter(folder, max_photo)
    callbacks = {name: getattr(writer, name) for name in
                 ("on_part_begin", "on_header_field", "on_header_value", "on_header_end", "on_headers_finished",
                  "on_part_data", "on_part_end")}
    parser = MultipartParser(m.group(1), callbacks)  # type: ignore[arg-type]
    total = 0
    try:
        async for chunk in _body(request):
            total += len(chunk)
            if total > max_total:
                raise TooLarge(f"the upload is over the limit of {max_total} bytes (web.max_upload_bytes)")
            try:
                parser.write(chunk)
            except DedupError:
                raise
            except Exception as exc:  # noqa: BLE001 - python-multipart's parse errors have no common base
                raise BadInput(f"malformed multipart body ({type(exc).__name__})") from None
        parser.finalize()
    finally:
        writer.close()
    if writer.manifest is None:
        raise BadInput("the upload has no 'manifest' part")
    return writer.manifest


def _body(request: Request) -> Any:
    """The request body's chunks, cut off after ``web.body_idle_timeout`` of silence or ``web.body_timeout`` in all."""
    web = request.app.state.web.dep.settings.web
    return timed_chunks(request.stream(), web.body_idle_timeout, web.body_timeout)


def _disposition(header: str) -> tuple[str, str]:
    """(name, filename) from a Content-Disposition header."""
    def param(key: str) -> str:
        m = re.search(rf'{key}="([^"]*)"', header) or re.search(rf"{key}=([^;\s]+)", header)
        return m.group(1) if m else ""

    return param("name"), param("filename")


def _photo_path(filename: str) -> PurePosixPath:
    """A photo part's filename as a safe relative path (the manifest's path for it)."""
    rel = PurePosixPath(filename.replace("\\", "/"))
    if not filename or rel.is_absolute() or not rel.parts or not all(_PART_NAME.match(p) and p not in (".", "..") for p in rel.parts):
        raise BadInput(f"photo part filename {filename[:80]!r} must be a relative path of plain names (the path in the manifest)")
    if rel.name == "manifest.parquet" and len(rel.parts) == 1:
        raise BadInput("a photo cannot be named manifest.parquet")
    return rel


class _private_file:
    """Open a new file 0600 for writing (a context manager)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Any:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.f = os.fdopen(fd, "wb")
        return self.f

    def __exit__(self, *exc: Any) -> None:
        self.f.close()


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI document, as the running app serves it at ``OPENAPI_PATH``."""
    app = FastAPI(**API_META, docs_url=None, redoc_url=None, openapi_url=OPENAPI_PATH)
    app.include_router(router)
    return app.openapi()
