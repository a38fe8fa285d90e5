"""MOSIP mode end to end: the fake MOSIP sends requests through a real ActiveMQ broker to a
running `dedup abis serve`, which fetches VER_R2-encrypted CBEFFs from the fake datashare;
every response is validated against schemas/mosip/*.json.

The tests of this module share one deployment and run in file order (the gallery grows).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import numpy as np

from dedup.mosip.cbeff import OASIS_NAMESPACE, build_document
from tests.support.mosip import DROP, ROOT, AbisEnv, face_cbeff, make_partner, now_time

REF: dict[str, str] = {}  # photo name -> referenceId inserted


def ref(name: str) -> str:
    return REF.setdefault(name, str(uuid.uuid4()))


def fail_code(resp: dict[str, Any]) -> str | None:
    return resp.get("failureReason") if resp["returnValue"] == "2" else None


def test_ping_count_and_pending_jobs_on_an_empty_gallery(abis: AbisEnv) -> None:
    m = abis.mosip
    assert m is not None
    assert m.request("ping")["returnValue"] == "1"
    assert m.request("referenceCount")["count"] == "0"
    r = m.request("pendingJobs")
    assert r["returnValue"] == "1" and r["jobscount"] == "0"
    # The spec's and the testing kit's spelling of the version key is read too.
    assert m.request("ping", ver=DROP, version="1.1")["returnValue"] == "1"


def test_insert_three_people_then_identify_finds_the_second_capture(abis: AbisEnv, faces: dict[str, np.ndarray]) -> None:
    m = abis.mosip
    assert m is not None
    for name in ("astronaut", "grace", "astronaut2"):
        resp = m.request("insert", referenceId=ref(name), referenceURL=abis.cbeff_url(face_cbeff(faces[name])), timeout=120)
        assert resp["returnValue"] == "1", resp
    assert m.request("referenceCount")["count"] == "3"
    # MOSIP's own identify request: referenceUrl "", gallery null, string flags.
    r = m.request("identify", referenceId=ref("astronaut2"), referenceUrl="", gallery=None,
                  flags={"maxResults": "30", "targetFPIR": "30"})
    cands = r["candidateList"]["candidates"]
    assert r["candidateList"]["count"] == str(len(cands)) == "1"
    assert cands[0]["referenceId"] == ref("astronaut")  # the first capture; never the probe itself
    score = float(cands[0]["analytics"]["internalScore"])
    assert 0.9 < score <= 1.0
    assert cands[0]["modalities"][0]["biometricType"] == "FID"
    assert cands[0]["analytics"]["fpir"] != ""
    # Restricted to others: no answer, count "0" with an empty list.
    r = m.request("identify", referenceId=ref("astronaut2"), gallery={"referenceIds": [{"referenceId": ref("grace")}]})
    assert r["candidateList"] == {"count": "0", "candidates": []}
    # Restricted to the mate: found, with the same exact score.
    r = m.request("identify", referenceId=ref("astronaut2"), gallery={"referenceIds": [{"referenceId": ref("astronaut")}]})
    assert [c["referenceId"] for c in r["candidateList"]["candidates"]] == [ref("astronaut")]
    assert abs(float(r["candidateList"]["candidates"][0]["analytics"]["internalScore"]) - score) < 1e-5


def test_max_results_keeps_only_the_best_candidate(abis: AbisEnv, faces: dict[str, np.ndarray]) -> None:
    m = abis.mosip
    assert m is not None
    third = np.ascontiguousarray(faces["astronaut"][10:, 5:])  # a third capture, framed differently
    resp = m.request("insert", referenceId=ref("astronaut3"), referenceURL=abis.cbeff_url(face_cbeff(third)), timeout=120)
    assert resp["returnValue"] == "1"
    full = m.request("identify", referenceId=ref("astronaut2"))["candidateList"]["candidates"]
    assert {c["referenceId"] for c in full} == {ref("astronaut"), ref("astronaut3")}
    scores = [float(c["analytics"]["internalScore"]) for c in full]
    assert scores == sorted(scores, reverse=True)
    best = m.request("identify", referenceId=ref("astronaut2"), flags={"maxResults": "1"})["candidateList"]
    assert best["count"] == "1" and best["candidates"][0]["referenceId"] == full[0]["referenceId"]


def test_identify_by_reference_url_searches_without_storing(abis: AbisEnv, faces: dict[str, np.ndarray]) -> None:
    m = abis.mosip
    assert m is not None
    r = m.request("identify", referenceURL=abis.cbeff_url(face_cbeff(faces["grace"])), timeout=120)
    assert [c["referenceId"] for c in r["candidateList"]["candidates"]] == [ref("grace")]
    assert m.request("referenceCount")["count"] == "4"


def test_second_insert_of_a_reference_is_10_without_a_fetch(abis: AbisEnv, faces: dict[str, np.ndarray]) -> None:
    m = abis.mosip
    assert m is not None
    fetches = abis.share.fetches
    resp = m.request("insert", referenceId=ref("grace"), referenceURL=abis.share.url("never-fetched"))
    assert fail_code(resp) == "10"
    assert abis.share.fetches == fetches
    assert m.request("referenceCount")["count"] == "4"


def test_a_repeated_request_id_gets_the_same_response_and_no_work(abis: AbisEnv, faces: dict[str, np.ndarray]) -> None:
    m = abis.mosip
    assert m is not None
    rid = str(uuid.uuid4())
    req = {"id": "mosip.abis.insert", "ver": "1.1", "requestId": rid, "requesttime": now_time(),
           "referenceId": ref("grace-again"), "referenceURL": abis.cbeff_url(face_cbeff(faces["grace"]))}
    m.send(req)
    first, _ = m.wait(rid, 120)
    fetches = abis.share.fetches
    m.send(req)  # as a redelivery would
    import time
    deadline = time.monotonic() + 30
    while len(m.responses[rid]) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [d for d, _ in m.responses[rid]] == [first, first]
    assert abis.share.fetches == fetches


def test_the_reply_has_the_jms_type_of_the_request(abis: AbisEnv) -> None:
    m = abis.mosip
    assert m is not None
    rid_text, rid_bytes = str(uuid.uuid4()), str(uuid.uuid4())
    m.send({"id": "mosip.abis.ping", "ver": "1.1", "requestId": rid_text, "requesttime": now_time()})
    m.send({"id": "mosip.abis.ping", "ver": "1.1", "requestId": rid_bytes, "requesttime": now_time()}, as_bytes=True)
    _, h_text = m.wait(rid_text)
    _, h_bytes = m.wait(rid_bytes)
    assert "content-length" not in h_text  # TextMessage
    assert "content-length" in h_bytes  # BytesMessage


JMS_CLASSPATH = ":".join(f"/usr/share/activemq/lib/{j}.jar" for j in (
    "activemq-client", "geronimo-jms_1.1_spec", "geronimo-j2ee-management-1.1-spec", "hawtbuf", "slf4j-api"))


def test_mosips_own_jms_client_gets_the_type_it_casts_to(abis: AbisEnv) -> None:
    """MOSIP's middleware sends with javax.jms over OpenWire and casts the reply to the
    configured type (TextMessage for text, BytesMessage for byte): a real JMS client checks it."""
    assert abis.mosip is not None
    abis.mosip.pause()
    try:
        _jms_round_trips(abis)
    finally:
        abis.mosip.resume()


def _jms_round_trips(abis: AbisEnv) -> None:
    args, rids = [], []
    for fmt in ("text", "byte"):
        rid = str(uuid.uuid4())
        rids.append(rid)
        args += [fmt, json.dumps({"id": "mosip.abis.referenceCount", "ver": "1.1", "requestId": rid, "requesttime": now_time()}), rid]
    out = subprocess.run(["java", "-cp", JMS_CLASSPATH, str(ROOT / "tests/mosip/jms/MosipJms.java"),
                          f"tcp://127.0.0.1:{abis.broker.openwire_port}", abis.inbound, abis.outbound, *args],
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0::2] == ["TextMessage", "BytesMessage"]
    for rid, body in zip(rids, lines[1::2]):
        doc = json.loads(body)
        assert doc["requestId"] == rid and doc["returnValue"] == "1" and int(doc["count"]) >= 3
        abis.mosip.validate(doc)  # type: ignore[union-attr]


def test_failure_reasons_of_the_request_checks_in_mosips_order(abis: AbisEnv) -> None:
    m = abis.mosip
    assert m is not None
    url = abis.share.url("x")
    # Each request breaks one rule, and (for precedence) every rule after it too.
    cases = [
        ("14", dict(id="mosip.abis.unknown", ver="0.0", requestId="r14", requesttime="bad")),
        ("13", dict(ver="0.9", requesttime="bad", referenceId=DROP)),
        ("6", dict(requestId="", requesttime="bad")),
        ("9", dict(requesttime=DROP, referenceId=DROP)),
        ("15", dict(requesttime="2020-03-29 07:01:24", referenceId=DROP)),
        ("5", dict(referenceId=DROP, referenceURL=DROP, newUnknownValue="x")),
        ("8", dict(referenceId="r-8", referenceURL=DROP, newUnknownValue="x")),
        ("4", dict(referenceId="r-4", referenceURL=url, newUnknownValue="x")),
    ]
    for code, fields in cases:
        rid = fields.pop("requestId", str(uuid.uuid4()))
        op = str(fields.pop("id", "mosip.abis.insert"))
        req = {"id": op, "ver": "1.1", "requestId": rid, "requesttime": now_time(), "referenceId": "r", "referenceURL": url, **fields}
        req = {k: v for k, v in req.items() if v is not DROP}
        m.send(req)
        if rid == "":
            continue  # answered with requestId "": MOSIP cannot correlate it; checked below by id
        resp, _ = m.wait(rid)
        assert fail_code(resp) == code, (code, resp)
        assert resp["id"] == op
    resp, _ = m.wait("")
    assert fail_code(resp) == "6" and resp["id"] == "mosip.abis.insert"
    # Not JSON at all: 4, with what could be echoed (nothing). Answered in order, after the ping.
    m.send("this is not json")
    assert m.request("ping")["returnValue"] == "1"
    assert [fail_code(d) for d, _ in m.responses[""]] == ["6", "4"]
    # Bad flags and gallery structure: 4.
    assert fail_code(m.request("identify", referenceId=ref("grace"), flags={"maxResults": "many"})) == "4"
    assert fail_code(m.request("identify", referenceId=ref("grace"), gallery={"referenceIds": "x"})) == "4"
    assert fail_code(m.request("delete", referenceId="r", referenceURL=url)) == "4"
    assert fail_code(m.request("identify", referenceId=DROP)) == "5"


def test_failure_reasons_of_fetching_and_reading_the_cbeff(abis: AbisEnv, faces: dict[str, np.ndarray], tmp_path: Any) -> None:
    m = abis.mosip
    assert m is not None
    share = abis.share

    def insert(url: str) -> str | None:
        return fail_code(m.request("insert", referenceId=str(uuid.uuid4()), referenceURL=url, timeout=120))

    assert insert(share.url("missing")) == "7"  # HTTP 404
    assert insert("ftp://127.0.0.1/cbeff") == "7"  # not an http(s) URL
    assert insert("http://127.0.0.1:1/share/x") == "7"  # nobody listens
    assert insert(share.put_error("DAT-SER-006")) == "17"  # usage expired
    assert insert(share.put_error("DAT-SER-003")) == "3"  # other datashare error
    assert insert(abis.cbeff_url(b"<html>not a cbeff</html>")) == "16"
    assert insert(abis.cbeff_url(b"\x00\x01 binary junk")) == "16"
    # No face BIR (fingers and irises only), a face marked as an exception, an empty document: 11.
    assert insert(abis.cbeff_url(build_document([]))) == "11"
    from dedup.mosip.iso19794_5 import build_record
    from tests.support.mosip import jpeg2000

    record = build_record(jpeg2000(faces["grace"]), faces["grace"].shape[1], faces["grace"].shape[0])
    assert insert(abis.cbeff_url(build_document([record], exceptions=(0,)))) == "11"
    # Encrypted for another partner's key: 11 (the compliance toolkit's ABIS3017).
    other = make_partner(tmp_path, "other")
    from dedup.mosip.crypto import encrypt

    assert insert(share.put(encrypt(face_cbeff(faces["grace"]), other.public_key, other.cert_der))) == "11"
    # Plain CBEFF where VER_R2 is expected: 16 (not base64 / not encrypted data) or 11.
    assert insert(abis.cbeff_url(face_cbeff(faces["grace"]), encrypt=False)) in ("11", "16")
    # A photo without a face: quality check failed.
    assert insert(abis.cbeff_url(face_cbeff(faces["coffee"]))) == "18"
    # The legacy OASIS namespace reads like the ISO one.
    r = m.request("insert", referenceId=ref("grace-oasis"), referenceURL=abis.cbeff_url(
        face_cbeff(faces["grace"], namespace=OASIS_NAMESPACE)), timeout=120)
    assert r["returnValue"] == "1"


def test_unknown_reference_ids_give_12(abis: AbisEnv) -> None:
    m = abis.mosip
    assert m is not None
    assert fail_code(m.request("identify", referenceId=str(uuid.uuid4()))) == "12"
    assert fail_code(m.request("identify", referenceId=ref("grace"),
                               gallery={"referenceIds": [{"referenceId": ref("astronaut")}, {"referenceId": "nobody"}]})) == "12"
    assert fail_code(m.request("delete", referenceId=str(uuid.uuid4()))) == "12"


def test_an_old_requesttime_is_not_an_expired_request(abis: AbisEnv) -> None:
    """MOSIP writes requesttime when it builds a request and may send it much later (an
    IDENTIFY waits for its INSERT's answer): only the broker's clock decides "aborted" (2)."""
    m = abis.mosip
    assert m is not None
    old = "2020-03-29T07:01:24.692Z"
    r = m.request("identify", requesttime=old, referenceId=ref("astronaut2"))
    assert r["returnValue"] == "1" and ref("astronaut") in {c["referenceId"] for c in r["candidateList"]["candidates"]}
    assert m.request("referenceCount", requesttime=old)["returnValue"] == "1"


def test_delete_removes_the_reference_from_the_gallery(abis: AbisEnv) -> None:
    m = abis.mosip
    assert m is not None
    before = int(m.request("referenceCount")["count"])
    assert m.request("delete", referenceId=ref("astronaut3"))["returnValue"] == "1"
    assert int(m.request("referenceCount")["count"]) == before - 1
    cands = m.request("identify", referenceId=ref("astronaut2"))["candidateList"]["candidates"]
    assert [c["referenceId"] for c in cands] == [ref("astronaut")]
    assert fail_code(m.request("delete", referenceId=ref("astronaut3"))) == "12"
    assert fail_code(m.request("identify", referenceId=ref("astronaut3"))) == "12"


def test_one_token_serves_many_fetches_and_is_renewed_when_refused(abis: AbisEnv, faces: dict[str, np.ndarray]) -> None:
    m = abis.mosip
    assert m is not None
    share = abis.share
    assert share.auth_calls == 1  # every fetch so far used the first token
    share.expire_tokens()  # the datashare now refuses it (HTTP 401)
    r = m.request("identify", referenceURL=abis.cbeff_url(face_cbeff(faces["grace"])), timeout=120)
    assert r["returnValue"] == "1"
    assert share.auth_calls == 2 and share.refused >= 1


def test_status_reports_counts_and_the_last_error(abis: AbisEnv) -> None:
    out = subprocess.run([sys.executable, "-m", "dedup.cli", "abis", "status", "--home", str(abis.home), "--json"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["broker_reachable"] is True and doc["consumer_running"] is True
    assert doc["queue_depth"] == 0  # everything sent was answered
    assert doc["references"] >= 3 and doc["requests_answered"] > 20
    assert doc["failures"].get("12", 0) >= 3
    assert "failure" in (doc["last_error"] or "")
    assert doc["unsent_responses"] == 0


def test_no_reference_is_stored_twice(abis: AbisEnv) -> None:
    from dedup.deployment import open_deployment
    from dedup.index.gallery import Gallery

    dep = open_deployment(abis.home)
    with dep.database.session() as conn:
        rows = conn.execute("SELECT reference_id, row_id FROM mosip_references WHERE state = 'active'").fetchall()
    gallery = Gallery.open(abis.home / dep.settings.mosip.gallery_dir)
    names = gallery.enrolment_ids(np.array([r["row_id"] for r in rows], dtype=np.int64))
    assert sorted(names) == sorted(f"mosip-{r['reference_id']}" for r in rows)
    assert len(gallery) == len(rows)
