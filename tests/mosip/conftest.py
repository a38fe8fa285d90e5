"""Fixtures for MOSIP mode: the session's ActiveMQ broker, a deployment with its
`dedup abis serve` process, the fake MOSIP (driver.py), real photos."""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from PIL import Image

from dedup.mosip import localbroker
from tests.mosip.driver import Datashare, Mosip
from tests.support import photos as photo_helpers
from tests.support.pg import create_database, drop_database

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def broker() -> Iterator[localbroker.LocalBroker]:
    """One private ActiveMQ (Debian's package) for the session: STOMP for dedup and the fake
    MOSIP, OpenWire for the Java JMS client that plays MOSIP's own transport."""
    assert localbroker.available(), "Debian's activemq package is missing: `make test` installs it (apt-get install activemq)"
    root = Path(tempfile.mkdtemp(prefix="dedup-test-amq-"))
    b = localbroker.start_broker(root, openwire=True)
    yield b
    b.stop()
    shutil.rmtree(root, ignore_errors=True)


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
    now = dt.datetime.now(dt.timezone.utc)
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


@pytest.fixture(scope="module")
def abis(tmp_path_factory: pytest.TempPathFactory, pg_server: Any, broker: localbroker.LocalBroker) -> Iterator[AbisEnv]:
    """A VER_R2-encrypting MOSIP and a deployment serving it (one consumer per test module)."""
    url = create_database(pg_server, prefix="mosip_")
    env = make_env(tmp_path_factory.mktemp("abis"), url, broker, encrypted=True)
    env.start()
    yield env
    env.stop()
    assert env.mosip is not None
    env.mosip.close()
    env.share.stop()
    drop_database(pg_server, url)


# ---------------------------------------------------------------------------- photos

@pytest.fixture(scope="session")
def faces() -> dict[str, np.ndarray]:
    """Real photos: two captures of Eileen Collins (scikit-image's astronaut: the original, and
    a rescaled, brighter, re-framed one), Grace Hopper (matplotlib), and coffee (no face)."""
    import matplotlib.cbook
    import skimage.data

    astro = np.ascontiguousarray(skimage.data.astronaut())
    second = photo_helpers.resize(astro[20:500, 10:480], 0.8)
    second = np.clip(second.astype(np.int16) + 18, 0, 255).astype(np.uint8)
    grace_path = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    grace = np.asarray(Image.open(io.BytesIO(grace_path.read_bytes())).convert("RGB"))
    return {"astronaut": astro, "astronaut2": np.ascontiguousarray(second), "grace": grace,
            "coffee": np.ascontiguousarray(skimage.data.coffee())}
