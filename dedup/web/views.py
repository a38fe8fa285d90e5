"""Responses every part of the app makes: a rendered page, a redirect, the login form, and
the error answer (JSON for the API, a small page for the rest)."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from dedup.web.deps import LOGIN_COOKIE, context

ERROR_CODES = {401: "unauthenticated", 403: "forbidden", 404: "not_found", 409: "conflict", 400: "bad_request",
               408: "timeout", 413: "too_large", 429: "too_many_requests", 503: "unavailable", 500: "internal_error"}


def render(request: Request, template: str, values: dict[str, Any], status: int = 200) -> Response:
    """A page from ``templates/``."""
    return context(request).templates.TemplateResponse(request, template, {"settings": context(request).dep.settings, **values},
                                                       status_code=status)


def see_other(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def safe_next(path: str | None) -> str:
    """Only a path on this site: no scheme, no host, no protocol-relative '//'."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def login_page(request: Request, message: str | None = None, status: int = 200, next_path: str = "/") -> Response:
    """The login form with a fresh login CSRF token (double-submit: cookie and form)."""
    token = secrets.token_urlsafe(24)
    ctx = context(request)
    response = render(request, "login.html", {"user": None, "message": message, "csrf_token": token,
                                              "next_path": safe_next(next_path)}, status=status)
    response.set_cookie(LOGIN_COOKIE, ctx.signer.dumps(token, salt="login"), max_age=3600, httponly=True, samesite="strict",
                        secure=ctx.dep.settings.web.cookie_secure, path="/")
    return response


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def error_response(request: Request, status: int, message: str) -> Response:
    """JSON for the API, a small page for the rest (the login form for 401 on a page)."""
    if is_api(request):
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"error": ERROR_CODES.get(status, "error"), "message": message}, status_code=status, headers=headers)
    if status == 401:
        return login_page(request, message, status=401,
                          next_path=request.url.path if request.method == "GET" else "/")
    return render(request, "error.html", {"status": status, "message": message, "user": None}, status=status)
