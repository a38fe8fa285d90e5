"""The supervisor page shows the gallery's health from the last `dedup gallery verify` (issue 11)."""

from __future__ import annotations

import re

from dedup.index.deployed import ensure_gallery, verify_gallery


def _row(html: str) -> str:
    m = re.search(r'<tr data-gallery="gallery">(.*?)</tr>', html, re.S)
    assert m, html
    return m.group(1)


def test_supervisor_page_shows_gallery_health(site) -> None:  # type: ignore[no-untyped-def]
    dep = site.dep
    ensure_gallery(dep, dep.gallery, "test-model", 8)
    sue, _ = site.login("sue")
    assert "never" in _row(sue.get("/supervisor").text)
    assert verify_gallery(dep, dep.gallery).ok
    row = _row(sue.get("/supervisor").text)
    assert "<td data-ok>ok</td>" in row and "UTC" in row
    (dep.gallery / "CURRENT").unlink()
    assert not verify_gallery(dep, dep.gallery).ok
    assert "DAMAGED: current_missing" in _row(sue.get("/supervisor").text)
