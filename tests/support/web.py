"""Helpers for the web tests (their fixtures are in tests/web/conftest.py): the session's one
embedded PostgreSQL (tests/conftest.py), a deployment per test
module with a user of every role (web passwords set, centre API tokens made), real photos
submitted the way centres submit them, cases opened with the same store calls ``dedup run``
makes, and the app served by uvicorn over real HTTP on 127.0.0.1 and a free port."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import io
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from psycopg.rows import dict_row

from dedup.adjudication.cases import decide
from dedup.adjudication.queue import claim_next
from dedup.deployment import Deployment, init_deployment, open_deployment
from dedup.ingest.submit import submit_batch
from dedup.store.auth import create_token, set_password
from dedup.store.cases import NewCandidate, open_case
from dedup.store.centres import add_centre
from dedup.store.identities import issue_uin
from dedup.store.users import add_user, authenticate
from tests.support.pg import create_database

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output" / "web"
PASSWORD = "correct horse battery"
CAPTURED = dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.UTC)
# name -> role (centre users belong to C1 / C2)
PEOPLE = {"alice": "adjudicator", "bob": "adjudicator", "sue": "supervisor", "root": "admin", "c1": "centre", "c2": "centre"}





def web_photos() -> dict[str, bytes]:
    """Real photographs as JPEG bytes: two people (each twice: a second, re-framed capture) and a cat."""
    import matplotlib.cbook
    from PIL import Image
    from skimage import data

    from dedup.bench.demo import recapture

    def jpeg(img: Image.Image, quality: int = 90) -> bytes:
        out = io.BytesIO()
        img.convert("RGB").save(out, format="JPEG", quality=quality)
        return out.getvalue()

    astronaut = Image.fromarray(data.astronaut())
    hopper = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    return {"astronaut-1": jpeg(astronaut), "astronaut-2": jpeg(recapture(astronaut, 1), 75),
            "hopper-1": jpeg(hopper), "hopper-2": jpeg(recapture(hopper, 2), 75),
            "cat": jpeg(Image.fromarray(data.chelsea()))}

def manifest_bytes(rows: Sequence[tuple[str, str, str | bytes]]) -> bytes:
    """A Parquet manifest: (enrolment_id, centre_id, photo path or bytes) rows."""
    kind = pa.binary() if rows and isinstance(rows[0][2], bytes) else pa.string()
    table = pa.table({
        "enrolment_id": [r[0] for r in rows], "centre_id": [r[1] for r in rows],
        "captured_at": pa.array([CAPTURED] * len(rows), pa.timestamp("us", tz="UTC")),
        "photo": pa.array([r[2] for r in rows], kind),
        "sex": pa.array(["F"] * len(rows), pa.string()), "birth_year": pa.array([1970] * len(rows), pa.int32()),
        "region": pa.array(["north"] * len(rows), pa.string()),
    })
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


@dataclass
class Site:
    """A deployment with people, tokens and a running server."""

    dep: Deployment
    database_url: str
    base_url: str
    photos: dict[str, bytes]
    tokens: dict[str, str] = field(default_factory=dict)
    _batch: int = 0
    _clients: list[httpx.Client] = field(default_factory=list)

    def conn(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.database_url, autocommit=True, row_factory=dict_row)

    def client(self, base_url: str | None = None, **kw: Any) -> httpx.Client:
        """An HTTP client of the running server (closed when the module ends)."""
        client = httpx.Client(base_url=base_url or self.base_url, follow_redirects=False, timeout=30, **kw)
        self._clients.append(client)
        return client

    def close_clients(self) -> None:
        for client in self._clients:
            client.close()

    def login(self, name: str, base_url: str | None = None) -> tuple[httpx.Client, str]:
        """A client logged in as ``name`` and its session's CSRF token."""
        client = self.client(base_url)
        page = client.get("/login")
        token = _hidden(page.text, "csrf_token")
        r = client.post("/login", data={"username": name, "password": PASSWORD, "csrf_token": token, "next": "/"})
        assert r.status_code == 303, r.text
        return client, csrf_of(client)

    def open_cases(self, pairs: list[tuple[str, str]], top: float = 0.95, synthetic: bool = False) -> list[int]:
        """For each (probe photo, candidate photo): submit both, accept the candidate (a UIN), open a case.

        With ``synthetic`` each case also gets a synthetic gallery candidate (no photo).
        """
        self._batch += 1
        rows = []
        for i, (probe, cand) in enumerate(pairs):
            rows.append((f"W{self._batch}-{i}-C", "C1", self.photos[cand]))
            rows.append((f"W{self._batch}-{i}-P", "C1", self.photos[probe]))
        folder = Path(tempfile.mkdtemp(prefix="dedup-web-batch-"))
        try:
            path = folder / f"batch-{uuid.uuid4().hex[:8]}.parquet"
            path.write_bytes(manifest_bytes(rows))
            with self.conn() as conn:
                receipt, _ = submit_batch(self.dep, conn, authenticate(conn, "c1"), path)
                assert receipt.accepted == len(rows), receipt
                pks = {r["enrolment_id"]: r["enrolment_pk"] for r in conn.execute(
                    "SELECT enrolment_id, enrolment_pk FROM enrolments WHERE batch_id = %s", (receipt.batch_id,))}
                ids = []
                with conn.transaction():
                    for i in range(len(pairs)):
                        cand = pks[f"W{self._batch}-{i}-C"]
                        issue_uin(conn, cand, "test")
                        found = [NewCandidate(cand, cand, top - i / 1000, "gallery")]
                        if synthetic:
                            found.append(NewCandidate(50_000_000 + self._batch * 100 + i, None, 0.91, "gallery"))
                        ids.append(open_case(conn, pks[f"W{self._batch}-{i}-P"], found))
                # Oldest first: cases opened earlier than any left-over case of this module.
            return ids
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def clear_queue(self) -> None:
        """Decide every open case out of the way (as the supervisor, through the store)."""
        with self.conn() as conn:
            sue = authenticate(conn, "sue")
            conn.execute("UPDATE cases SET claimed_by = NULL, lease_until = NULL WHERE status = 'open'")
            conn.execute("UPDATE control_cases SET status = 'withdrawn' WHERE status = 'open'")
            while (got := claim_next(conn, sue, 60, control_rate=0.0)) is not None:
                decide(conn, sue, got, "recapture", None, "cleared by the test")


