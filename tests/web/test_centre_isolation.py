"""Centres are kept apart (issue 12: Broken 6 and the batch lock), over real HTTP.

Before: C2 submitted a row naming C1's centre and C1's token then read C2's row, its batch id
and user name, because the status lookup trusted the ``centre_id`` typed in the manifest;
and one lock shared by every centre let one centre's large batch hold up everyone's.
"""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import httpx
import pytest
from PIL import Image

from dedup.store.locks import lock_submissions
from tests.support.manifests import manifest_bytes
from tests.support.web import Site

PARQUET = "application/vnd.apache.parquet"


def _submit(site: Site, centre: str, rows: list[tuple[str, str, bytes]], timeout: float = 120) -> httpx.Response:
    with httpx.Client(base_url=site.base_url, timeout=timeout) as client:
        return client.post("/api/v1/batches", content=manifest_bytes(rows),
                           headers={"Authorization": f"Bearer {site.tokens[centre]}", "Content-Type": PARQUET})


def _status(site: Site, centre: str, enrolment_id: str) -> httpx.Response:
    return site.client().get(f"/api/v1/enrolments/{enrolment_id}", headers={"Authorization": f"Bearer {site.tokens[centre]}"})


def test_a_row_naming_another_centre_is_refused_and_stays_the_senders(site: Site) -> None:
    r = _submit(site, "C2", [("PLANT-1", "C1", site.photos["cat"]), ("C2-OWN-1", "C2", site.photos["hopper-1"])])
    assert r.status_code == 201, r.text
    receipt = r.json()
    planted, own = receipt["items"]
    assert planted["status"] == "rejected" and planted["reason"] == "centre_not_permitted" and own["status"] == "accepted"

    # C1 is not told about C2's row: not its batch id, not who sent it
    seen = _status(site, "C1", "PLANT-1")
    assert seen.status_code == 404 and seen.json()["error"] == "not_found"
    assert receipt["batch_id"] not in seen.text and "c2" not in seen.text.lower()
    assert _status(site, "C1", "C2-OWN-1").status_code == 404
    # C2 sees why its row was refused
    mine = _status(site, "C2", "PLANT-1")
    assert mine.status_code == 200
    [row] = mine.json()["outcomes"]
    assert row["batch_id"] == receipt["batch_id"] and row["state"] == "rejected" and row["reason"] == "centre_not_permitted"

    # C1's own enrolment of that id is received (the planted row did not take it) and is the only one C1 sees
    r = _submit(site, "C1", [("PLANT-1", "C1", site.photos["astronaut-1"])])
    assert r.status_code == 201 and r.json()["items"][0]["status"] == "accepted"
    [ours] = _status(site, "C1", "PLANT-1").json()["outcomes"]
    assert ours["batch_id"] == r.json()["batch_id"] and ours["state"] == "received"
    [theirs] = _status(site, "C2", "PLANT-1").json()["outcomes"]
    assert theirs["batch_id"] == receipt["batch_id"] and theirs["state"] == "rejected"
    with site.conn() as conn:  # and the lookups were audited
        assert conn.execute("SELECT count(*) AS n FROM audit WHERE action = 'enrolment.status' AND object_id = 'PLANT-1'"
                            ).fetchone()["n"] == 4


def test_ids_with_direction_overrides_are_refused(site: Site) -> None:
    sneaky = "E\u202e1gpj"
    r = _submit(site, "C1", [(sneaky, "C1", site.photos["cat"])])
    assert r.status_code == 201 and r.json()["items"][0]["reason"] == "bad_value"
    r = _status(site, "C1", sneaky)
    assert r.status_code == 400 and "bidirectional control character (U+202E)" in r.json()["message"]
    from dedup.errors import InvalidParameter
    from dedup.store.centres import add_centre
    from dedup.store.users import add_user, authenticate

    with site.conn() as conn:
        admin = authenticate(conn, "root")
        for make in (lambda: add_centre(conn, admin, "C\u202e9"), lambda: add_user(conn, admin, "ana\u2066", "adjudicator")):
            with pytest.raises(InvalidParameter, match="bidirectional control character"):
                make()


def test_a_centre_waits_only_for_its_own_centres_batches(site: Site) -> None:
    """C1's lock held: C2's batch goes through at once, C1's next batch waits for it."""
    results: dict[str, Any] = {}
    with site.conn() as conn, conn.transaction():
        lock_submissions(conn, None, {"C1"})
        started = time.monotonic()
        r = _submit(site, "C2", [("LOCK-C2", "C2", site.photos["cat"])], timeout=30)
        assert r.status_code == 201 and r.json()["accepted"] == 1
        assert time.monotonic() - started < 25
        waiter = threading.Thread(target=lambda: results.update(c1=_submit(site, "C1", [("LOCK-C1", "C1", site.photos["cat"])])))
        waiter.start()
        waiter.join(3.0)
        assert waiter.is_alive() and "c1" not in results  # held up by C1's own lock
    waiter.join(60)
    assert results["c1"].status_code == 201 and results["c1"].json()["accepted"] == 1


def _small_photo(site: Site) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(site.photos["astronaut-1"])).resize((96, 96)).save(out, format="JPEG", quality=80)
    return out.getvalue()


def test_a_large_batch_of_one_centre_does_not_delay_another_centres_small_one(site: Site) -> None:
    """The attack as reported: a big batch from one centre, then a one-row batch from another."""
    photo, n = _small_photo(site), 3000
    big_rows = [(f"BIG-{i}", "C1", photo) for i in range(n)]
    done: dict[str, float] = {}

    def big() -> None:
        start = time.monotonic()
        done["status"] = float(_submit(site, "C1", big_rows, timeout=600).status_code)
        done["big_s"] = time.monotonic() - start

    with site.conn() as conn:
        me = conn.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"]
        thread = threading.Thread(target=big)
        thread.start()
        deadline = time.monotonic() + 120
        # wait until the big batch is inside its locked section
        while conn.execute("""SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> %s
                              AND database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
                           (me,)).fetchone()["n"] == 0:
            assert thread.is_alive() and time.monotonic() < deadline, "the big batch never took its lock"
            time.sleep(0.01)
    start = time.monotonic()
    r = _submit(site, "C2", [("SMALL-C2", "C2", site.photos["cat"])])
    small_s = time.monotonic() - start
    big_running = thread.is_alive()
    thread.join(600)
    print(f"\nbig batch ({n} rows): {done['big_s']:.2f} s; one-row batch of another centre meanwhile: {small_s:.2f} s")
    assert r.status_code == 201 and done["status"] == 201
    assert big_running, f"the one-row batch ({small_s:.2f} s) finished only after the {n}-row batch ({done['big_s']:.2f} s)"


def test_another_centres_batch_answers_as_a_batch_that_does_not_exist(site: Site) -> None:
    r = _submit(site, "C1", [("ENUM-1", "C1", site.photos["cat"])])
    assert r.status_code == 201
    batch = r.json()["batch_id"]
    nowhere = "b" + "0" * 20
    c2 = {"Authorization": f"Bearer {site.tokens['C2']}"}
    for route in ("/api/v1/batches/{}", "/api/v1/batches/{}/outcomes"):
        theirs, missing = (site.client().get(route.format(b), headers=c2) for b in (batch, nowhere))
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json()["message"].replace(batch, "X") == missing.json()["message"].replace(nowhere, "X")
    with site.conn() as conn:
        refused = conn.execute("SELECT actor FROM audit WHERE action = 'batch.refused' AND object_id = %s", (batch,)).fetchall()
    assert [r["actor"] for r in refused] == ["c2", "c2"]
