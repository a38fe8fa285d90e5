"""What a request depends on, as ``Annotated`` aliases for route signatures.

``Ctx`` is the app's :class:`WebContext`, ``Conn`` a connection from the app's pool for the
request, ``User`` the logged-in web user (401, the login form, without a session) and
``Centre`` the centre user an API token acts as (401 without a valid token). ``Centre``
borrows a pooled connection only while it checks the token, unless the route holds one
already: an upload holds no connection while its body streams in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature, URLSafeTimedSerializer
from psycopg_pool import ConnectionPool

from dedup.deployment import Deployment
from dedup.errors import PermissionDenied, Unauthenticated
from dedup.ingest.photos import PhotoStore, photo_store
from dedup.store import auth
from dedup.store.users import Actor
from dedup.web.images import CropMaker
from dedup.web.limits import LoginThrottle, UploadSlots
from dedup.web.scoring import ScoreMeaning

SESSION_COOKIE = "dedup_session"
LOGIN_COOKIE = "dedup_login"


@dataclass
class WebContext:
    """What every request needs: the deployment, the cookie signer, the crop maker, score words,
    the database pool and the per-client limits."""

    dep: Deployment
    signer: URLSafeTimedSerializer
    crops: CropMaker
    meaning: Callable[[float], ScoreMeaning]
    templates: Jinja2Templates
    pool: ConnectionPool[psycopg.Connection[Any]]
    throttle: LoginThrottle
    uploads: UploadSlots

    @property
    def photos(self) -> PhotoStore:
        return photo_store(self.dep.store)

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection for the block (waits up to ``web.db_pool_timeout``)."""
        with self.pool.connection() as conn:
            yield conn


@dataclass(frozen=True)
class WebUser:
    """The logged-in user of a request, with what the templates need."""

    actor: Actor
    csrf_token: str
    session_id: str


def context(request: Request) -> WebContext:
    """The app's WebContext."""
    ctx: WebContext = request.app.state.web
    return ctx


def db(request: Request) -> Iterator[psycopg.Connection[Any]]:
    """A pooled database connection for one request."""
    with context(request).connection() as conn:
        request.state.conn = conn
        try:
            yield conn
        finally:
            request.state.conn = None


Ctx = Annotated[WebContext, Depends(context)]
Conn = Annotated[psycopg.Connection[Any], Depends(db)]


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


def current_user(request: Request, conn: Conn) -> WebUser:
    """The session's user; 401 (the login form) without a valid session."""
    session_id = read_session_cookie(request)
    session = auth.load_session(conn, session_id)
    if session is None:
        raise Unauthenticated("your session has ended; please log in again")
    return WebUser(session.actor, session.csrf_token, session_id)


def centre_actor(request: Request) -> Actor:
    """The centre user the request's bearer token acts as (401 without a valid token)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthenticated("send the centre's API token: Authorization: Bearer dk_...")
    held = getattr(request.state, "conn", None)
    if held is not None:  # the route's own connection (declared before the token)
        return auth.token_actor(held, value)
    with context(request).connection() as conn:
        return auth.token_actor(conn, value)


User = Annotated[WebUser, Depends(current_user)]
Centre = Annotated[Actor, Depends(centre_actor)]


def check_csrf(user: WebUser, token: str) -> None:
    """403 unless the form carried the session's CSRF token."""
    if not auth.csrf_ok(user.csrf_token, token):
        raise PermissionDenied("the form's security token is missing or out of date; reload the page and try again")


__all__ = ["Centre", "Conn", "Ctx", "LOGIN_COOKIE", "SESSION_COOKIE", "User", "WebContext", "WebUser", "centre_actor",
           "check_csrf", "context", "current_user", "db", "read_session_cookie"]
