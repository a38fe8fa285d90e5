"""The FastAPI application: adjudicators' pages, supervisors' pages and the centres' JSON API.

``create_app(deployment)`` builds it; ``dedup serve`` runs it with uvicorn on 127.0.0.1 by
default. Every request gets its own database connection (``deps``). Rules kept here for every route:

- pages need a session (401 without one), API routes a centre token (401 without one);
- a role check (403) and, on every form post, the session's CSRF token (403 when missing);
- domain errors become a status and a one-line message (400/403/404/409/503), any other
  error a bare 500: no traceback, no request data, no photo in a page or a log line;
- every response carries ``Cache-Control: no-store`` and a strict Content-Security-Policy.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from itsdangerous import URLSafeTimedSerializer

from dedup.bidi import for_display
from dedup.deployment import Deployment
from dedup.errors import (
    BadInput,
    ConfigError,
    Conflict,
    DedupError,
    InvalidParameter,
    NotFound,
    PermissionDenied,
    StoreError,
    Unauthenticated,
)
from dedup.web import api, pages
from dedup.web.deps import WebContext
from dedup.web.images import CropMaker
from dedup.web.scoring import meaning_function
from dedup.web.views import error_response

log = logging.getLogger("dedup.web")

HERE = Path(__file__).parent
KEY_FILE = "web-secret.key"

STATUS: dict[type[DedupError], int] = {
    Unauthenticated: 401, PermissionDenied: 403, NotFound: 404, Conflict: 409, InvalidParameter: 400, BadInput: 400,
    ConfigError: 400, StoreError: 503,
}

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": ("default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
}


def secret_key(home: Path) -> bytes:
    """The deployment's cookie-signing key (``DIR/web-secret.key``, 0600), created on first use."""
    path = Path(home) / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes().strip()
        if len(key) < 32:
            raise StoreError(f"{path} is too short to be a signing key; delete it and restart (every login ends)") from None
        return key
    key = secrets.token_hex(32).encode()
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    return key


def create_app(dep: Deployment) -> FastAPI:
    """The web app and API of a deployment."""
    app = FastAPI(**api.API_META, docs_url=None, redoc_url=None, openapi_url=api.OPENAPI_PATH)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.finalize = for_display  # bidirectional overrides in shown text are written out (dedup.bidi)
    app.state.web = WebContext(dep, URLSafeTimedSerializer(secret_key(dep.home), salt="dedup-web"), CropMaker(dep.settings.face),
                               meaning_function(dep.home, dep.settings), templates)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.exception_handler(DedupError)
    async def domain_error(request: Request, exc: DedupError) -> Response:
        status = getattr(exc, "http_status", None) or next((code for cls, code in STATUS.items() if isinstance(exc, cls)), 400)
        return error_response(request, status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        fields = sorted({".".join(str(p) for p in e.get("loc", ())[1:]) for e in exc.errors()})
        return error_response(request, 400, "invalid request: check " + (", ".join(f for f in fields if f) or "the parameters"))

    @app.exception_handler(psycopg.Error)
    async def database_error(request: Request, exc: psycopg.Error) -> Response:
        log.error("database error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        return error_response(request, 503, "the database is not available; try again shortly")

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        try:
            response = await call_next(request)
        except Exception as exc:  # noqa: BLE001 - a bare 500, and no traceback with request data in the log
            log.error("internal error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
            response = error_response(request, 500, "internal error; the operator's log has the time of it")
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return app

