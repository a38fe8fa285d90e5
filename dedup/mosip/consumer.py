"""``dedup abis serve``: the queue loop between MOSIP's broker and the handler.

- **FIFO**: one subscription, messages handled in the order the broker delivers them, so an
  IDENTIFY sees every INSERT received before it.
- **Batched INSERTs**: an INSERT takes with it the INSERTs already delivered behind it (up
  to ``mosip.insert_batch``, without waiting for more), stopping at the first other request, an
  expired one, or a repeated requestId or referenceId; the batch is embedded in one model
  call, written to the gallery once (one generation) and to PostgreSQL in one transaction,
  then answered in order, each in its own broker transaction. Killed before an answer's
  commit, that request and the ones after it are redelivered and answered from the stored
  responses.
- **At least once, answered once**: the request is acknowledged only in the same STOMP
  transaction that sends its response (BEGIN, SEND response, ACK request, COMMIT, with a
  receipt on the COMMIT). Killed before the commit, the broker rolls both back and
  redelivers the request; the response stored in PostgreSQL before the send is then sent
  again instead of doing the work twice. Killed after it, the request is gone.
- **Message type**: a frame without ``content-length`` is a JMS TextMessage, with it a
  BytesMessage (ActiveMQ's STOMP mapping); the response goes back with the type the request
  came in (``mosip.message_format`` auto), since MOSIP casts replies to its configured type
  and drops the other one.
- **TTL**: a request whose ``expires`` header has passed, or whose broker timestamp is
  older than ``mosip.inbound_message_ttl``, is answered "aborted" (failure
  2) without doing its work: MOSIP's re-processor sends a fresh request later, and the
  answer lets it stop waiting for this one (a replayed requestId still gets its stored answer).
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dedup.config import MosipSettings
from dedup.deployment import Deployment
from dedup.errors import BrokerError, Conflict
from dedup.faults import crash_point
from dedup.mosip import messages as msg

log = logging.getLogger("dedup.mosip")


def broker_hosts(url: str) -> list[tuple[str, int]]:
    """``stomp://h:p``, ``tcp://h:p`` or ``failover:(u1,u2)?opts`` -> [(host, port), ...]."""
    text = url.strip()
    m = re.match(r"^failover:\(?([^)]*)\)?(\?.*)?$", text)
    parts = m.group(1).split(",") if m else [text]
    hosts = []
    for p in parts:
        hp = re.match(r"^(?:stomp|tcp|stomp\+nio|nio)://([^:/?]+):(\d+)", p.strip())
        if not hp:
            raise BrokerError(f"mosip.broker_url: {p.strip()!r} is not stomp://HOST:PORT")
        hosts.append((hp.group(1), int(hp.group(2))))
    return hosts


@dataclass
class Frame:
    """One delivered request."""

    message_id: str
    subscription: str
    body: bytes
    message_type: str  # "text" or "bytes"
    headers: dict[str, str]
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class _Listener:
    """stomp.py callbacks -> a local queue, receipts and the connection state."""

    def __init__(self) -> None:
        self.frames: queue.Queue[Frame] = queue.Queue()
        self.receipts: dict[str, threading.Event] = {}
        self.connected = threading.Event()
        self.error: str | None = None

    def on_connected(self, frame: Any) -> None:
        self.connected.set()

    def on_disconnected(self) -> None:
        self.connected.clear()

    def on_heartbeat_timeout(self) -> None:
        self.connected.clear()

    def on_error(self, frame: Any) -> None:
        self.error = str(frame.headers.get("message", "broker error"))

    def on_receipt(self, frame: Any) -> None:
        ev = self.receipts.get(frame.headers.get("receipt-id", ""))
        if ev is not None:
            ev.set()

    def on_message(self, frame: Any) -> None:
        h = dict(frame.headers)
        body = frame.body if isinstance(frame.body, bytes) else str(frame.body).encode("utf-8")
        self.frames.put(Frame(h.get("message-id", ""), h.get("subscription", ""), body,
                              "bytes" if "content-length" in h else "text", h))

    # stomp.py calls these too
    def on_connecting(self, host_and_port: Any) -> None: ...
    def on_before_message(self, frame: Any) -> None: ...
    def on_send(self, frame: Any) -> None: ...
    def on_heartbeat(self) -> None: ...
    def on_receiver_loop_completed(self, frame: Any) -> None: ...


