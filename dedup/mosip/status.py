"""What ``dedup abis status`` reports: the broker, the consumer, the counts, the last error."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from dedup.deployment import Deployment
from dedup.errors import BrokerError


def broker_reachable(dep: Deployment) -> tuple[bool, str]:
    """Connect to the broker once (and leave): reachable, and why not."""
    from dedup.mosip.consumer import broker_hosts

    import stomp

    try:
        hosts = broker_hosts(dep.settings.mosip.broker_url)
        conn = stomp.Connection(hosts, reconnect_attempts_max=1, timeout=5)
        conn.connect(dep.settings.mosip.user or None, dep.settings.mosip.password or None, wait=True)
        conn.disconnect()
        return True, ""
    except BrokerError as exc:
        return False, str(exc)
    except Exception as exc:  # ConnectFailedException, OSError
        return False, type(exc).__name__


def report(dep: Deployment, check_broker: bool = True) -> dict[str, Any]:
    """Status as a JSON-ready dict."""
    from dedup.store import mosip as store

    with dep.database.session() as conn:
        st = store.status(conn)
    beat = st["consumer"].get("heartbeat_at")
    alive = bool(beat and (datetime.now(timezone.utc) - beat).total_seconds() < 30)
    s = dep.settings.mosip
    out: dict[str, Any] = {
        "broker_url": s.broker_url,
        "inbound_queue": s.inbound_queue,
        "outbound_queue": s.outbound_queue,
        "consumer_running": alive,
        # Requests taken from the inbound queue and not answered yet (the consumer's prefetch);
        # ActiveMQ's STOMP connector gives no queue depth, so what still waits in the broker
        # shows in its own tools (activemq dstat).
        "pending_jobs": int(st["consumer"].get("pending") or 0) if alive else 0,
        **st,
    }
    if check_broker:
        ok, why = broker_reachable(dep)
        out["broker_reachable"] = ok
        if not ok:
            out["broker_error"] = why
    return out
