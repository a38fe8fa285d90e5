"""A kill of `dedup abis serve` at any point loses and doubles nothing, as MOSIP sees it:
every requestId is answered exactly once, and no referenceId is stored twice, also when the
kill falls inside a batch of INSERTs. Here too, because they restart the consumer: queued
INSERTs go in batches, a damaged gallery gives failure 1, a request past its TTL failure 2.
This module's deployment reads plain CBEFF (``mosip.encryption = none``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from dedup.faults import CRASH_EXIT_CODE
from dedup.mosip import localbroker
from tests.support.mosip import AbisEnv, face_cbeff, make_env, now_time
from tests.support.pg import create_database, drop_database


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, pg_server: Any, broker: localbroker.LocalBroker) -> Iterator[AbisEnv]:
    url = create_database(pg_server, prefix="mosip_crash_")
    env = make_env(tmp_path_factory.mktemp("abis-crash"), url, broker, encrypted=False)
    yield env
    env.stop()
    assert env.mosip is not None
    env.mosip.close()
    env.share.stop()
    drop_database(pg_server, url)


def _insert(env: AbisEnv, rgb: np.ndarray, reference_id: str) -> dict[str, Any]:
    return {"id": "mosip.abis.insert", "ver": "1.1", "requestId": str(uuid.uuid4()), "requesttime": now_time(),
            "referenceId": reference_id, "referenceURL": env.cbeff_url(face_cbeff(rgb))}


def _stored(env: AbisEnv) -> tuple[list[tuple[str, int]], int, list[str]]:
    from dedup.deployment import open_deployment
    from dedup.index.gallery import Gallery

    dep = open_deployment(env.home)
    with dep.database.session() as conn:
        rows = [(r["reference_id"], int(r["row_id"])) for r in
                conn.execute("SELECT reference_id, row_id FROM mosip_references WHERE state = 'active'").fetchall()]
    gallery = Gallery.open(env.home / dep.settings.mosip.gallery_dir)
    names = gallery.enrolment_ids(np.array([r for _, r in rows], dtype=np.int64)) if rows else []
    return rows, len(gallery), names


def test_killed_between_the_gallery_and_the_database_the_insert_is_finished_once(plain: AbisEnv, faces: dict[str, np.ndarray]) -> None:
    m = plain.mosip
    assert m is not None
    proc = plain.start(extra_env={"DEDUP_CRASH_AT": "abis.inserted"})
    req = _insert(plain, faces["astronaut"], "ref-crash-1")
    m.send(req)
    assert proc.wait(120) == CRASH_EXIT_CODE  # died with the template in the gallery, nothing in the database
    assert not m.responses.get(req["requestId"])
    plain.start()
    resp, _ = m.wait(req["requestId"], 120)
    assert resp["returnValue"] == "1"
    rows, size, names = _stored(plain)
    assert [r for r, _ in rows] == ["ref-crash-1"] and size == 1 and names == ["mosip-ref-crash-1"]


def test_kill_9_mid_stream_then_restart_answers_every_request_once(plain: AbisEnv, faces: dict[str, np.ndarray]) -> None:
    m = plain.mosip
    assert m is not None
    photos = [faces["astronaut"], faces["grace"], faces["astronaut2"]]
    requests = []
    for i in range(9):
        requests.append(_insert(plain, photos[i % 3], f"ref-stream-{i}"))
        if i % 3 == 2:
            requests.append({"id": "mosip.abis.identify", "ver": "1.1", "requestId": str(uuid.uuid4()),
                             "requesttime": now_time(), "referenceId": f"ref-stream-{i}"})
    # A repeated INSERT of one reference in the stream: the second gets 10, before or after the kill.
    requests.append(_insert(plain, faces["grace"], "ref-stream-1"))
    for r in requests:
        m.send(r)
    ids = [r["requestId"] for r in requests]
    deadline = time.monotonic() + 120
    while sum(1 for i in ids if m.responses.get(i)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    plain.kill()  # kill -9 mid-stream
    time.sleep(0.5)  # responses committed before the kill are still on their way to the driver
    answered_before = sum(1 for i in ids if m.responses.get(i))
    assert 3 <= answered_before < len(ids)
    # With the consumer dead, status sees it stopped and what waits in the broker.
    from dedup.deployment import open_deployment
    from dedup.mosip.status import report

    dep = open_deployment(plain.home)
    deadline = time.monotonic() + 20
    while (st := report(dep))["consumer_running"] and time.monotonic() < deadline:
        time.sleep(0.2)  # PostgreSQL ends the dead consumer's session (and its lock) when it notices
    assert st["consumer_running"] is False and st["broker_reachable"] is True
    assert st["queue_depth"] == len(ids) - answered_before
    plain.start()
    for i in ids:
        m.wait(i, 180)
    time.sleep(1.0)  # a late duplicate would arrive now
    assert all(len(m.responses[i]) == 1 for i in ids), {i: len(m.responses[i]) for i in ids}
    codes = [m.responses[i][0][0].get("failureReason", "ok") for i in ids]
    assert codes[-1] == "10" and codes[:-1] == ["ok"] * (len(ids) - 1)
    # Every identify found the earlier captures of its person, whatever the kill interrupted.
    ident = [m.responses[r["requestId"]][0][0] for r in requests if r["id"] == "mosip.abis.identify"]
    assert all(int(d["candidateList"]["count"]) >= 1 for d in ident)
    rows, size, names = _stored(plain)
    refs = [r for r, _ in rows]
    assert len(refs) == len(set(refs)) == 10  # ref-crash-1 + ref-stream-0..8
    assert size == 10 and sorted(names) == sorted(f"mosip-{r}" for r in refs)


def _generation(env: AbisEnv) -> int:
    from dedup.deployment import open_deployment
    from dedup.index.gallery import Gallery

    return int(Gallery.open(env.home / open_deployment(env.home).settings.mosip.gallery_dir).manifest.generation)


def _answered_once(env: AbisEnv, ids: list[str]) -> list[dict[str, Any]]:
    m = env.mosip
    assert m is not None
    for i in ids:
        m.wait(i, 180)
    time.sleep(1.0)  # a late duplicate would arrive now
    assert all(len(m.responses[i]) == 1 for i in ids), {i: len(m.responses[i]) for i in ids}
    return [m.responses[i][0][0] for i in ids]


def test_queued_inserts_go_in_batches_and_an_identify_sees_every_earlier_one(plain: AbisEnv, faces: dict[str, np.ndarray]) -> None:
    m = plain.mosip
    assert m is not None
    plain.stop()  # the requests queue up in the broker, as behind a busy consumer
    gen0 = _generation(plain)
    requests = [_insert(plain, faces["astronaut"], "ref-batch-a"), _insert(plain, faces["grace"], "ref-batch-b"),
                _insert(plain, faces["astronaut2"], "ref-batch-c")]
    requests.append({"id": "mosip.abis.identify", "ver": "1.1", "requestId": str(uuid.uuid4()), "requesttime": now_time(),
                     "referenceId": "ref-batch-c", "gallery": {"referenceIds": [{"referenceId": "ref-batch-a"},
                                                                               {"referenceId": "ref-batch-b"}]}})
    third = np.ascontiguousarray(faces["astronaut"][10:, 5:])
    requests += [_insert(plain, faces["grace"], "ref-batch-b"),  # again: 10, and it ends the batch it would join
                 _insert(plain, third, "ref-batch-d"), _insert(plain, faces["coffee"], "ref-batch-e")]  # e: no face, 18
    for r in requests:
        m.send(r)
    plain.start()
    codes = [d.get("failureReason", "ok") for d in _answered_once(plain, [r["requestId"] for r in requests])]
    assert codes == ["ok", "ok", "ok", "ok", "10", "ok", "18"]
    ident = m.responses[requests[3]["requestId"]][0][0]
    assert [c["referenceId"] for c in ident["candidateList"]["candidates"]] == ["ref-batch-a"]
    # Four templates added in fewer generations than four: the queued INSERTs were batched.
    assert _generation(plain) - gen0 < 4
    rows, size, names = _stored(plain)
    refs = [r for r, _ in rows]
    assert len(refs) == len(set(refs)) == size and sorted(names) == sorted(f"mosip-{r}" for r in refs)
    assert {"ref-batch-a", "ref-batch-b", "ref-batch-c", "ref-batch-d"} <= set(refs) and "ref-batch-e" not in refs


def test_killed_inside_a_batch_every_insert_is_answered_once(plain: AbisEnv, faces: dict[str, np.ndarray]) -> None:
    m = plain.mosip
    assert m is not None
    plain.stop()
    photos = [faces["astronaut"], faces["grace"], faces["astronaut2"], faces["grace"]]
    requests = [_insert(plain, p, f"ref-kbatch-{i}") for i, p in enumerate(photos)]
    for r in requests:
        m.send(r)
    ids = [r["requestId"] for r in requests]
    # Dies after the first answer of a batch: the batch is in the gallery and the database,
    # and the rest of its answers are not sent yet.
    proc = plain.start(extra_env={"DEDUP_CRASH_AT": "abis.batch_partly_answered"})
    assert proc.wait(120) == CRASH_EXIT_CODE
    time.sleep(0.5)
    assert 1 <= sum(1 for i in ids if m.responses.get(i)) < len(ids)
    plain.start()
    assert all(d["returnValue"] == "1" for d in _answered_once(plain, ids))
    rows, size, names = _stored(plain)
    refs = [r for r, _ in rows]
    assert len(refs) == len(set(refs)) == size and sorted(names) == sorted(f"mosip-{r}" for r in refs)
    assert {f"ref-kbatch-{i}" for i in range(4)} <= set(refs)


def test_a_damaged_gallery_is_failure_1_and_an_expired_request_failure_2(plain: AbisEnv, faces: dict[str, np.ndarray]) -> None:
    """Fail closed: a gallery that cannot be verified answers "internal error" (1), never "no
    duplicate"; a request that waited in the broker past the TTL is answered "aborted" (2)."""
    m = plain.mosip
    assert m is not None
    answered = m.request("referenceCount")
    plain.stop()
    expiring = {"id": "mosip.abis.ping", "ver": "1.1", "requestId": str(uuid.uuid4()), "requesttime": now_time()}
    m.send(expiring)
    # A request answered before, delivered again as late: its stored answer, not "aborted".
    m.send({"id": "mosip.abis.referenceCount", "ver": "1.1", "requestId": answered["requestId"], "requesttime": now_time()})
    time.sleep(3.5)  # older than the TTL below when the consumer takes them
    from dedup.deployment import open_deployment

    root = plain.home / open_deployment(plain.home).settings.mosip.gallery_dir
    vectors = sorted(root.glob("shards/*/vectors.bin"))
    assert vectors
    saved = {p: p.read_bytes() for p in vectors}
    for p in vectors:  # one flipped byte in each shard's vectors (same size: only the hash can tell)
        flipped = bytearray(saved[p])
        flipped[len(flipped) // 2] ^= 0xFF
        p.write_bytes(bytes(flipped))
    try:
        plain.start(extra_env={"DEDUP_MOSIP_INBOUND_MESSAGE_TTL": "3"})
        assert m.wait(expiring["requestId"], 60)[0].get("failureReason") == "2"
        deadline = time.monotonic() + 30
        while len(m.responses[answered["requestId"]]) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [d for d, _ in m.responses[answered["requestId"]]] == [answered, answered]
        identify = m.request("identify", referenceId="ref-batch-c")
        assert identify["returnValue"] == "2" and identify["failureReason"] == "1" and "candidateList" not in identify
        by_url = m.request("identify", referenceURL=plain.cbeff_url(face_cbeff(faces["grace"])), timeout=120)
        assert by_url.get("failureReason") == "1"
        assert m.request("insert", referenceId="ref-damaged", referenceURL=plain.cbeff_url(face_cbeff(faces["grace"])),
                         timeout=120).get("failureReason") == "1"
        assert m.request("delete", referenceId="ref-batch-d").get("failureReason") == "1"
    finally:
        plain.stop()
        for p, original in saved.items():
            p.write_bytes(original)
    rows, _, _ = _stored(plain)
    assert "ref-damaged" not in {r for r, _ in rows} and "ref-batch-d" in {r for r, _ in rows}
