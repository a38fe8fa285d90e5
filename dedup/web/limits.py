"""What one client may make ``dedup serve`` do: failed logins per client address, uploads in
progress per centre user, and bounded waits for a request body.

All of it is in the server process's memory (``dedup serve`` is one process); a restart
forgets the counts, which the account lock-out in the database does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator

from starlette.requests import Request

from dedup.config import WebSettings
from dedup.errors import RequestTimeout, Throttled

# Addresses remembered at most: an attacker with many addresses cannot grow the table without end.
MAX_ADDRESSES = 100_000
FIRST_DELAY = 0.25  # seconds; doubles with every failure past the free ones


def client_address(request: Request) -> str:
    """The client's address as this server sees it: the TCP peer (behind a proxy, the proxy's)."""
    return request.client.host if request.client else "unknown"


class LoginThrottle:
    """Failed logins per client address over a sliding window: free ones, then a doubling
    delay before every attempt (right or wrong, so the delay tells nothing), then 429."""

    def __init__(self, web: WebSettings) -> None:
        self.window = web.throttle_window
        self.free = web.throttle_free_failures
        self.max_delay = web.throttle_max_delay
        self.max_failures = web.throttle_max_failures
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._failures.get(address)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[address]
        return times

    def before_attempt(self, address: str) -> float:
        """Seconds to wait before this attempt is checked; Throttled when the address has failed too often."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(address, now)
            failures = len(times)
            if failures >= self.max_failures:
                retry = int(times[0] + self.window - now) + 1
                raise Throttled(f"too many failed logins from your address; try again in {retry} s", retry)
        if failures < self.free:
            return 0.0
        return float(min(self.max_delay, FIRST_DELAY * 2 ** (failures - self.free)))

    def failed(self, address: str) -> None:
        """Count a failed login from ``address``."""
        now = time.monotonic()
        with self._lock:
            times = self._failures.get(address)
            if times is None:
                if len(self._failures) >= MAX_ADDRESSES:
                    self._failures.pop(next(iter(self._failures)))  # the longest-known address
                times = self._failures[address] = deque()
            times.append(now)
            while len(times) > self.max_failures:
                times.popleft()


class UploadSlots:
    """Uploads in progress per centre user: at most ``web.uploads_per_token`` at once."""

    def __init__(self, web: WebSettings) -> None:
        self.limit = web.uploads_per_token
        self._busy: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def slot(self, who: str) -> Iterator[None]:
        """Hold one of ``who``'s upload slots; Throttled (429) when all are taken."""
        with self._lock:
            if self._busy.get(who, 0) >= self.limit:
                raise Throttled(f"{self.limit} uploads of this centre are already in progress (web.uploads_per_token); "
                                "wait for one to finish", 5)
            self._busy[who] = self._busy.get(who, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._busy[who] -= 1
                if not self._busy[who]:
                    del self._busy[who]


async def timed_chunks(chunks: AsyncIterator[bytes], idle: float, total: float) -> AsyncIterator[bytes]:
    """The chunks of a request body, cut off (RequestTimeout) when none comes for ``idle``
    seconds or the whole body takes longer than ``total``."""
    deadline = time.monotonic() + total
    iterator = chunks.__aiter__()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RequestTimeout(f"the upload took longer than {total:g} s (web.body_timeout)")
        try:
            chunk = await asyncio.wait_for(iterator.__anext__(), timeout=min(idle, left))
        except StopAsyncIteration:
            return
        except TimeoutError:
            if time.monotonic() >= deadline:
                raise RequestTimeout(f"the upload took longer than {total:g} s (web.body_timeout)") from None
            raise RequestTimeout(f"the upload sent nothing for {idle:g} s (web.body_idle_timeout)") from None
        yield chunk
