"""Fetching the CBEFF at a referenceURL (MOSIP's datashare), with a cached JWT.

The token comes from ``POST {auth_url}`` (authmanager ``/v1/authmanager/authenticate/
clientidsecretkey``) with the client id, secret and app id; it is returned in the
``Set-Cookie: authorization=<jwt>`` header and sent back as ``Cookie: Authorization=<jwt>``
(MOSIP ABIS API "Authentication Token"). One token serves every fetch until its ``exp``
(read from the JWT, less a margin) or until the datashare refuses it; then it is renewed
once (the compliance toolkit's ABIS3030/3031 check that an ABIS neither asks for a token per
request nor fails when one expires).

Errors (mosip-mock-services ``ProxyAbisInsertServiceImpl.fetchCBEFF``): the datashare answers
functional failures with HTTP 200 and ``{"errors": [{"errorCode": ...}]}``: ``DAT-SER-006``
(expired or used up) is 17, any other is 3; HTTP errors, unreachable hosts and bad URLs are 7.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dedup.errors import MosipFailure
from dedup.mosip.codes import Failure
from dedup.mosip.messages import utc_time

EXPIRED_CODE = "DAT-SER-006"
AUTH_CODES = ("KER-ATH-401", "KER-ATH-403")
TOKEN_MARGIN_S = 30.0


@dataclass(frozen=True)
class AuthConfig:
    """Where and as whom to get a token; an empty ``url`` fetches without one."""

    url: str = ""
    client_id: str = ""
    secret_key: str = ""
    app_id: str = "regproc"
    token_seconds: float = 1800.0  # lifetime assumed when the JWT carries no exp


class TokenCache:
    """The current JWT, renewed only when it expires or is refused."""

    def __init__(self, auth: AuthConfig, timeout: float, clock: Callable[[], float] = time.time) -> None:
        self.auth = auth
        self.timeout = timeout
        self.clock = clock
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()
        self.fetched = 0  # tokens obtained so far (for status and tests)

    def get(self) -> str | None:
        """A valid token, or None when no auth is configured."""
        if not self.auth.url:
            return None
        with self._lock:
            if self._token is None or self.clock() >= self._expires:
                self._token, self._expires = self._obtain()
                self.fetched += 1
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def _obtain(self) -> tuple[str, float]:
        body = json.dumps({"id": "string", "version": "string", "requesttime": utc_time(), "metadata": {},
                           "request": {"appId": self.auth.app_id, "clientId": self.auth.client_id,
                                       "secretKey": self.auth.secret_key}}).encode("utf-8")
        req = urllib.request.Request(self.auth.url, data=body, method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                cookies = resp.headers.get_all("Set-Cookie") or []
                payload = resp.read(1_000_000)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise MosipFailure(Failure.UNABLE_TO_FETCH, f"the auth endpoint failed ({_why(exc)})") from None
        token = _cookie_token(cookies)
        if token is None:
            try:
                doc = json.loads(payload)
                token = (doc.get("response") or {}).get("token") if isinstance(doc, dict) else None
            except ValueError:
                token = None
        if not token:
            raise MosipFailure(Failure.UNABLE_TO_FETCH, "the auth endpoint returned no authorization token")
        life = _lifetime(token, self.auth.token_seconds)
        # Renew a little before expiry (a tenth of the lifetime, at most TOKEN_MARGIN_S).
        return token, self.clock() + life - min(TOKEN_MARGIN_S, 0.1 * life)


def _cookie_token(cookies: list[str]) -> str | None:
    for c in cookies:
        name, _, rest = c.partition("=")
        if name.strip().lower() == "authorization":
            return rest.split(";", 1)[0].strip() or None
    return None


def _lifetime(token: str, default: float) -> float:
    """Seconds until the JWT's ``exp`` (not verified: the datashare verifies it)."""
    try:
        part = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        return max(float(claims["exp"]) - time.time(), 0.0)
    except (IndexError, KeyError, ValueError, TypeError):
        return default


def _why(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return type(exc).__name__


class Fetcher:
    """``fetch(url)``: the bytes at a referenceURL, or a MosipFailure."""

    def __init__(self, tokens: TokenCache, timeout: float, max_bytes: int) -> None:
        self.tokens = tokens
        self.timeout = timeout
        self.max_bytes = max_bytes

    def fetch(self, url: str) -> bytes:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise MosipFailure(Failure.UNABLE_TO_FETCH, "the referenceURL is not an http(s) URL")
        for attempt in (1, 2):
            token = self.tokens.get()
            try:
                body = self._get(url, token)
            except urllib.error.HTTPError as exc:
                if exc.code in (401, 403) and token is not None and attempt == 1:
                    self.tokens.invalidate()
                    continue
                raise MosipFailure(Failure.UNABLE_TO_FETCH, f"the datashare answered HTTP {exc.code}") from None
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise MosipFailure(Failure.UNABLE_TO_FETCH, f"the datashare cannot be reached ({_why(exc)})") from None
            codes = _error_codes(body)
            if codes is None:
                return body
            if any(c in AUTH_CODES for c in codes) and token is not None and attempt == 1:
                self.tokens.invalidate()
                continue
            if EXPIRED_CODE in codes:
                raise MosipFailure(Failure.DATASHARE_EXPIRED, f"the datashare URL has expired ({EXPIRED_CODE})")
            raise MosipFailure(Failure.UNEXPECTED_ERROR, f"the datashare answered errors {', '.join(codes) or '(none named)'}")
        raise MosipFailure(Failure.UNABLE_TO_FETCH, "the datashare keeps refusing the token")

    def _get(self, url: str, token: str | None) -> bytes:
        headers = {"Cookie": f"Authorization={token}"} if token else {}
        req = urllib.request.Request(url, headers=headers, method="GET")
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            data: bytes = resp.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise MosipFailure(Failure.UNABLE_TO_FETCH, f"the CBEFF is larger than mosip.max_cbeff_bytes ({self.max_bytes})")
        return data


def _error_codes(body: bytes) -> list[str] | None:
    """The datashare's error codes when the body is its JSON error document, else None."""
    head = body.lstrip()[:1]
    if head != b"{":
        return None
    try:
        doc: Any = json.loads(body)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    errors = doc.get("errors")
    if not errors:
        # A JSON document without errors is not a CBEFF either.
        return [] if "dataShare" in doc or "response" in doc else None
    if not isinstance(errors, list):
        return []
    return [str(e.get("errorCode", "")) for e in errors if isinstance(e, dict)]