class Transport:
    """The STOMP connection: subscribe to the inbound queue, answer in a transaction."""

    def __init__(self, settings: MosipSettings, prefetch: int = 64) -> None:
        self.settings = settings
        self.prefetch = prefetch
        self.listener = _Listener()
        self.conn: Any = None
        self.sub_id = f"dedup-abis-{os.getpid()}"

    def destination(self, name: str) -> str:
        return name if self.settings.broker_kind == "artemis" else f"/queue/{name}"

    def _dest_headers(self) -> dict[str, str]:
        return {"destination-type": "ANYCAST"} if self.settings.broker_kind == "artemis" else {}

    def connect(self) -> None:
        import stomp

        hosts = broker_hosts(self.settings.broker_url)
        self.listener = _Listener()
        conn = stomp.Connection(hosts, auto_content_length=False, auto_decode=False, heartbeats=(10_000, 10_000),
                                reconnect_attempts_max=1, timeout=10)
        conn.set_listener("dedup", self.listener)
        try:
            conn.connect(self.settings.user or None, self.settings.password or None, wait=True)
        except Exception as exc:  # noqa: BLE001 - stomp.py raises ConnectFailedException, OSError, ...
            raise BrokerError(f"cannot connect to the broker at {self.settings.broker_url}: {type(exc).__name__}") from None
        if self.listener.error:
            raise BrokerError(f"the broker refused the connection: {self.listener.error}")
        headers = {"activemq.prefetchSize": str(self.prefetch), **self._dest_headers()}
        conn.subscribe(self.destination(self.settings.inbound_queue), id=self.sub_id, ack="client-individual", headers=headers)
        self.conn = conn

    @property
    def connected(self) -> bool:
        return self.conn is not None and self.conn.is_connected() and self.listener.connected.is_set()

    def next_frame(self, timeout: float) -> Frame | None:
        try:
            return self.listener.frames.get(timeout=timeout)
        except queue.Empty:
            return None

    def waiting(self) -> int:
        """Requests delivered to this consumer and not yet taken (prefetched)."""
        return self.listener.frames.qsize()

    def answer(self, frame: Frame, body: str, message_type: str, timeout: float = 30.0) -> None:
        """Send the response and acknowledge the request in one transaction; raises BrokerError."""
        conn = self.conn
        data = body.encode("utf-8")
        headers: dict[str, str] = {"persistent": "true", **self._dest_headers()}
        if message_type == "bytes":
            headers["content-length"] = str(len(data))
        receipt = f"commit-{uuid.uuid4().hex}"
        done = threading.Event()
        self.listener.receipts[receipt] = done
        try:
            tx = conn.begin()
            conn.send(self.destination(self.settings.outbound_queue), data, headers={**headers, "transaction": tx})
            conn.ack(frame.message_id, frame.subscription, transaction=tx)
            conn.commit(tx, headers={"receipt": receipt})
            if not done.wait(timeout):
                raise BrokerError("the broker did not confirm the response's transaction")
        except BrokerError:
            raise
        except Exception as exc:  # noqa: BLE001 - NotConnectedException, OSError
            raise BrokerError(f"lost the broker while answering ({type(exc).__name__})") from None
        finally:
            self.listener.receipts.pop(receipt, None)

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.disconnect()
            except Exception:  # noqa: BLE001 - already gone
                pass
            self.conn = None


def batchable(parsed: msg.Parsed) -> bool:
    """A valid INSERT (the only request that joins a batch)."""
    return parsed.failure is None and parsed.request is not None and parsed.request.op == msg.INSERT


