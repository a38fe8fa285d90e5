"""MOSIP mode test support: a driver that plays MOSIP, and a deployment serving it.

- ``Datashare``: a local HTTP server. ``POST /auth`` issues JWTs (``Set-Cookie:
  authorization=...``) that expire after ``token_seconds``; ``GET /share/<key>`` serves a
  registered body to a valid ``Cookie: Authorization=`` token (HTTP 401 otherwise), MOSIP's
  error documents (HTTP 200 with ``errors``) for keys registered as such, and 404 for unknown
  keys.
- ``Mosip``: a STOMP client on the broker that sends requests as JMS TextMessages (no
  ``content-length``) or BytesMessages, collects every response by requestId and validates
  it against ``schemas/mosip/*.json``.
- CBEFF documents built from real photos the way MOSIP builds them (ISO 19794-5 record with a
  JPEG2000 image in a Face BIR), plain or VER_R2-encrypted with a throw-away RSA key
  (``make_partner``).
- ``AbisEnv``/``make_env``: a deployment in MOSIP mode with its `dedup abis serve` process.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dedup.mosip import localbroker
from dedup.mosip.cbeff import ISO_NAMESPACE, build_document
from dedup.mosip.iso19794_5 import build_record

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas" / "mosip"
SCHEMA_OF = {"mosip.abis.insert": "insert_response.json", "mosip.abis.identify": "identify_response.json",
             "mosip.abis.delete": "delete_response.json", "mosip.abis.ping": "ping_response.json",
             "mosip.abis.pendingJobs": "pending_jobs_response.json",
             "mosip.abis.referenceCount": "reference_count_response.json"}


def now_time() -> str:
    t = datetime.now(dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def jpeg2000(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG2000")  # lossless (reversible 5/3 wavelet) by default
    return buf.getvalue()


def face_cbeff(rgb: np.ndarray, namespace: str = ISO_NAMESPACE, trailing: int = 4096) -> bytes:
    """A CBEFF with one Face BIR: the photo as JPEG2000 in an ISO 19794-5 record (plus
    trailing bytes after the record, as MOSIP's samples have), beside finger and iris BIRs."""
    record = build_record(jpeg2000(rgb), rgb.shape[1], rgb.shape[0]) + bytes(range(256)) * (trailing // 256)
    return build_document([record], namespace=namespace)


# ---------------------------------------------------------------------------- HTTP side

@dataclass
class Datashare:
    """The datashare and auth endpoints of a fake MOSIP (see the module docstring)."""

    token_seconds: float = 3600.0
    bodies: dict[str, bytes] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry (server clock)
    auth_calls: int = 0
    fetches: int = 0
    refused: int = 0
    server: ThreadingHTTPServer | None = None

    @property
    def base(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def auth_url(self) -> str:
        return self.base + "/auth"

    def url(self, key: str) -> str:
        return f"{self.base}/share/{key}"

    def put(self, body: bytes) -> str:
        key = uuid.uuid4().hex
        self.bodies[key] = body
        return self.url(key)

    def put_error(self, code: str) -> str:
        key = uuid.uuid4().hex
        self.errors[key] = code
        return self.url(key)

    def expire_tokens(self) -> None:
        """Every issued token stops being accepted (as if it expired early)."""
        for t in self.tokens:
            self.tokens[t] = 0.0

    def start(self) -> Datashare:
        share = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                if self.path != "/auth":
                    self.send_error(404)
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                req = body.get("request", {})
                if req.get("clientId") != "mosip-abis-client" or req.get("secretKey") != "s3cret":
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(b'{"errors":[{"errorCode":"KER-ATH-401"}]}')
                    return
                share.auth_calls += 1
                exp = time.time() + share.token_seconds
                payload = base64.urlsafe_b64encode(json.dumps({"exp": exp, "sub": "abis"}).encode()).rstrip(b"=").decode()
                token = f"eyJhbGciOiJub25lIn0.{payload}.{uuid.uuid4().hex}"
                share.tokens[token] = exp
                self.send_response(200)
                self.send_header("Set-Cookie", f"authorization={token}; Path=/; HttpOnly")
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"response":{"status":"Success"}}')

            def do_GET(self) -> None:
                if not self.path.startswith("/share/"):
                    self.send_error(404)
                    return
                cookie = self.headers.get("Cookie", "")
                token = cookie.split("Authorization=", 1)[1].split(";")[0] if "Authorization=" in cookie else ""
                if share.tokens.get(token, 0.0) < time.time():
                    share.refused += 1
                    self.send_error(401)
                    return
                key = self.path[len("/share/"):]
                share.fetches += 1
                if key in share.errors:
                    doc = {"id": "mosip.data.share", "version": "1.0", "responsetime": now_time(), "dataShare": None,
                           "errors": [{"errorCode": share.errors[key], "message": "datashare error"}]}
                    data = json.dumps(doc).encode()
                elif key in share.bodies:
                    data = share.bodies[key]
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


# ---------------------------------------------------------------------------- queue side

class Mosip:
    """MOSIP's registration processor as seen from the queues."""

    def __init__(self, port: int, inbound: str, outbound: str) -> None:
        import stomp
        from jsonschema import Draft202012Validator

        self.inbound, self.outbound = inbound, outbound
        self.responses: dict[str, list[tuple[dict[str, Any], dict[str, str]]]] = {}
        self.unparsed: list[bytes] = []
        self.lock = threading.Condition()
        self.validators = {op: Draft202012Validator(json.loads((SCHEMAS / f).read_text())) for op, f in SCHEMA_OF.items()}
        self.failure_validator = Draft202012Validator(json.loads((SCHEMAS / "failure_response.json").read_text()))
        me = self

        class L(stomp.ConnectionListener):
            def on_message(self, frame: Any) -> None:
                body = frame.body if isinstance(frame.body, bytes) else frame.body.encode()
                try:
                    doc = json.loads(body)
                except ValueError:
                    me.unparsed.append(body)
                    return
                with me.lock:
                    me.responses.setdefault(str(doc.get("requestId")), []).append((doc, dict(frame.headers)))
                    me.lock.notify_all()

        self.conn = stomp.Connection([("127.0.0.1", port)], auto_content_length=False, auto_decode=False)
        self.conn.set_listener("mosip", L())
        self.conn.connect(wait=True)
        self.conn.subscribe(f"/queue/{outbound}", id="mosip", ack="auto")

    def close(self) -> None:
        self.conn.disconnect()

    def pause(self) -> None:
        """Stop consuming the outbound queue (so another client, e.g. a JMS one, gets the replies)."""
        self.conn.unsubscribe(id="mosip")

    def resume(self) -> None:
        self.conn.subscribe(f"/queue/{self.outbound}", id="mosip", ack="auto")

    def send(self, request: dict[str, Any] | str | bytes, as_bytes: bool = False) -> None:
        body = request if isinstance(request, (str, bytes)) else json.dumps(request)
        data = body.encode() if isinstance(body, str) else body
        headers = {"content-length": str(len(data))} if as_bytes else {}
        self.conn.send(f"/queue/{self.inbound}", data, headers={"persistent": "true", **headers})

    def wait(self, request_id: str, timeout: float = 60.0) -> tuple[dict[str, Any], dict[str, str]]:
        """The (first) response to ``request_id`` and its STOMP headers, validated."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while not self.responses.get(request_id):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no response to requestId {request_id} within {timeout} s")
                self.lock.wait(left)
            doc, headers = self.responses[request_id][0]
        self.validate(doc)
        return doc, headers

    def validate(self, doc: dict[str, Any]) -> None:
        validator = self.validators.get(str(doc.get("id")))
        if validator is None:
            validator = self.failure_validator
        errors = sorted(validator.iter_errors(doc), key=str)
        assert not errors, f"response does not follow the schema: {errors[0].message} in {doc}"

    def request(self, op: str, as_bytes: bool = False, timeout: float = 60.0, **fields: Any) -> dict[str, Any]:
        """Send one request (``fields`` over the defaults) and return its validated response."""
        rid = fields.pop("requestId", str(uuid.uuid4()))
        req = {"id": f"mosip.abis.{op}", "ver": "1.1", "requestId": rid, "requesttime": now_time(), **fields}
        req = {k: v for k, v in req.items() if v is not _DROP}
        self.send(req, as_bytes=as_bytes)
        return self.wait(rid, timeout)[0]


_DROP = object()
DROP: Any = _DROP  # a field value that removes the field from the request


# ---------------------------------------------------------------------------- deployments

@dataclass
class PartnerKeys:
    """A throw-away ABIS partner key pair: PKCS#12 for dedup, public key for the fake MOSIP."""

    p12: Path
    password: str
    public_key: Any
    cert_der: bytes


def make_partner(folder: Path, name: str = "abis") -> PartnerKeys:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"mpartner-default-{name}")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    password = "p12-pass"
    data = pkcs12.serialize_key_and_certificates(name.encode(), key, cert, None,
                                                 serialization.BestAvailableEncryption(password.encode()))
    path = folder / f"{name}.p12"
    path.write_bytes(data)
    return PartnerKeys(path, password, key.public_key(), cert.public_bytes(serialization.Encoding.DER))


@dataclass
class AbisEnv:
    """A deployment in MOSIP mode with its consumer process and the fake MOSIP around it."""

    home: Path
    broker: localbroker.LocalBroker
    share: Datashare
    inbound: str
    outbound: str
    partner: PartnerKeys | None
    log: Path
    process: subprocess.Popen[bytes] | None = None
    mosip: Mosip | None = None
    env: dict[str, str] = field(default_factory=dict)

    def start(self, extra_env: dict[str, str] | None = None, wait_connected: bool = True) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.env, **(extra_env or {})}
        start = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "dedup.cli", "abis", "serve", "--home", str(self.home),
                                             "--user", "admin"], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        if wait_connected:
            deadline = time.monotonic() + 120
            while b"connected to" not in self.log.read_bytes()[start:]:
                if self.process.poll() is not None:
                    raise AssertionError(f"dedup abis serve exited ({self.process.returncode}):\n{self.log.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    raise AssertionError("dedup abis serve did not connect:\n" + self.log.read_text()[-3000:])
                time.sleep(0.1)
        return self.process

    def kill(self) -> None:
        """kill -9 (no cleanup: the broker redelivers what was not committed)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def cbeff_url(self, document: bytes, encrypt: bool = True) -> str:
        """Publish a CBEFF on the datashare (VER_R2-encrypted when the deployment decrypts)."""
        from dedup.mosip.crypto import encrypt as ver_r2

        if encrypt and self.partner is not None:
            return self.share.put(ver_r2(document, self.partner.public_key, self.partner.cert_der))
        return self.share.put(document)


def make_env(folder: Path, database_url: str, broker: localbroker.LocalBroker, encrypted: bool) -> AbisEnv:
    from dedup.deployment import init_deployment

    home = folder / "dep"
    init_deployment(home, database_url)
    share = Datashare().start()
    tag = uuid.uuid4().hex[:8]
    inbound, outbound = f"mosip-to-abis-{tag}", f"abis-to-mosip-{tag}"
    partner = make_partner(folder) if encrypted else None
    lines = ["", "[index]", "train_size = 1000", "", "[face]", "workers = 1", "", "[mosip]",
             f'broker_url = "{broker.url}"', f'inbound_queue = "{inbound}"', f'outbound_queue = "{outbound}"',
             f'auth_url = "{share.auth_url}"', 'client_id = "mosip-abis-client"', 'secret_key = "s3cret"',
             "fetch_timeout = 10.0"]
    if partner is not None:
        lines += ['encryption = "mosip-v1.2"', f'p12_path = "{partner.p12}"', f'p12_password = "{partner.password}"']
    with open(home / "dedup.toml", "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    env = AbisEnv(home, broker, share, inbound, outbound, partner, folder / "serve.log",
                  env={"DEDUP_RUNTIME_THREADS": "1", "OMP_NUM_THREADS": "1"})
    env.mosip = Mosip(broker.stomp_port, inbound, outbound)
    return env
