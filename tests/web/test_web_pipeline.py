"""From a centre's upload to an adjudicator's decision through the real pipeline: photos sent
to the API, ``dedup run``'s Runner on a tiny gallery (real faces, real embeddings, real
FAISS search), the case it opens shown and decided in the web app, the outcome read back
over the API. The other web tests build cases by hand for exact scores and synthetic
candidates; this one notices when the pipeline's cases stop fitting the web app."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dedup.pipeline import Runner
from dedup.store.users import SYSTEM
from tests.support.web import Site, manifest_bytes, served_site


@pytest.fixture(scope="module")
def piped(pg_server: Any, photos: dict[str, bytes]) -> Iterator[Site]:
    """A fresh deployment (small codec training, in-process face work: the machine is shared), served."""
    with served_site(pg_server, photos, index={"train_size": 1000}, face={"workers": 1}) as s:
        yield s


def _submit(site: Site, rows: list[tuple[str, str]]) -> str:
    body = manifest_bytes([(enrolment, "C1", site.photos[photo]) for enrolment, photo in rows])
    r = site.client().post("/api/v1/batches", content=body, headers={
        "Authorization": f"Bearer {site.tokens['C1']}", "Content-Type": "application/vnd.apache.parquet"})
    assert r.status_code == 201 and r.json()["accepted"] == len(rows), r.text
    return str(r.json()["batch_id"])


def _outcomes(site: Site, batch_id: str) -> dict[str, dict[str, Any]]:
    r = site.client().get(f"/api/v1/batches/{batch_id}/outcomes", headers={"Authorization": f"Bearer {site.tokens['C1']}"})
    assert r.status_code == 200, r.text
    return {row["enrolment_id"]: row for row in r.json()["rows"]}


def test_a_case_made_by_the_pipeline_is_shown_and_decided_in_the_web_app(piped: Site) -> None:
    first = _submit(piped, [("P-A1", "astronaut-1"), ("P-H1", "hopper-1")])
    report = Runner(piped.dep, SYSTEM).run(once=True)
    assert (report.accepted, report.cases) == (2, 0)
    known = _outcomes(piped, first)
    assert {k: v["state"] for k, v in known.items()} == {"P-A1": "accepted", "P-H1": "accepted"}

    second = _submit(piped, [("P-A2", "astronaut-2")])
    report = Runner(piped.dep, SYSTEM).run(once=True)
    assert (report.accepted, report.cases) == (0, 1)
    case_id = _outcomes(piped, second)["P-A2"]["case_id"]
    with piped.conn() as conn:
        [cand] = conn.execute("SELECT rank, score, found_in, synthetic FROM case_candidates WHERE case_id = %s", (case_id,)).fetchall()
    assert cand["rank"] == 0 and cand["found_in"] == "gallery" and not cand["synthetic"]

    alice, csrf = piped.login("alice")
    r = alice.post("/queue/next", data={"csrf_token": csrf})
    assert r.status_code == 303 and r.headers["location"] == f"/cases/{case_id}"
    page = alice.get(f"/cases/{case_id}").text
    assert "Candidate 1" in page and f"{cand['score']:.4f}" in page and "P-A1" not in page
    probe = alice.get(f"/cases/{case_id}/photos/probe/full")
    assert probe.status_code == 200 and probe.content == piped.photos["astronaut-2"]
    assert alice.get(f"/cases/{case_id}/photos/1/full").content == piped.photos["astronaut-1"]
    r = alice.post(f"/cases/{case_id}/decide", data={"csrf_token": csrf, "decision": "duplicate", "candidate": "1"})
    assert r.status_code == 303

    outcome = _outcomes(piped, second)["P-A2"]
    assert (outcome["state"], outcome["duplicate_of"]) == ("duplicate", known["P-A1"]["uin"])