def _hidden(html: str, name: str) -> str:
    import re

    m = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert m, f"no hidden {name} in the page"
    return m.group(1)


def csrf_of(client: httpx.Client) -> str:
    """The CSRF token of a logged-in client (from the queue page's forms)."""
    return _hidden(client.get("/queue").text, "csrf_token")


class Server:
    """uvicorn serving an app in a thread, on 127.0.0.1 and a free port."""

    def __init__(self, dep: Deployment) -> None:
        import uvicorn

        from dedup.web.app import create_app
        from dedup.web.serve import bind

        self.sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        # lifespan on: the app closes its database pool when the server stops
        config = uvicorn.Config(create_app(dep), log_config=None, access_log=False, ws="none", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the web server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def make_deployment(pg_server: Any, root: Path, **web: Any) -> tuple[Deployment, str]:
    """A deployment on a fresh database, with people (passwords set) and centres C1, C2."""
    url = create_database(pg_server, prefix="w_")
    init_deployment(root / "dep", url, admin="root")
    dep = open_deployment(root / "dep")
    if web:
        dep = dataclasses.replace(dep, settings=dep.settings.replace("web", **web))
    with dep.database.session() as conn:
        admin = authenticate(conn, "root")
        add_centre(conn, admin, "C1", "Centre one")
        add_centre(conn, admin, "C2", "Centre two")
        for person, role in PEOPLE.items():
            if person != "root":
                add_user(conn, admin, person, role, {"c1": "C1", "c2": "C2"}.get(person))
            set_password(conn, admin, person, PASSWORD)
    return dep, url


@contextlib.contextmanager
def served_site(pg_server: Any, photos: dict[str, bytes], **sections: dict[str, Any]) -> Iterator[Site]:
    """A fresh deployment with people and centre tokens, served until the block ends.

    ``sections`` change settings, e.g. ``index={"train_size": 1000}``.
    """
    root = Path(tempfile.mkdtemp(prefix="dedup-web-dep-"))
    dep, url = make_deployment(pg_server, root)
    settings = dep.settings
    for section, changes in sections.items():
        settings = settings.replace(section, **changes)
    dep = dataclasses.replace(dep, settings=settings)
    server = Server(dep)
    s = Site(dep, url, server.url, photos)
    with dep.database.session() as conn:
        admin = authenticate(conn, "root")
        s.tokens = {"C1": create_token(conn, admin, "C1").text, "C2": create_token(conn, admin, "C2").text}
    try:
        yield s
    finally:
        s.close_clients()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


