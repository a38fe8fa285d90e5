"""MOSIP formats without a broker: request checks and their order, ISO 19794-5 records,
CBEFF in both namespaces, VER_R2 decryption, the token cache, broker URLs."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import skimage.data

from dedup.errors import BrokerError, MosipFailure
from dedup.mosip import cbeff, crypto, iso19794_5, messages
from dedup.mosip.consumer import Frame, broker_hosts, expired
from dedup.mosip.datashare import AuthConfig, TokenCache, _error_codes
from tests.support.mosip import face_cbeff, jpeg2000, make_partner

GOOD = {"id": "mosip.abis.insert", "ver": "1.1", "requestId": "r1", "requesttime": "2020-03-29T07:01:24.692Z",
        "referenceId": "ref", "referenceURL": "http://x/y"}


def code_of(doc: dict) -> int | None:
    p = messages.parse(json.dumps(doc))
    return None if p.failure is None else p.failure.code


def test_a_valid_request_reads_with_every_spelling() -> None:
    assert code_of(GOOD) is None
    assert code_of({**{k: v for k, v in GOOD.items() if k != "ver"}, "version": "1.1"}) is None
    ident = {**GOOD, "id": "mosip.abis.identify", "referenceURL": None, "referenceUrl": "", "gallery": None,
             "flags": {"maxResults": "30", "targetFPIR": "30", "extra": "kept"}}
    p = messages.parse(json.dumps(ident))
    assert p.failure is None and p.request is not None
    assert p.request.max_results == 30 and p.request.target_fpir == 30.0 and p.request.gallery is None


@pytest.mark.parametrize("change, code", [
    ({"id": "mosip.abis.nothing"}, 14), ({"ver": "2.0"}, 13), ({"ver": None}, 13), ({"requestId": ""}, 6),
    ({"requesttime": None}, 9), ({"requesttime": "2020-03-29T07:01:24Z"}, 15), ({"requesttime": "2020-02-30T07:01:24.692Z"}, 15),
    ({"referenceId": " "}, 5), ({"referenceURL": ""}, 8), ({"extra": 1}, 4),
])
def test_each_check_gives_its_code(change: dict, code: int) -> None:
    assert code_of({k: v for k, v in {**GOOD, **change}.items()}) == code


def test_the_first_failing_check_wins_in_mosips_order() -> None:
    everything_wrong = {"id": "x", "ver": "0", "requestId": "", "requesttime": "bad", "referenceId": "", "extra": 1}
    order = [("id", "mosip.abis.insert", 14), ("ver", "1.1", 13), ("requestId", "r", 6), ("requesttime", "2020-03-29T07:01:24.692Z", 15),
             ("referenceId", "ref", 5), ("referenceURL", "http://x", 8), ("extra", None, 4)]
    doc = dict(everything_wrong)
    for key, fix, code in order:
        assert code_of({k: v for k, v in doc.items() if v is not None}) == code, key
        doc[key] = fix
    assert code_of({k: v for k, v in doc.items() if v is not None}) is None


def test_responses_use_strings_and_mosips_time_format() -> None:
    r = messages.failure("mosip.abis.insert", "r1", 7)
    assert r["returnValue"] == "2" and r["failureReason"] == "7"
    assert len(r["responsetime"]) == 24 and r["responsetime"].endswith("Z")
    for body in ("not json", b"\xff\xfe"):
        failure = messages.parse(body).failure
        assert failure is not None and failure.code == 4


def test_iso_record_is_read_by_its_lengths_with_trailing_bytes() -> None:
    rgb = skimage.data.astronaut()
    image = jpeg2000(rgb)
    record = iso19794_5.build_record(image, 512, 512)
    face = iso19794_5.face_image(record + b"\x00trailing" * 5000)
    assert face.kind == "jpeg2000" and face.data == image and (face.width, face.height) == (512, 512)
    # The record's own length field: 17-byte header + one representation.
    assert struct.unpack(">I", record[8:12])[0] == len(record)
    with pytest.raises(MosipFailure) as exc:
        iso19794_5.face_image(record[: len(record) // 2])
    assert exc.value.code == 16
    with pytest.raises(MosipFailure):
        iso19794_5.face_image(b"RIFF....WEBP")
    assert iso19794_5.face_image(b"\xff\xd8\xff\xe0 jfif").kind == "jpeg"  # a bare JPEG BDB (older samples)


def test_iso_2005_record() -> None:
    image = jpeg2000(np.zeros((20, 20, 3), dtype=np.uint8))
    block = struct.pack(">IH", 4 + 2 + 14 + 12 + len(image), 0) + bytes(14) + bytes([1, 1]) + struct.pack(">HH", 20, 20) + bytes(6) + image
    record = b"FAC\x00010\x00" + struct.pack(">IH", 14 + len(block), 1) + block
    face = iso19794_5.face_image(record)
    assert face.data == image and face.width == 20


def test_cbeff_face_segments_in_both_namespaces_skip_exceptions_and_other_modalities() -> None:
    rec = iso19794_5.build_record(b"\xff\xd8\xff jpeg", 1, 1)
    for ns in (cbeff.ISO_NAMESPACE, cbeff.OASIS_NAMESPACE):
        segs = cbeff.face_segments(cbeff.build_document([rec, rec + b"x"], exceptions=(0,), namespace=ns))
        assert [s.bdb for s in segs] == [rec + b"x"]
    with pytest.raises(MosipFailure) as exc:
        cbeff.face_segments(cbeff.build_document([rec], exceptions=(0,)))
    assert exc.value.code == 11
    for bad, code in [(b"", 11), (b"<notxml", 16), (b"<root/>", 16), (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><BIR/>', 16),
                      (b'<BIR xmlns="urn:other"/>', 16)]:
        with pytest.raises(MosipFailure) as exc:
            cbeff.face_segments(bad)
        assert exc.value.code == code, bad


def test_standard_and_url_safe_base64_bdbs() -> None:
    data = bytes(range(256)) * 3
    assert cbeff.decode_base64(base64.b64encode(data).decode()) == data
    assert cbeff.decode_base64(base64.urlsafe_b64encode(data).decode().rstrip("=")) == data


def test_ver_r2_round_trip_and_refusals(tmp_path: Path) -> None:
    mine = make_partner(tmp_path, "mine")
    other = make_partner(tmp_path, "other")
    key = crypto.load_partner_key(mine.p12, mine.password)
    doc = face_cbeff(np.full((64, 64, 3), 120, dtype=np.uint8))
    assert crypto.decrypt(crypto.encrypt(doc, mine.public_key, mine.cert_der), key) == doc
    assert crypto.decrypt(crypto.encrypt(doc, mine.public_key, None), key) == doc  # no thumbprint (older senders)
    for body in (crypto.encrypt(doc, other.public_key, other.cert_der), crypto.encrypt(doc, other.public_key, None)):
        with pytest.raises(MosipFailure) as exc:
            crypto.decrypt(body, key)
        assert exc.value.code == 11
    raw = bytearray(base64.urlsafe_b64decode(crypto.encrypt(doc, mine.public_key, mine.cert_der) + b"=="))
    raw[-1] ^= 1  # tampered: the GCM tag fails
    with pytest.raises(MosipFailure) as exc:
        crypto.decrypt(bytes(raw), key)
    assert exc.value.code == 11
    from dedup.errors import ConfigError

    with pytest.raises(ConfigError):
        crypto.load_partner_key(mine.p12, "wrong")


def test_token_cache_reuses_a_token_until_it_expires() -> None:
    now = [1000.0]
    cache = TokenCache(AuthConfig("http://auth", "c", "s"), 5.0, clock=lambda: now[0])
    issued = []

    def obtain() -> tuple[str, float]:
        issued.append(now[0])
        return f"t{len(issued)}", now[0] + 100.0

    cache._obtain = obtain  # type: ignore[method-assign]
    assert cache.get() == cache.get() == "t1"
    now[0] += 99
    assert cache.get() == "t1"
    now[0] += 2
    assert cache.get() == "t2"
    cache.invalidate()
    assert cache.get() == "t3" and cache.fetched == 3
    assert TokenCache(AuthConfig(""), 5.0).get() is None


def test_datashare_error_documents() -> None:
    assert _error_codes(b'{"errors":[{"errorCode":"DAT-SER-006"}],"dataShare":null}') == ["DAT-SER-006"]
    assert _error_codes(b"<BIR/>") is None
    assert _error_codes(b'{"dataShare": null}') == []


def test_broker_urls_and_ttl() -> None:
    assert broker_hosts("stomp://127.0.0.1:61613") == [("127.0.0.1", 61613)]
    assert broker_hosts("failover:(tcp://a:1,tcp://b:2)?randomize=false") == [("a", 1), ("b", 2)]
    with pytest.raises(BrokerError):
        broker_hosts("http://a:1")
    f = Frame("m", "s", b"", "text", {"expires": "0", "timestamp": "1000000"})
    assert expired(f, 10, now_ms=1000000 + 11_000) and not expired(f, 10, now_ms=1000000 + 9_000)
    assert not expired(f, 0, now_ms=10**13)
    assert expired(Frame("m", "s", b"", "text", {"expires": "5"}), 0, now_ms=6)
