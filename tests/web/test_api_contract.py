"""The centres' API against its committed OpenAPI schema (schemas/openapi.json): the running
app serves exactly that document, every operation is called over HTTP, and every response
body validates against the schema declared for its status."""

from __future__ import annotations

import dataclasses
import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from tests.support.web import ROOT, Server, Site, manifest_bytes

SCHEMA_FILE = ROOT / "schemas" / "openapi.json"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


class Contract:
    """Checks responses against the schema and remembers which (method, path, status) were seen."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.seen: set[tuple[str, str, str]] = set()

    def check(self, method: str, template: str, r: httpx.Response) -> Any:
        op = self.schema["paths"][template][method.lower()]
        status = str(r.status_code)
        assert status in op["responses"], f"{method} {template} answered {status}, not in the schema: {r.text[:300]}"
        content = op["responses"][status].get("content", {})
        assert "application/json" in content, f"{method} {template} {status} declares no JSON body"
        body = r.json()
        validator = Draft202012Validator({**content["application/json"]["schema"], "components": self.schema["components"]})
        errors = sorted(validator.iter_errors(body), key=str)
        assert not errors, f"{method} {template} {status}: {errors[0].message}"
        self.seen.add((method.lower(), template, status))
        return body


def test_the_committed_schema_is_what_the_running_app_serves(site: Site, schema: dict[str, Any]) -> None:
    served = site.client().get("/api/v1/openapi.json")
    assert served.status_code == 200
    assert served.json() == schema, "schemas/openapi.json is stale: run `python -m dedup.web.openapi`"
    from dedup.web.openapi import render

    assert SCHEMA_FILE.read_text(encoding="utf-8") == render()
    # only the API is described: the adjudicators' pages are not part of the contract
    assert all(path.startswith("/api/v1/") for path in schema["paths"])


def test_every_operation_against_the_schema(site: Site, schema: dict[str, Any]) -> None:
    contract = Contract(schema)
    c1 = {"Authorization": f"Bearer {site.tokens['C1']}"}
    c2 = {"Authorization": f"Bearer {site.tokens['C2']}"}
    client = site.client()

    # submit: a Parquet manifest with the photos inside it
    body = manifest_bytes([("API-1", "C1", site.photos["astronaut-1"]), ("API-2", "C1", b"not an image")])
    r = client.post("/api/v1/batches", content=body, headers={**c1, "Content-Type": "application/vnd.apache.parquet"})
    receipt = contract.check("POST", "/api/v1/batches", r)
    assert r.status_code == 201 and receipt["accepted"] == 1 and receipt["items"][1]["reason"] == "unreadable_image"
    again = client.post("/api/v1/batches", content=body, headers={**c1, "Content-Type": "application/octet-stream"})
    assert again.status_code == 200 and contract.check("POST", "/api/v1/batches", again) == receipt
    batch = receipt["batch_id"]

    # submit: multipart, the manifest naming photo files sent alongside it
    files = [("manifest", ("mine.parquet", manifest_bytes([("API-3", "C1", "photos/h.jpg"), ("API-4", "C1", "photos/gone.jpg")]),
                           "application/vnd.apache.parquet")),
             ("photos", ("photos/h.jpg", site.photos["hopper-1"], "image/jpeg"))]
    r = client.post("/api/v1/batches", files=files, headers=c1)
    multi = contract.check("POST", "/api/v1/batches", r)
    assert r.status_code == 201 and [i["status"] for i in multi["items"]] == ["accepted", "rejected"]
    assert multi["items"][1]["reason"] == "missing_photo"
    store = site.dep.store
    assert not any((store / "uploads").iterdir())  # the upload folder is gone after submission
    import hashlib

    assert (store / "photos" / hashlib.sha256(site.photos["hopper-1"]).hexdigest()[:2]).is_dir()

    # receipt and outcomes
    assert contract.check("GET", "/api/v1/batches/{batch_id}", client.get(f"/api/v1/batches/{batch}", headers=c1)) == receipt
    out = contract.check("GET", "/api/v1/batches/{batch_id}/outcomes", client.get(f"/api/v1/batches/{batch}/outcomes", headers=c1))
    assert [row["state"] for row in out["rows"]] == ["received", "rejected"]
    one = contract.check("GET", "/api/v1/enrolments/{enrolment_id}", client.get("/api/v1/enrolments/API-1", headers=c1))
    assert one["outcomes"][0]["state"] == "received" and one["outcomes"][0]["batch_id"] == batch

    # errors, each in the declared error shape
    for template, path in [("/api/v1/batches/{batch_id}", f"/api/v1/batches/{batch}"),
                           ("/api/v1/batches/{batch_id}/outcomes", f"/api/v1/batches/{batch}/outcomes")]:
        assert contract.check("GET", template, client.get(path))["error"] == "unauthenticated"
        assert contract.check("GET", template, client.get(path, headers=c2))["error"] == "not_found"  # as for a batch that does not exist
        missing = path.replace(batch, "b00000000000000000000")
        assert contract.check("GET", template, client.get(missing, headers=c1))["error"] == "not_found"
    enrol = "/api/v1/enrolments/{enrolment_id}"
    assert contract.check("GET", enrol, client.get("/api/v1/enrolments/API-1"))["error"] == "unauthenticated"
    assert contract.check("GET", enrol, client.get("/api/v1/enrolments/API-1", headers=c2))["error"] == "not_found"  # C2 sees C2 only
    post = "/api/v1/batches"
    assert contract.check("POST", post, client.post(post, content=b"PAR1 nope", headers={**c1, "Content-Type": "application/vnd.apache.parquet"}))["error"] == "bad_request"
    assert contract.check("POST", post, client.post(post, content=b"{}", headers={**c1, "Content-Type": "application/json"}))["error"] == "bad_request"
    evil = [("manifest", ("m.parquet", manifest_bytes([("API-5", "C1", "../x.jpg")]), "application/octet-stream")),
            ("photos", ("../x.jpg", site.photos["cat"], "image/jpeg"))]
    bad = contract.check("POST", post, client.post(post, files=evil, headers=c1))
    assert bad["error"] == "bad_request" and "relative path" in bad["message"]
    assert contract.check("POST", post, client.post(post, files=[("photos", ("a.jpg", b"x", "image/jpeg"))], headers=c1))["error"] == "bad_request"
    assert contract.check("POST", post, client.post(post, content=body))["error"] == "unauthenticated"
    taken = client.post(post, content=body, headers={**c2, "Content-Type": "application/vnd.apache.parquet"})
    assert contract.check("POST", post, taken)["error"] == "forbidden"  # C1's manifest: C2 gets no receipt of it
    assert not any((store / "uploads").iterdir())

    # over the upload limit: 413
    small = Server(dataclasses.replace(site.dep, settings=site.dep.settings.replace("web", max_upload_bytes=1024)))
    try:
        r = site.client(small.url).post(post, content=body, headers={**c1, "Content-Type": "application/vnd.apache.parquet"})
        assert r.status_code == 413 and contract.check("POST", post, r)["error"] == "too_large"
    finally:
        small.stop()

    # beyond web.uploads_per_token uploads in progress: 429; a body that stops coming: 408
    slow = Server(dataclasses.replace(site.dep, settings=site.dep.settings.replace("web", uploads_per_token=1, body_idle_timeout=3.0)))
    try:
        idle = _idle_upload(slow.url, c1)  # holds C1's one upload slot and sends nothing more
        try:
            time.sleep(0.5)
            r = site.client(slow.url).post(post, content=body, headers={**c1, "Content-Type": "application/vnd.apache.parquet"})
            assert r.status_code == 429 and contract.check("POST", post, r)["error"] == "too_many_requests"
            r = _raw_response(idle)
            assert r.status_code == 408 and contract.check("POST", post, r)["error"] == "timeout"
        finally:
            idle.close()
    finally:
        slow.stop()

    declared = {(method, path, status) for path, ops in schema["paths"].items() for method, op in ops.items()
                for status in op["responses"] if status != "422"}
    assert declared - contract.seen == set(), f"operations/statuses never exercised: {sorted(declared - contract.seen)}"


def _idle_upload(url: str, headers: dict[str, str]) -> socket.socket:
    """A socket that began a batch upload of 1 MB and sent only its first 4 bytes."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    lines = ["POST /api/v1/batches HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items()),
             "Content-Type: application/vnd.apache.parquet", "Content-Length: 1000000"]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\nPAR1").encode())
    return sock


def _raw_response(sock: socket.socket) -> httpx.Response:
    """The response the server sends on ``sock`` (it closes the connection after it)."""
    sock.settimeout(20)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *fields = head.decode("latin-1").split("\r\n")
    return httpx.Response(int(status.split()[1]), headers=[tuple(f.split(": ", 1)) for f in fields], content=body)


def test_schema_file_ships_with_the_package() -> None:
    import importlib.resources

    text = (importlib.resources.files("dedup.schemas") / "openapi.json").read_text(encoding="utf-8")
    assert json.loads(text)["info"]["title"] == "dedup centre API"
    assert Path(SCHEMA_FILE).exists()
