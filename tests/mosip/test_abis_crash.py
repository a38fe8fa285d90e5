"""A kill of `dedup abis serve` at any point loses and doubles nothing, as MOSIP sees it:
every requestId is answered exactly once, and no referenceId is stored twice. This module's
deployment reads plain CBEFF (``mosip.encryption = none``)."""

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
