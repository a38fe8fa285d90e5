"""MOSIP 1.2 datashare encryption (``VER_R2``), decrypted with the ABIS partner's key.

Layout (keymanager ``CryptomanagerServiceImpl.encrypt`` and ``generateAadAndEncryptData``;
mock-abis ``utility/CryptoCoreUtil.decryptCbeff``), the whole URL-safe base64 encoded::

    "VER_R2" | SHA-256 thumbprint of the partner certificate (32)
    | RSA-OAEP (SHA-256, MGF1-SHA-256) wrapped AES key (the RSA key's size: 256 for 2048 bits)
    | "#KEY_SPLITTER#"
    | AAD (32 random bytes; the GCM nonce is its first 12) | AES-GCM ciphertext | tag (16)

The private key comes from a PKCS#12 file (``mosip.p12_path``/``p12_password``). A
thumbprint that names another certificate, a key that does not unwrap or a tag that does
not verify all mean "not for us": failure 11 (the compliance toolkit's ABIS3017 expects 11
for a CBEFF encrypted with another partner's key).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dedup.errors import ConfigError, MosipFailure
from dedup.mosip.codes import Failure

VERSION = b"VER_R2"
KEY_SPLITTER = b"#KEY_SPLITTER#"
THUMBPRINT_LEN = 32
AAD_LEN = 32
NONCE_LEN = 12


@dataclass(frozen=True)
class PartnerKey:
    """The ABIS partner's private key and its certificate's SHA-256 thumbprint."""

    private_key: Any
    thumbprint: bytes | None

    @property
    def key_bytes(self) -> int:
        return int(self.private_key.key_size) // 8


def load_partner_key(path: str | Path, password: str) -> PartnerKey:
    """Read the private key (and certificate) from a PKCS#12 file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import pkcs12

    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"mosip.p12_path {p}: cannot read ({exc.strerror or exc})") from None
    try:
        key, cert, _ = pkcs12.load_key_and_certificates(data, password.encode("utf-8") if password else None)
    except ValueError:
        raise ConfigError(f"mosip.p12_path {p}: not a PKCS#12 file, or the password (mosip.p12_password) is wrong") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"mosip.p12_path {p}: holds no RSA private key")
    thumb = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest() if cert is not None else None
    return PartnerKey(key, thumb)


def _b64(data: bytes) -> bytes:
    text = b"".join(data.split()).replace(b"-", b"+").replace(b"_", b"/")
    text += b"=" * (-len(text) % 4)
    return base64.b64decode(text, validate=True)


def decrypt(body: bytes, key: PartnerKey) -> bytes:
    """The CBEFF document inside a VER_R2 datashare body (base64 text or raw bytes)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    raw = body.strip()
    if not raw.startswith(VERSION):
        try:
            raw = _b64(raw)
        except (binascii.Error, ValueError):
            raise MosipFailure(Failure.INVALID_CBEFF_FORMAT, "the datashare body is neither base64 nor VER_R2 data") from None
    cut = raw.find(KEY_SPLITTER)
    if not raw.startswith(VERSION) or cut < 0:
        raise MosipFailure(Failure.CBEFF_NO_DATA, "the datashare body is not VER_R2 encrypted data")
    head, payload = raw[len(VERSION):cut], raw[cut + len(KEY_SPLITTER):]
    if len(head) == THUMBPRINT_LEN + key.key_bytes:
        thumb, wrapped = head[:THUMBPRINT_LEN], head[THUMBPRINT_LEN:]
        if key.thumbprint is not None and thumb != key.thumbprint:
            raise MosipFailure(Failure.CBEFF_NO_DATA, "the CBEFF is encrypted for another partner certificate")
    elif len(head) == key.key_bytes:
        wrapped = head
    else:
        raise MosipFailure(Failure.CBEFF_NO_DATA, "the wrapped key does not match the partner key's size")
    try:
        aes_key = key.private_key.decrypt(wrapped, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None))
    except ValueError:
        raise MosipFailure(Failure.CBEFF_NO_DATA, "the session key does not unwrap with the partner key") from None
    if len(payload) < AAD_LEN + 16:
        raise MosipFailure(Failure.CBEFF_NO_DATA, "the encrypted CBEFF is truncated")
    aad = payload[:AAD_LEN]
    try:
        plain = AESGCM(aes_key).decrypt(aad[:NONCE_LEN], payload[AAD_LEN:], aad)
    except (InvalidTag, ValueError):
        raise MosipFailure(Failure.CBEFF_NO_DATA, "the encrypted CBEFF does not verify (tag mismatch)") from None
    if not plain.lstrip().startswith(b"<"):
        try:  # some senders encrypt the base64 of the document
            plain = _b64(plain)
        except (binascii.Error, ValueError):
            pass
    return plain


def encrypt(document: bytes, public_key: Any, certificate_der: bytes | None) -> bytes:
    """VER_R2-encrypt a document for a partner (MOSIP's side; for tests and benchmarks)."""
    import os

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aes_key = AESGCM.generate_key(bit_length=256)
    wrapped = public_key.encrypt(aes_key, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None))
    aad = os.urandom(AAD_LEN)
    sealed = AESGCM(aes_key).encrypt(aad[:NONCE_LEN], document, aad)
    thumb = hashlib.sha256(certificate_der).digest() if certificate_der is not None else b""
    raw = VERSION + thumb + wrapped + KEY_SPLITTER + aad + sealed
    return base64.urlsafe_b64encode(raw).rstrip(b"=")
