"""The FastAPI application: adjudicators' pages, supervisors' pages and the centres' JSON API.

``create_app(deployment)`` builds it; ``dedup serve`` runs it with uvicorn on 127.0.0.1 by
default. Requests borrow connections from one pool of ``web.db_pool_size`` (``deps``); a
failing client address is slowed, then refused (``limits.LoginThrottle``), and at most
``web.login_concurrency`` password checks run at once. Rules kept here for every route:

- pages need a session (401 without one), API routes a centre token (401 without one);
- a role check (403) and, on every form post, the session's CSRF token (403 when missing);
- domain errors become a status and a one-line message (400/403/404/408/409/429/503), any
  other error a bare 500: no traceback, no request data, no photo in a page or a log line,
  no path of the server and no database address in a message;
- every response carries ``Cache-Control: no-store`` and a strict Content-Security-Policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import psycopg
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from itsdangerous import URLSafeTimedSerializer
from psycopg_pool import PoolTimeout

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
    Throttled,
    Unauthenticated,
)
from dedup.web import accuracy, api, pages
from dedup.web.deps import WebContext
from dedup.web.images import CropMaker
from dedup.web.limits import LoginThrottle, UploadSlots, client_address
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


def hide_paths(message: str, home: Path) -> str:
    """``message`` with every path inside the deployment folder cut to its last part."""
    roots = sorted({str(Path(home)), str(Path(home).resolve())}, key=len, reverse=True)
    pattern = "|".join(re.escape(r) for r in roots)
    return re.sub(rf"(?:{pattern})(?:/[^\s'\":,;)]*)?", lambda m: Path(m.group(0)).name or "(the deployment)", message)


def create_app(dep: Deployment) -> FastAPI:
    """The web app and API of a deployment (its database pool opens here)."""
    web = dep.settings.web
    signer = URLSafeTimedSerializer(secret_key(dep.home), salt="dedup-web")
    meaning = meaning_function(dep.home, dep.settings)
    pool = dep.database.pool(web.db_pool_size, web.db_pool_timeout, web.db_reserved_connections)  # last: nothing after it fails

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            pool.close()

    app = FastAPI(**api.API_META, docs_url=None, redoc_url=None, openapi_url=api.OPENAPI_PATH, lifespan=lifespan)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.finalize = for_display  # bidirectional overrides in shown text are written out (dedup.bidi)
    app.state.web = WebContext(dep, signer, CropMaker(dep.settings.face, web), meaning, templates, pool, LoginThrottle(web),
                               UploadSlots(web))
    logins = asyncio.Semaphore(web.login_concurrency)  # argon2 takes 64 MiB per check
    app.include_router(api.router)
    app.include_router(pages.router)
    app.include_router(accuracy.router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.exception_handler(DedupError)
    async def domain_error(request: Request, exc: DedupError) -> Response:
        status = getattr(exc, "http_status", None) or next((code for cls, code in STATUS.items() if isinstance(exc, cls)), 400)
        if isinstance(exc, StoreError):
            # The detail (a database address, a folder) is for the operator, not for whoever asked.
            log.error("store error on %s %s: %s", request.method, request.url.path, exc)
            return error_response(request, 503, "the database or the photo store is not available; try again shortly "
                                                "(the operator's log has the detail)")
        response = error_response(request, status, hide_paths(str(exc), dep.home))
        if isinstance(exc, Throttled) and exc.retry_after:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        fields = sorted({".".join(str(p) for p in e.get("loc", ())[1:]) for e in exc.errors()})
        return error_response(request, 400, "invalid request: check " + (", ".join(f for f in fields if f) or "the parameters"))

    @app.exception_handler(psycopg.Error)
    async def database_error(request: Request, exc: psycopg.Error) -> Response:
        if isinstance(exc, psycopg.DataError):  # a NUL byte or an out-of-range value typed by the client
            return error_response(request, 400, "a value in the request cannot be used: it holds a NUL character "
                                                "or is out of range")
        log.error("database error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        if isinstance(exc, PoolTimeout):
            return error_response(request, 503, "the server is busy; try again shortly")
        return error_response(request, 503, "the database is not available; try again shortly")

    @app.middleware("http")
    async def login_throttle(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        # Password guesses are slowed per client address, then refused, before the password is checked.
        if request.method != "POST" or request.url.path != "/login":
            return await call_next(request)
        ctx: WebContext = request.app.state.web
        address = client_address(request)
        try:
            delay = ctx.throttle.before_attempt(address)
        except Throttled as exc:
            refused = error_response(request, 429, str(exc))
            refused.headers["Retry-After"] = str(exc.retry_after)
            return refused
        if delay:
            await asyncio.sleep(delay)
        async with logins:
            response = await call_next(request)
        if response.status_code == 401:
            ctx.throttle.failed(address)
        return response

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

