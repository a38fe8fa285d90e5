"""The supervisors' Accuracy page in a real headless Chromium: the deployment's own figures
(impostor tail with the threshold, FPIR against N, per-group FMR with intervals, live genuine
scores) as inline SVG, groups with too few pairs marked; adjudicators are refused. A
screenshot lands in test-output/web/accuracy-page.png."""

from __future__ import annotations

import io
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from dedup.adjudication.cases import decide
from dedup.adjudication.queue import claim_next
from dedup.evaluation import live as measure
from dedup.ingest.submit import submit_batch
from dedup.store.identities import issue_uin
from dedup.store.users import authenticate
from tests.support.manifests import manifest_table

from .test_web_browser import browser, log_in, page  # noqa: F401 - the module's Chromium fixtures

OUTPUT = Path(__file__).resolve().parents[2] / "test-output" / "web"
Site = Any  # tests/web/conftest.py's Site (the `site` fixture)

PEOPLE = 200


@pytest.fixture(scope="module")
def measured(site: Site) -> dict[str, Any]:
    """200 accepted identities (sex, birth year, region; one region of 3 people) with gallery
    templates, three decided duplicates, and one refresh of the figures."""
    from dedup.face.model import ModelSpec, model_id_for
    from dedup.pipeline import ensure_gallery, gallery_name, synthetic_sample

    folder = Path(tempfile.mkdtemp(prefix="dedup-web-acc-"))
    (folder / "cat.jpg").write_bytes(site.photos["cat"])
    photo = "cat.jpg"   # one file for every row (a path: the same bytes 200 times would look like a Parquet bomb)
    rows = [{"enrolment_id": f"A{i:03d}", "centre_id": "C1", "photo": photo, "sex": "FM"[i % 2], "birth_year": 1940 + i % 60,
             "region": "isles" if i < 3 else ("north" if i % 2 else "south")} for i in range(PEOPLE)]
    out = io.BytesIO()
    pq.write_table(manifest_table(rows), out)
    (folder / "batch.parquet").write_bytes(out.getvalue())
    dep = site.dep
    with site.conn() as conn:
        receipt, _ = submit_batch(dep, conn, authenticate(conn, "c1"), folder / "batch.parquet")
        pks = [r["enrolment_pk"] for r in conn.execute(
            "SELECT enrolment_pk FROM enrolments WHERE batch_id = %s ORDER BY enrolment_pk", (receipt.batch_id,))]
        with conn.transaction():
            for pk in pks:
                issue_uin(conn, pk, "test")
    spec = ModelSpec.from_settings(dep.settings.face)
    gallery = ensure_gallery(dep, model_id_for(spec), spec.output_dim, train_sample=synthetic_sample(spec.output_dim, 2000, seed=2))
    gallery.add(synthetic_sample(spec.output_dim, PEOPLE, seed=4), [gallery_name(pk) for pk in pks], model_id=gallery.model_id)
    site.clear_queue()
    cases = site.open_cases([("astronaut-2", "astronaut-1"), ("hopper-2", "hopper-1"), ("cat", "astronaut-1")], top=0.97)
    with site.conn() as conn:
        sue = authenticate(conn, "sue")
        for _ in cases:
            got = claim_next(conn, sue, 600, control_rate=0.0)
            uin = conn.execute("""SELECT e.uin FROM case_candidates k JOIN enrolments e USING (enrolment_pk)
                                  WHERE k.case_id = %s ORDER BY k.rank LIMIT 1""", (got,)).fetchone()["uin"]
            decide(conn, sue, got, "duplicate", uin)
        threshold, _ = measure.threshold_now(dep, conn, gallery.model_id, len(gallery))
        # measured at a lower threshold than the one in force, so that 200 people show false matches
        rid, sample = measure.refresh(dep, conn, gallery, 0.90, "root", np.random.default_rng(1))
    return {"refresh": rid, "pairs": sample.impostor.n_pairs, "threshold": threshold}


def test_the_accuracy_page_in_chromium(site: Site, measured: dict[str, Any], page: Any) -> None:  # noqa: F811
    base = site.base_url
    log_in(page, base, "sue")
    page.click("text=Accuracy")
    page.wait_for_url(f"{base}/supervisor/accuracy")
    assert page.title().startswith("Accuracy")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / "accuracy-page.png"), full_page=True)
    assert f"{measured['threshold']:.4f}" in page.inner_text("#threshold")
    assert f"{measured['pairs']:,}" in page.inner_text("#impostor")
    assert "measured at threshold 0.9000 (the threshold then)" in page.inner_text("main")
    # live FNIR: three decided duplicates, said to be too few
    assert "0 of 3 genuine pair(s)" in page.inner_text("#fnir")
    assert page.inner_text("#fnir-too-few").startswith("too few to estimate: 3 genuine pair(s)")
    # every plot is an inline SVG that the browser lays out
    for fig in ["#plot-genuine", "#plot-tail", "#plot-fpir", "#plot-groups-sex", "#plot-groups-birth_year", "#plot-groups-region"]:
        box = page.locator(f"{fig} svg").bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 60, fig
    assert page.locator("#plot-tail svg polyline").count() >= 1 and "threshold" in page.inner_text("#plot-tail")
    assert page.locator("#plot-groups-sex svg circle").count() == 3           # F, M and the cross-group pairs
    # the region of three people: listed and marked, not hidden
    isles = page.locator("#groups-region tr[data-group=isles]")
    assert isles.get_attribute("data-enough") == "0" and "too few pairs" in isles.inner_text()
    assert "too few pairs" in page.inner_text("#plot-groups-region")
    assert page.locator("#groups-sex tr[data-enough='1']").count() >= 2
    assert (OUTPUT / "accuracy-page.png").stat().st_size > 10_000


def test_adjudicators_do_not_see_the_accuracy_page(site: Site, measured: dict[str, Any], page: Any) -> None:  # noqa: F811
    log_in(page, site.base_url, "alice")
    assert page.locator("text=Accuracy").count() == 0               # no link in the menu
    response = page.goto(f"{site.base_url}/supervisor/accuracy")
    assert response.status == 403
    assert re.search(r"\d\.\d{4}", page.inner_text("main")) is None   # no figure leaks
