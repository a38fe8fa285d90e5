"""What ``dedup abis status`` reports: the broker, the consumer, the counts, the last error."""

from __future__ import annotations

from typing import Any

from dedup.deployment import Deployment
from dedup.errors import BrokerError


def broker_reachable(dep: Deployment) -> tuple[bool, str]:
    """Connect to the broker once (and leave): reachable, and why not."""
    import stomp

    from dedup.mosip.consumer import broker_hosts

    try:
        hosts = broker_hosts(dep.settings.mosip.broker_url)
        conn = stomp.Connection(hosts, reconnect_attempts_max=1, timeout=5)
        conn.connect(dep.settings.mosip.user or None, dep.settings.mosip.password or None, wait=True)
        conn.disconnect()
        return True, ""
    except BrokerError as exc:
        return False, str(exc)
    except Exception as exc:  # noqa: BLE001 - ConnectFailedException, OSError
        return False, type(exc).__name__


def queue_depth(dep: Deployment, timeout: float = 10.0, cap: int = 1_000_000) -> int | None:
    """Messages in the inbound queue, by browsing it (ActiveMQ 5's STOMP ``browser: true``
    subscription: it sees every message, consumes none, and ends with a ``browser: end``
    frame). None on Artemis (no browse over STOMP), on a timeout, or past ``cap``."""
    import threading

    import stomp

    from dedup.mosip.consumer import broker_hosts

    s = dep.settings.mosip
    if s.broker_kind != "classic":
        return None
    seen = [0]
    done = threading.Event()

    class Browse(stomp.ConnectionListener):
        def on_message(self, frame: Any) -> None:
            if frame.headers.get("browser") == "end":
                done.set()
            else:
                seen[0] += 1
                if seen[0] > cap:
                    done.set()

    conn = stomp.Connection(broker_hosts(s.broker_url), reconnect_attempts_max=1, timeout=5, auto_decode=False)
    conn.set_listener("browse", Browse())
    try:
        conn.connect(s.user or None, s.password or None, wait=True)
        conn.subscribe(f"/queue/{s.inbound_queue}", id="dedup-abis-status", ack="auto", headers={"browser": "true"})
        finished = done.wait(timeout)
    except Exception:  # noqa: BLE001 - ConnectFailedException, OSError: reported as unknown
        return None
    finally:
        try:
            conn.disconnect()
        except Exception:  # noqa: BLE001 - already gone
            pass
    return seen[0] if finished and seen[0] <= cap else None


def report(dep: Deployment, check_broker: bool = True) -> dict[str, Any]:
    """Status as a JSON-ready dict."""
    from dedup.store import mosip as store

    with dep.database.session() as conn:
        st = store.status(conn)
        alive = store.serve_lock_held(conn)  # a running consumer holds it, on whatever machine
    s = dep.settings.mosip
    out: dict[str, Any] = {
        "broker_url": s.broker_url,
        "inbound_queue": s.inbound_queue,
        "outbound_queue": s.outbound_queue,
        "consumer_running": alive,
        # Requests the consumer has taken from the queue (prefetched) and not answered yet.
        "pending_jobs": int(st["consumer"].get("pending") or 0) if alive else 0,
        **st,
    }
    if check_broker:
        ok, why = broker_reachable(dep)
        out["broker_reachable"] = ok
        if not ok:
            out["broker_error"] = why
        out["queue_depth"] = queue_depth(dep) if ok else None
    return out
