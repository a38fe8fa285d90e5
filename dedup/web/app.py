"""The FastAPI application: adjudicators' pages, supervisors' pages and the centres' JSON API.

``create_app(deployment)`` builds it; ``dedup serve`` runs it with uvicorn on 127.0.0.1 by
default. Every request gets its own database connection. Rules kept here for every route:

- pages need a session (401 without one), API routes a centre token (401 without one);
- a role check (403) and, on every form post, the session's CSRF token (403 when missing);
- domain errors become a status and a one-line message (400/403/404/409/503), any other
  error a bare 500: no traceback, no request data, no photo in a page or a log line;
- every response carries ``Cache-Control: no-store`` and a strict Content-Security-Policy.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import psycopg
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature, URLSafeTimedSerializer

from dedup.deployment import Deployment
from dedup.errors import (BadInput, ConfigError, Conflict, DedupError, InvalidParameter, NotFound, PermissionDenied,
                          StoreError, Unauthenticated)
from dedup.web.images import CropMaker
from dedup.web.scoring import ScoreMeaning, meaning_function

log = logging.getLogger("dedup.web")

HERE = Path(__file__).parent
SESSION_COOKIE = "dedup_session"
LOGIN_COOKIE = "dedup_login"
KEY_FILE = "web-secret.key"

STATUS: dict[type[DedupError], int] = {
    Unauthenticated: 401, PermissionDenied: 403, NotFound: 404, Conflict: 409, InvalidParameter: 400, BadInput: 400,
    ConfigError: 400, StoreError: 503,
}
ERROR_CODES = {401: "unauthenticated", 403: "forbidden", 404: "not_found", 409: "conflict", 400: "bad_request",
               413: "too_large", 503: "unavailable", 500: "internal_error"}

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": ("default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
}


@dataclass
class WebContext:
    """What every request needs: the deployment, the cookie signer, the crop maker, score words."""

    dep: Deployment
    signer: URLSafeTimedSerializer
    crops: CropMaker
    meaning: Callable[[float], ScoreMeaning]
    templates: Jinja2Templates

    @property
    def photos(self) -> Path:
        return self.dep.store / "photos"


def secret_key(home: Path) -> bytes:
    """The deployment's cookie-signing key (``DIR/web-secret.key``, 0600), created on first use."""
    import os

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
    from dedup.web import api, pages

    app = FastAPI(**api.API_META, docs_url=None, redoc_url=None, openapi_url=api.OPENAPI_PATH)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
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


def context(request: Request) -> WebContext:
    """The app's WebContext."""
    ctx: WebContext = request.app.state.web
    return ctx


def db(request: Request) -> Iterator[psycopg.Connection[Any]]:
    """A database connection for one request."""
    conn = context(request).dep.database.connect()
    try:
        yield conn
    finally:
        conn.close()


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def error_response(request: Request, status: int, message: str) -> Response:
    """JSON for the API, a small page for the rest (the login form for 401 on a page)."""
    if is_api(request):
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"error": ERROR_CODES.get(status, "error"), "message": message}, status_code=status, headers=headers)
    from dedup.web.pages import login_page, render

    if status == 401:
        return login_page(request, message, status=401,
                          next_path=request.url.path if request.method == "GET" else "/")
    return render(request, "error.html", {"status": status, "message": message, "user": None}, status=status)


def read_session_cookie(request: Request) -> str:
    """The session id from the signed cookie; Unauthenticated when absent, forged or too old."""
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        raise Unauthenticated("please log in")
    ctx = context(request)
    try:
        value = ctx.signer.loads(raw, max_age=ctx.dep.settings.web.session_seconds, salt="session")
    except BadSignature:
        raise Unauthenticated("your session is not valid any more; please log in again") from None
    if not isinstance(value, str):
        raise Unauthenticated("please log in")
    return value
