"""Peak RSS of a real `dedup serve` while it takes hostile manifests (issue 12, Parquet bombs).

Makes a deployment on its own embedded PostgreSQL, starts `dedup serve` as a child process,
and posts each manifest below through the centres' API as a centre token, sampling the server
process's resident memory (psutil) every 5 ms from just before the request until its answer.

    python benchmarks/security/bench_hostile_manifest.py [--out benchmarks/security/results-hostile-manifest.json]

Manifests (built here, in a child process, before the server is measured):
- one-group: 60 rows of 10 MB zero photos in one row group, zstd 19 (the issue's attack);
- row-groups: the same 60 rows, one row group each;
- dictionary: 200 rows naming one 5 MB zero photo through a Parquet dictionary (1 GB stated once);
- largest-allowed: 25 rows of 10 MB zero photos in one row group (250 MB decoded: just under
  the default store.max_manifest_chunk_bytes of 256 MB, so it is read): the worst a manifest
  may make one submission hold;
- real: 20 real JPEG photos in the manifest (a normal batch, for comparison).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.support.hostile import PeakRss, write_bomb  # noqa: E402 - after the repository is on the path
from tests.support.manifests import manifest_table  # noqa: E402

MB = 1_000_000

def dedup(home: Path, *args: str, user: str = "admin", stdin: str | None = None) -> str:
    env = {**os.environ, "DEDUP_HOME": str(home), "DEDUP_USER": user}
    done = subprocess.run([sys.executable, "-m", "dedup.cli", *args], env=env, input=stdin, capture_output=True, text=True,
                          check=True, timeout=600, cwd=ROOT)
    return done.stdout


def real_manifest(path: Path, count: int) -> None:
    import pyarrow.parquet as pq
    from PIL import Image
    from skimage import data

    rows = []
    for i in range(count):
        img = Image.fromarray(data.astronaut()).rotate(i * 3)
        out = io.BytesIO()
        img.save(out, format="JPEG", quality=90)
        rows.append({"enrolment_id": f"REAL-{i}", "centre_id": "C1", "photo": out.getvalue()})
    pq.write_table(manifest_table(rows), path)


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_bytes": psutil.virtual_memory().total, "python": platform.python_version(),
            "load_average": os.getloadavg(), "pyarrow": __import__("pyarrow").__version__}


def measure(url: str, token: str, body: bytes, pid: int) -> dict[str, Any]:
    start = time.monotonic()
    with PeakRss(pid) as rss:
        r = httpx.post(f"{url}/api/v1/batches", content=body, timeout=600,
                       headers={"Authorization": f"Bearer {token}", "Content-Type": "application/vnd.apache.parquet"})
    seconds = time.monotonic() - start
    answer = r.json()
    return {"upload_bytes": len(body), "status": r.status_code, "seconds": round(seconds, 3), "rss_before": rss.base,
            "rss_peak": rss.peak, "rss_rise": rss.rise,
            "answer": answer.get("message") or {k: answer.get(k) for k in ("rows", "accepted", "rejected")}}


def served(home: Path, work: Any) -> Any:
    """Run ``work(url, pid)`` against a fresh `dedup serve` of ``home``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DEDUP_HOME": str(home)}
    server = subprocess.Popen([sys.executable, "-m", "dedup.cli", "serve", "--port", str(port)], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                httpx.get(f"{url}/login", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("dedup serve did not start") from None
                time.sleep(0.5)
        time.sleep(1.0)  # let start-up settle before the baseline is read
        return work(url, server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/security/results-hostile-manifest.json")
    parser.add_argument("--label", default="issue 12 fix", help="what code this run measured (kept in the report)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dedup-bench-security-"))
    home = root / "dep"
    files = {"one-group": (60, 10 * MB, 60, False), "row-groups": (60, 10 * MB, 1, False), "dictionary": (200, 5 * MB, 200, True),
             "largest-allowed": (25, 10 * MB, 25, False)}
    for name, (rows, size, group, dictionary) in files.items():
        write_bomb(root / f"{name}.parquet", rows, size, group, dictionary)
    real_manifest(root / "real.parquet", 20)
    dedup(root, "init", str(home))
    dedup(home, "centre", "add", "C1", "--name", "Centre one")
    dedup(home, "user", "add", "c1", "--role", "centre", "--centre", "C1")
    token = json.loads(dedup(home, "token", "create", "C1", "--json"))["token"]
    results = {}
    for name in ["real", *files]:  # a fresh server for each, so no case reuses memory another freed
        results[name] = served(home, lambda url, pid, name=name: measure(url, token, (root / f"{name}.parquet").read_bytes(), pid))
    report = {"benchmark": "peak RSS of dedup serve taking hostile manifests", "settings": "defaults", "label": args.label,
              "code": str(ROOT), "machine": machine(), "results": results}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, r in results.items():
        print(f"{name:16} {r['upload_bytes']:>9} B upload -> {r['status']} in {r['seconds']:.2f} s, RSS rise {r['rss_rise'] / MB:.0f} MB")


if __name__ == "__main__":
    main()
