"""Attacks on the server's memory, connections and CPU, through real HTTP against a running
server on the real PostgreSQL: Parquet bombs (the server's RSS is measured with psutil while it
takes them), 100 idle uploads from one centre token, malformed uploads and a database that went
away (no server path, no connection string in the answer), and crops of a 36-megapixel photo.

Large inputs are built in a child process, so that their memory is not the server's (the
server runs in this process, in a thread)."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.support.cli import Cli
from tests.support.hostile import PeakRss, write_bomb
from tests.support.web import Site, served_site

MB = 1_000_000
POOL = 6

BIG_PHOTO = """
import sys
from PIL import Image
from skimage import data
Image.fromarray(data.astronaut()).resize((6000, 6000), Image.BICUBIC).save(sys.argv[1], format="JPEG", quality=85)
"""


def _in_child(script: str, *args: str) -> None:
    subprocess.run([sys.executable, "-c", script, *args], check=True, timeout=300)


@pytest.fixture(scope="module")
def limited(pg_server: Any, photos: dict[str, bytes]) -> Iterator[Site]:
    with served_site(pg_server, photos, web={"uploads_per_token": 2, "body_idle_timeout": 4.0, "db_pool_size": POOL,
                                             "db_reserved_connections": 10}) as s:
        yield s


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """60 rows of 10 MB zero photos, zstd level 19: in one row group, and one row per row group."""
    root = tmp_path_factory.mktemp("bombs")
    return {"one-group": write_bomb(root / "one.parquet", 60, 10 * MB, 60), "row-groups": write_bomb(root / "many.parquet", 60, 10 * MB, 1)}


def _post(site: Site, body: bytes, token: str = "C1", **kw: Any) -> Any:
    api = site.client(headers={"Authorization": f"Bearer {site.tokens[token]}"})
    return api.post("/api/v1/batches", content=body, headers={"Content-Type": "application/vnd.apache.parquet"}, **kw)


def test_a_parquet_bomb_is_refused_from_its_metadata_and_the_server_stays_small(limited: Site, bombs: dict[str, Path]) -> None:
    body = bombs["one-group"].read_bytes()
    assert len(body) < 64_000  # a few KB that claim 600 MB
    with PeakRss() as rss:
        r = _post(limited, body)
    assert r.status_code == 400, r.text
    message = r.json()["message"]
    assert "row group 0 holds 600000" in message and "store.max_manifest_chunk_bytes" in message
    assert rss.rise < 100 * MB, f"the server grew by {rss.rise / MB:.0f} MB"
    # the same file through `dedup submit` is refused the same way
    path = bombs["one-group"]
    result = Cli(limited.dep.home).run("submit", str(path), user="c1", code=2)
    assert "store.max_manifest_chunk_bytes" in result.stderr + result.stdout


def test_a_bomb_in_small_row_groups_is_read_one_group_at_a_time(limited: Site, bombs: dict[str, Path]) -> None:
    body = bombs["row-groups"].read_bytes()
    with PeakRss() as rss:
        r = _post(limited, body)
    assert r.status_code == 201, r.text
    receipt = r.json()
    assert receipt["rows"] == 60 and receipt["accepted"] == 0
    assert {item["reason"] for item in receipt["items"]} == {"unreadable_image"}
    assert rss.rise < 150 * MB, f"the server grew by {rss.rise / MB:.0f} MB"


def test_a_dictionary_bomb_is_held_once_not_once_per_row(limited: Site, tmp_path: Path) -> None:
    rows = 200
    body = write_bomb(tmp_path / "dictionary.parquet", rows, 5 * MB, rows, dictionary=True).read_bytes()
    with PeakRss() as rss:
        r = _post(limited, body)
    assert r.status_code == 201, r.text
    assert r.json()["rejected"] == rows
    assert rss.rise < 150 * MB, f"the server grew by {rss.rise / MB:.0f} MB for 1 GB of photos stated once"


def _connections(site: Site) -> int:
    with site.conn() as conn:
        return int(conn.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()").fetchone()["n"]) - 1


def test_a_hundred_idle_uploads_leave_pages_logins_and_the_cli_working(limited: Site) -> None:
    host, port = limited.base_url.removeprefix("http://").split(":")
    head = (f"POST /api/v1/batches HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {limited.tokens['C1']}\r\n"
            "Content-Type: application/vnd.apache.parquet\r\nContent-Length: 1000000\r\n\r\nPAR1").encode()
    idle = []
    try:
        for _ in range(100):
            s = socket.create_connection((host, int(port)))
            s.sendall(head)
            idle.append(s)
        answers: dict[int, bytes] = {}
        deadline = time.monotonic() + 30
        while len(answers) < 98 and time.monotonic() < deadline:
            for i, s in enumerate(idle):
                if i in answers:
                    continue
                s.settimeout(0.01)
                try:
                    got = s.recv(4096)
                except TimeoutError:
                    continue
                answers[i] = got
        # beyond web.uploads_per_token (2) the token's uploads are refused at once
        assert len(answers) == 98 and all(a.startswith(b"HTTP/1.1 429") for a in answers.values()), set(answers.values())
        # ... and the two that hold a slot hold no database connection while they idle
        assert _connections(limited) <= POOL
        start = time.monotonic()
        alice, _ = limited.login("alice")
        page = alice.get("/queue")
        assert page.status_code == 200 and time.monotonic() - start < 2.0
        listed = Cli(limited.dep.home).json("user", "list", user="root")  # the CLI connects too
        assert any(u["name"] == "alice" for u in listed)
        # the idle two are cut off after web.body_idle_timeout (4 s)
        waiting = [s for i, s in enumerate(idle) if i not in answers]
        for s in waiting:
            s.settimeout(15)
            assert s.recv(4096).startswith(b"HTTP/1.1 408")
    finally:
        for s in idle:
            s.close()
    r = _post(limited, b"not parquet")  # the slots are free again
    assert r.status_code == 400


def test_malformed_uploads_do_not_show_server_paths(limited: Site) -> None:
    home = str(limited.dep.home)
    api = limited.client(headers={"Authorization": f"Bearer {limited.tokens['C1']}"})
    answers = [
        _post(limited, b"PAR1 this is not a parquet file PAR1"),
        api.post("/api/v1/batches", files={"manifest": ("manifest.parquet", b"garbage")}),
        api.post("/api/v1/batches", files={"manifest": ("manifest.parquet", b"PAR1" + bytes(100) + b"PAR1")}),
    ]
    for r in answers:
        assert r.status_code == 400, r.text
        message = r.json()["message"]
        assert home not in message and "/tmp" not in message and "uploads" not in message and "up-" not in message, message
        assert "not a readable Parquet file" in message


def test_when_the_database_is_gone_visitors_are_not_shown_its_address(pg_server: Any, photos: dict[str, bytes]) -> None:
    with served_site(pg_server, photos, web={"db_pool_timeout": 2.0}) as site:
        with site.conn() as conn:
            name = conn.execute("SELECT current_database() AS d").fetchone()["d"]
        with psycopg_admin(pg_server) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        try:
            page = site.client().get("/queue")
            api = site.client(headers={"Authorization": f"Bearer {site.tokens['C1']}"}).get("/api/v1/batches/b1")
            for r in (page, api):
                assert r.status_code == 503, r.text
                for secret in ("dbname", "host=", "user=", "postgres", name, "/tmp"):
                    assert secret not in r.text, (secret, r.text)
            assert "not available" in page.text or "busy" in page.text
        finally:
            with psycopg_admin(pg_server) as admin:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def psycopg_admin(pg_server: Any) -> Any:
    import psycopg

    return psycopg.connect(pg_server.get_uri("postgres"), autocommit=True)


def test_crops_of_a_huge_photo_are_cut_from_a_bounded_decode(limited: Site, tmp_path: Path) -> None:
    big = tmp_path / "big.jpg"
    _in_child(BIG_PHOTO, str(big))
    limited.photos = {**limited.photos, "big": big.read_bytes()}
    limited.clear_queue()
    [case] = limited.open_cases([("big", "astronaut-1")])
    alice, csrf = limited.login("alice")
    assert alice.post("/queue/next", data={"csrf_token": csrf}).headers["location"] == f"/cases/{case}"
    assert alice.get(f"/cases/{case}/photos/1/crop").status_code == 200  # loads the face models first (not measured)
    with PeakRss() as rss:
        crop = alice.get(f"/cases/{case}/photos/probe/crop")
    assert crop.status_code == 200 and Image.open(io.BytesIO(crop.content)).size == (150, 150)
    # 6000 x 6000 RGB is 108 MB decoded (twice that while Pillow's copy lives); web.crop_max_pixels
    # (4 MP) decodes it at half scale (27 MB) and shrinks it to 12 MB
    assert rss.rise < 80 * MB, f"the server grew by {rss.rise / MB:.0f} MB for one crop"
    # a burst of crops is served by web.crop_workers at once, and every one is answered
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(alice.get(f"/cases/{case}/photos/probe/crop").status_code))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == [200] * 4
