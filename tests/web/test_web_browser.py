"""The adjudicator's pages in a real headless Chromium (Debian's ``chromium`` driven by
Playwright): log in, take the next case, see both photos, decide with the keyboard, see the
queue shrink; blind mode. A screenshot of the case page is saved under test-output/web/."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.web import OUTPUT, PASSWORD, Server, Site

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def chromium_path() -> str:
    found = os.environ.get("DEDUP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("Chromium is not installed: `make test` installs Debian's chromium (apt-get install chromium)")
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page, 1280 px wide."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(15_000)
    pg = context.new_page()
    yield pg
    context.close()


def log_in(page: Any, base: str, name: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/queue$"))


def photos_loaded(page: Any, section: str) -> list[tuple[int, int]]:
    """(naturalWidth, rendered width) of every image of a candidate's section, once loaded."""
    page.wait_for_function(
        "s => Array.from(document.querySelectorAll(s + ' img')).every(i => i.complete)", arg=section)
    return page.eval_on_selector_all(f"{section} img", "imgs => imgs.map(i => [i.naturalWidth, i.getBoundingClientRect().width])")


def test_log_in_take_the_next_case_see_both_photos_decide_and_the_queue_shrinks(site: Site, page: Any) -> None:
    site.clear_queue()
    ids = site.open_cases([("astronaut-2", "astronaut-1"), ("hopper-2", "hopper-1")], synthetic=True)
    base = site.base_url
    page.goto(f"{base}/queue")
    assert page.locator("input[name=username]").is_visible()  # no session: the login form
    log_in(page, base, "alice")
    assert page.inner_text("#waiting") == "2"
    page.click("#next-case")
    page.wait_for_url(f"{base}/cases/{ids[0]}")
    # the new photo and the candidate's, same size side by side; full photos and aligned crops
    sizes = photos_loaded(page, "#pair-1")
    assert len(sizes) == 4 and all(natural > 0 for natural, _ in sizes)
    full_new, crop_new, full_cand, crop_cand = sizes
    assert full_new[1] == full_cand[1] and crop_new[1] == crop_cand[1]
    assert crop_new[0] == 150 and crop_cand[0] == 150
    assert "synthetic template, no photo" in page.inner_text("#pair-2")
    assert re.search(r"score 0\.9\d{3}", page.inner_text("#pair-1"))
    assert "different people would match" in page.inner_text("#pair-1")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    shot = OUTPUT / "case-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    # keyboard: 1 = duplicate of candidate 1, Enter records it
    page.keyboard.press("1")
    assert page.is_checked("input[data-key='1']")
    page.keyboard.press("Enter")
    page.wait_for_selector("#decision-summary")
    assert "Duplicate of candidate 1" in page.inner_text("#decision-summary")
    page.goto(f"{base}/queue")
    assert page.inner_text("#waiting") == "1"
    # n on the queue page takes the next case; d + Enter: distinct
    page.keyboard.press("n")
    page.wait_for_url(f"{base}/cases/{ids[1]}")
    page.keyboard.press("d")
    page.keyboard.press("Enter")
    page.wait_for_selector("#decision-summary")
    assert "Distinct" in page.inner_text("#decision-summary")
    page.goto(f"{base}/queue")
    assert page.inner_text("#waiting") == "0"
    with site.conn() as conn:
        got = conn.execute("SELECT case_id, decision, decided_by FROM cases WHERE case_id = ANY(%s) ORDER BY case_id", (ids,)).fetchall()
    assert [(r["decision"], r["decided_by"]) for r in got] == [("duplicate", "alice"), ("distinct", "alice")]


def test_keyboard_comment_recapture_and_release(site: Site, page: Any) -> None:
    site.clear_queue()
    [case_id] = site.open_cases([("hopper-2", "hopper-1")])
    base = site.base_url
    log_in(page, base, "bob")
    page.click("#next-case")
    page.wait_for_url(f"{base}/cases/{case_id}")
    page.keyboard.press("x")  # release: back to the queue, which has the case again
    page.wait_for_url(f"{base}/queue")
    assert page.inner_text("#waiting") == "1"
    page.keyboard.press("n")
    page.wait_for_url(f"{base}/cases/{case_id}")
    page.keyboard.press("r")
    page.keyboard.press("c")  # into the comment box: letters typed there are text, not shortcuts
    page.keyboard.type("eyes closed, redo")
    assert page.is_checked("input[data-key='r']")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("#decision-summary")
    assert "Recapture requested" in page.inner_text("#decision-summary") and "eyes closed, redo" in page.inner_text("#decision-summary")
    with site.conn() as conn:
        row = conn.execute("SELECT e.state, e.detail FROM cases c JOIN enrolments e USING (enrolment_pk) WHERE c.case_id = %s",
                           (case_id,)).fetchone()
    assert row["state"] == "recapture" and row["detail"] == "eyes closed, redo"


def test_blind_mode_hides_the_score_until_the_decision_then_shows_and_records_it(site: Site, page: Any) -> None:
    site.clear_queue()
    [case_id] = site.open_cases([("astronaut-2", "astronaut-1")], top=0.9512)
    server = Server(dataclasses.replace(site.dep, settings=site.dep.settings.replace("web", blind_mode=True)))
    try:
        base = server.url
        log_in(page, base, "alice")
        page.click("#next-case")
        page.wait_for_url(f"{base}/cases/{case_id}")
        text = page.inner_text("main")
        assert "Blind mode" in text and "0.9512" not in text and "score" not in page.inner_text("#pair-1 h2")
        assert page.locator("[data-score]").count() == 0 and page.locator("[data-meaning]").count() == 0
        assert all(natural > 0 for natural, _ in photos_loaded(page, "#pair-1"))  # the photos, first
        page.keyboard.press("1")
        page.keyboard.press("Enter")
        page.wait_for_selector("#decision-summary")
        assert "0.9512" in page.inner_text("#scores") and "hidden until this decision" in page.inner_text("#revealed-note")
        with site.conn() as conn:
            note = conn.execute("SELECT blind, top_score FROM web_decisions WHERE case_id = %s", (case_id,)).fetchone()
            shown = conn.execute("SELECT detail FROM audit WHERE action = 'case.score_shown' AND object_id = %s", (str(case_id),)).fetchone()
        assert note["blind"] and abs(note["top_score"] - 0.9512) < 1e-4
        assert shown["detail"]["after_decision"] == "duplicate"
    finally:
        server.stop()

