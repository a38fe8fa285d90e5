"""Running the app: ``dedup serve`` (uvicorn on a socket bound here, so a busy port is a clear error)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

from dedup.deployment import Deployment
from dedup.errors import InvalidParameter


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0 picks a free one)."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET  # a host name: resolved by bind
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InvalidParameter(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass another --port or --host") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(dep: Deployment, host: str, port: int, say: Callable[[str], None] = lambda _m: None) -> None:
    """Serve the deployment's web app and API until interrupted."""
    import uvicorn

    from dedup.web.app import create_app

    app = create_app(dep)
    sock = bind(host, port)
    where = sock.getsockname()
    if not is_loopback(host):
        say(f"warning: listening on {host}, reachable from other machines over plain HTTP; put a TLS proxy in front "
            "and set web.cookie_secure = true")
    say(f"dedup serve: http://{host}:{where[1]}/ (adjudicators) and http://{host}:{where[1]}/api/v1/ (centres); Ctrl-C stops")
    web = dep.settings.web
    config = uvicorn.Config(app, log_level="info", access_log=True, server_header=False, proxy_headers=False, ws="none",
                            timeout_graceful_shutdown=5, timeout_keep_alive=web.keep_alive_seconds,
                            limit_concurrency=web.max_http_connections)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