def expired(frame: Frame, ttl_seconds: int, now_ms: float | None = None) -> bool:
    """Whether the request's JMS expiration or ``inbound_message_ttl`` has passed."""
    now_ms = time.time() * 1000 if now_ms is None else now_ms
    try:
        expires = int(frame.headers.get("expires", "0") or 0)
        stamp = int(frame.headers.get("timestamp", "0") or 0)
    except ValueError:
        return False
    if expires and now_ms > expires:
        return True
    return bool(ttl_seconds and stamp and now_ms > stamp + ttl_seconds * 1000)


class Consumer:
    """``dedup abis serve``: the loop (see the module docstring)."""

    def __init__(self, dep: Deployment, say: Callable[[str], None] = lambda m: None,
                 progress_every: int = 100) -> None:
        self.dep = dep
        self.settings = dep.settings.mosip
        self.say = say
        self.progress_every = progress_every
        self.answered = 0
        self.stop_event = threading.Event()
        self.timings: Any = None
        self._held: tuple[Frame, msg.Parsed] | None = None  # taken from the queue, ended a batch, not yet handled

    def _handler(self, conn: Any, transport: Transport) -> Any:
        from dedup.mosip.datashare import AuthConfig, Fetcher, TokenCache
        from dedup.mosip.handler import Handler

        s = self.settings
        tokens = TokenCache(AuthConfig(s.auth_url, s.client_id, s.secret_key, s.app_id), s.fetch_timeout)
        fetcher = Fetcher(tokens, s.fetch_timeout, s.max_cbeff_bytes)
        decrypt = None
        if s.encryption == "mosip-v1.2":
            from dedup.mosip.crypto import decrypt as ver_r2
            from dedup.mosip.crypto import load_partner_key

            key = load_partner_key(s.p12_path, s.p12_password)
            decrypt = lambda body: ver_r2(body, key)  # noqa: E731
        self.tokens = tokens
        handler = Handler(self.dep, conn, fetcher.fetch, decrypt, pending_jobs=transport.waiting)
        self.timings = handler.timings
        return handler

    def run(self, max_messages: int | None = None, idle_exit: float | None = None) -> int:
        """Serve until stopped (or ``max_messages`` answered, or idle ``idle_exit`` seconds); returns answers sent."""
        from dedup.store import mosip as store

        lock_conn = self.dep.database.connect()
        try:
            if not store.try_serve_lock(lock_conn):
                raise Conflict("another `dedup abis serve` is consuming for this deployment; stop it first")
            with self.dep.database.session() as conn:
                store.set_started(conn, os.getpid())
                transport = Transport(self.settings)
                handler = self._handler(conn, transport)
                self._loop(conn, transport, handler, max_messages, idle_exit)
        finally:
            lock_conn.close()
        return self.answered

    def _connect(self, transport: Transport, conn: Any) -> None:
        from dedup.store import mosip as store

        delay = 0.5
        while not self.stop_event.is_set():
            try:
                transport.connect()
                self.say(f"connected to {self.settings.broker_url}; consuming {self.settings.inbound_queue}, "
                         f"answering on {self.settings.outbound_queue}")
                return
            except BrokerError as exc:
                store.set_last_error(conn, str(exc))
                self.say(f"warning: {exc}; retrying in {delay:.0f} s")
                self.stop_event.wait(delay)
                delay = min(delay * 2, 30.0)

    def _loop(self, conn: Any, transport: Transport, handler: Any, max_messages: int | None, idle_exit: float | None) -> None:
        from dedup.store import mosip as store

        last_beat = 0.0
        idle_since = time.monotonic()
        try:
            while not self.stop_event.is_set():
                if not transport.connected:
                    transport.close()
                    self._held = None  # the broker redelivers it with the rest
                    self._connect(transport, conn)
                    continue
                held, self._held = self._held, None
                frame = held[0] if held else transport.next_frame(timeout=0.5)
                now = time.monotonic()
                if now - last_beat > 5.0:
                    store.heartbeat(conn, None, transport.waiting())
                    last_beat = now
                if frame is None:
                    if idle_exit is not None and now - idle_since > idle_exit:
                        return
                    continue
                idle_since = now
                self._one(conn, transport, handler, frame, held[1] if held else None)
                if max_messages is not None and self.answered >= max_messages:
                    return
        finally:
            transport.close()

    def _is_expired(self, frame: Frame) -> bool:
        # The broker's clock, not ``requesttime``: MOSIP writes requesttime when its handler
        # stage builds the request, and an IDENTIFY is sent only after its INSERT is answered
        # (registration AbisHandlerStage / AbisMiddleWareStage), so in a backlog requesttime
        # can be far older than the message.
        return expired(frame, self.settings.inbound_message_ttl)

    def _one(self, conn: Any, transport: Transport, handler: Any, frame: Frame, parsed: msg.Parsed | None) -> None:
        if parsed is None:
            with handler.timings.stage("parse"):
                parsed = msg.parse(frame.body)
        if batchable(parsed) and not self._is_expired(frame):
            batch = self._take_batch(transport, handler, frame, parsed)
            if len(batch) > 1:
                log.info("a batch of %d INSERTs", len(batch))
            with handler.timings.stage("handle"):
                outcomes = handler.insert_batch([(p, f.message_type, f.received_at) for f, p in batch])
            for n, ((f, p), outcome) in enumerate(zip(batch, outcomes)):
                if not self._send(conn, transport, handler, f, p, outcome):
                    self._held = None  # the connection is gone: the rest are redelivered
                    return
                if n == 0 and len(batch) > 1:
                    crash_point("abis.batch_partly_answered")
            return
        expired_now = self._is_expired(frame)
        with handler.timings.stage("handle"):
            outcome = handler.handle(parsed, frame.message_type, frame.received_at, expired=expired_now)
        if expired_now:
            self.say(f"aborted an expired request (message {frame.message_id})")
        self._send(conn, transport, handler, frame, parsed, outcome)

    def _take_batch(self, transport: Transport, handler: Any, frame: Frame, parsed: msg.Parsed) -> list[tuple[Frame, msg.Parsed]]:
        """``frame``'s INSERT and the INSERTs delivered right behind it (see the module docstring)."""
        batch = [(frame, parsed)]
        assert parsed.request is not None
        request_ids, reference_ids = {parsed.request_id}, {parsed.request.reference_id}
        while len(batch) < self.settings.insert_batch:
            nxt = transport.next_frame(timeout=0.0)
            if nxt is None:
                break
            with handler.timings.stage("parse"):
                p = msg.parse(nxt.body)
            if (not batchable(p) or self._is_expired(nxt) or p.request_id in request_ids
                    or (p.request is not None and p.request.reference_id in reference_ids)):
                self._held = (nxt, p)
                break
            assert p.request is not None
            batch.append((nxt, p))
            request_ids.add(p.request_id)
            reference_ids.add(p.request.reference_id)
        return batch

    def _send(self, conn: Any, transport: Transport, handler: Any, frame: Frame, parsed: msg.Parsed, outcome: Any) -> bool:
        """Send one response with its request's ack; False when the broker connection was lost."""
        from dedup.store import mosip as store

        reply_type = frame.message_type if self.settings.message_format == "auto" else (
            "bytes" if self.settings.message_format == "byte" else "text")
        try:
            with handler.timings.stage("broker_answer"):
                transport.answer(frame, msg.encode(outcome.response), reply_type)
        except BrokerError as exc:
            store.set_last_error(conn, str(exc))
            self.say(f"warning: {exc}; the request will be redelivered and answered from the stored response")
            transport.close()
            return False
        if parsed.request_id:
            with handler.timings.stage("database"):
                store.mark_sent(conn, parsed.request_id)
        self.answered += 1
        resp = outcome.response
        if resp.get("returnValue") == "2":
            who = f"{parsed.echo_id or '?'} {parsed.request_id or '(no requestId)'}"
            store.set_last_error(conn, f"{who}: failure {resp.get('failureReason')} ({outcome.detail})")
        log.info("%s %s -> %s%s%s", parsed.echo_id or "?", parsed.request_id or "-", resp.get("returnValue"),
                 f" failure {resp['failureReason']}" if "failureReason" in resp else "", " (replayed)" if outcome.replayed else "")
        if self.answered % self.progress_every == 0:
            self.say(f"{self.answered} requests answered")
        return True
