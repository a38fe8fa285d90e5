"""Inserts/s and identifies/s of MOSIP mode through a real ActiveMQ broker (issue 14).

    python benchmarks/abis/bench_abis.py --gallery-size 1000000 --requests 200

Stages: a deployment on the embedded PostgreSQL in a temporary folder; its MOSIP gallery
filled with N synthetic face-like templates (``dedup.synth``, the profile fitted to the
default dlib model), each registered as a MOSIP referenceId (``synth-<row>``) so
REFERENCE_COUNT and the threshold policy see a gallery of N; a private broker
(``dedup.mosip.localbroker``: Debian's ActiveMQ 5.17, STOMP); ``dedup abis serve`` as its
own process; the fake MOSIP of ``tests/support/mosip.py`` (datashare over HTTP with a JWT,
CBEFFs VER_R2-encrypted for a throw-away partner key, requests as JMS TextMessages).

Measured: M INSERTs sent at once, from the first send to the last response (each: fetch,
VER_R2 decrypt, CBEFF + ISO 19794-5 parse, JPEG2000 decode, face pipeline; per batch of
consecutive INSERTs: one model call, one gallery add with a new generation, one PostgreSQL
transaction; then each response + ack in its own broker transaction); then M IDENTIFYs by
referenceId (probe vector, threshold search of the whole gallery, PostgreSQL). Where the
time goes: the stage totals ``dedup abis serve --timings`` writes. The captures are real
photos (scikit-image's astronaut, matplotlib's Grace Hopper, a second capture of each); the
CBEFFs repeat, the referenceIds never do.

The search threshold is set to 0.957, the face-like profile's threshold for FPIR 1e-3 at 1M
(README "Accuracy"), as a calibrated deployment would have it: at dlib's own 0.908 every
probe of a 1M gallery is capped (README "gallery"). The machine is shared: load averages are
recorded. Results: ``benchmarks/abis/results/abis-<N>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def synthetic(n: int, dim: int, seed: int) -> Any:
    try:
        from dedup.bench.synth import SyntheticData, SynthSpec, get_profile
    except ImportError:
        from dedup.synth import SyntheticData, SynthSpec, get_profile  # type: ignore[no-redef]
    return SyntheticData(SynthSpec(get_profile("face-like", dim), gallery_size=n, queries=0, seed=seed))


def fill(dep: Any, n: int) -> dict[str, float]:
    """N synthetic templates into the MOSIP gallery, each a MOSIP reference."""
    from dedup.face import load_model
    from dedup.ids import mosip_gallery_name as gallery_name
    from dedup.mosip.handler import Handler
    from dedup.pipeline import ensure_gallery
    from dedup.store import mosip as store

    handler = Handler(dep, None, lambda u: b"", None)  # type: ignore[arg-type]
    model_id, dim = load_model(handler.face_settings).model_id, handler.face_settings.output_dim
    data = synthetic(n, dim, seed=5)
    t0 = time.perf_counter()
    first = next(data.blocks())
    gallery = ensure_gallery(dep, model_id, dim, train_sample=first.vectors[:50_000], root=handler.gallery_root)
    t_train = time.perf_counter() - t0
    pairs: list[tuple[str, int]] = []
    with gallery.writer(expected_rows=n) as writer:
        for block in data.blocks():
            refs = [f"synth-{r}" for r in block.row_ids.tolist()]
            rows = writer.add(block.vectors, [gallery_name(r) for r in refs])
            pairs += list(zip(refs, rows.tolist()))
    t_add = time.perf_counter() - t0 - t_train
    with dep.database.session() as conn:
        store.add_references_bulk(conn, pairs, "synthetic-fill")
    return {"train_s": round(t_train, 2), "add_s": round(t_add, 2),
            "register_s": round(time.perf_counter() - t0 - t_train - t_add, 2)}


def generation(dep: Any) -> int:
    """The MOSIP gallery's current generation number (read from its manifest)."""
    from dedup.index.gallery import Gallery

    return int(Gallery.open(dep.home / dep.settings.mosip.gallery_dir).manifest.generation)


def captures() -> list[np.ndarray]:
    import io

    import matplotlib.cbook
    import skimage.data
    from PIL import Image

    from tests.support import photos

    astro = np.ascontiguousarray(skimage.data.astronaut())
    astro2 = np.clip(photos.resize(astro[20:500, 10:480], 0.8).astype(np.int16) + 18, 0, 255).astype(np.uint8)
    grace_jpeg = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).read_bytes()
    grace = np.asarray(Image.open(io.BytesIO(grace_jpeg)).convert("RGB"))
    grace2 = np.ascontiguousarray(photos.resize(grace, 0.8))
    return [astro, np.ascontiguousarray(astro2), grace, grace2]


def send_all(mosip: Any, requests: list[dict[str, Any]], timeout: float) -> tuple[float, list[dict[str, Any]]]:
    start = time.perf_counter()
    for r in requests:
        mosip.send(r)
    out = [mosip.wait(r["requestId"], timeout)[0] for r in requests]
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gallery-size", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=200, help="INSERTs, then as many IDENTIFYs")
    ap.add_argument("--threshold", type=float, default=0.957)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "abis" / "results")
    ap.add_argument("--insert-batch", type=int, default=None,
                    help="mosip.insert_batch for the run (default: the setting's default; 1: no batching)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary deployment")
    args = ap.parse_args()

    from dedup.deployment import init_deployment, open_deployment
    from dedup.machine import machine_info
    from dedup.mosip.crypto import encrypt
    from dedup.mosip.localbroker import start_broker
    from tests.support.mosip import Datashare, Mosip, face_cbeff, make_partner, now_time

    root = Path(tempfile.mkdtemp(prefix="dedup-bench-abis-"))
    result: dict[str, Any] = {"benchmark": "abis", "gallery_size": args.gallery_size, "requests": args.requests,
                              "threshold": args.threshold, "insert_batch": args.insert_batch or "default (16)",
                              "machine": machine_info(), "load_avg": {}}
    broker = serve = share = mosip = None
    try:
        result["load_avg"]["start"] = os.getloadavg()
        home = root / "dep"
        init_deployment(home)
        share = Datashare().start()
        partner = make_partner(root)
        (home / "dedup.toml").open("a").write("\n".join([
            "", "[search]", f"threshold = {args.threshold}", "", "[mosip]", 'inbound_queue = "mosip-to-abis"',
            'outbound_queue = "abis-to-mosip"', f'auth_url = "{share.auth_url}"', 'client_id = "mosip-abis-client"',
            'secret_key = "s3cret"', 'encryption = "mosip-v1.2"', f'p12_path = "{partner.p12}"',
            f'p12_password = "{partner.password}"'] + ([f"insert_batch = {args.insert_batch}"] if args.insert_batch else [])
            + [""]))
        dep = open_deployment(home)
        t = time.perf_counter()
        result["fill"] = fill(dep, args.gallery_size)
        result["fill"]["total_s"] = round(time.perf_counter() - t, 1)
        print(f"gallery of {args.gallery_size:,} filled: {result['fill']}", flush=True)
        broker = start_broker(root / "broker")
        result["broker_start_s"] = round(broker.started_in, 2)
        with (home / "dedup.toml").open("a") as fh:
            fh.write(f'broker_url = "{broker.url}"\n')
        timings = root / "timings.json"
        log = open(root / "serve.log", "wb")  # noqa: SIM115 - the serve process writes it until the end
        t = time.perf_counter()
        serve = subprocess.Popen([sys.executable, "-m", "dedup.cli", "abis", "serve", "--home", str(home), "--user", "admin",
                                  "--timings", str(timings)], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        while b"connected to" not in (root / "serve.log").read_bytes():
            if serve.poll() is not None:
                raise SystemExit("dedup abis serve exited:\n" + (root / "serve.log").read_text()[-3000:])
            time.sleep(0.2)
        mosip = Mosip(broker.stomp_port, "mosip-to-abis", "abis-to-mosip")
        docs = [share.put(encrypt(face_cbeff(c), partner.public_key, partner.cert_der)) for c in captures()]
        result["cbeff_bytes"] = [len(share.bodies[u.rsplit("/", 1)[1]]) for u in docs]

        def insert(i: int) -> dict[str, Any]:
            return {"id": "mosip.abis.insert", "ver": "1.1", "requestId": str(uuid.uuid4()), "requesttime": now_time(),
                    "referenceId": f"bench-{i}", "referenceURL": docs[i % len(docs)]}

        def identify(i: int) -> dict[str, Any]:
            return {"id": "mosip.abis.identify", "ver": "1.1", "requestId": str(uuid.uuid4()), "requesttime": now_time(),
                    "referenceId": f"bench-{i}", "referenceUrl": "", "gallery": None,
                    "flags": {"maxResults": "30", "targetFPIR": "30"}}

        warm, _ = send_all(mosip, [insert(i) for i in range(4)] + [identify(i) for i in range(4)], 600)
        result["warmup_s"] = round(time.perf_counter() - t, 1)
        result["load_avg"]["before_inserts"] = os.getloadavg()
        import psutil

        proc = psutil.Process(serve.pid)

        def cpu() -> float:
            t = proc.cpu_times()
            return float(t.user + t.system + t.children_user + t.children_system)

        m = args.requests
        c0 = cpu()
        g0 = generation(dep)
        secs, out = send_all(mosip, [insert(i) for i in range(4, 4 + m)], 1800)
        assert all(r["returnValue"] == "1" for r in out), [r for r in out if r["returnValue"] != "1"][:3]
        c1 = cpu()
        # Consecutive INSERTs are batched (dedup.mosip.consumer): one gallery generation per batch.
        result["inserts"] = {"n": m, "seconds": round(secs, 2), "per_second": round(m / secs, 2),
                             "serve_cpu_s": round(c1 - c0, 2), "per_cpu_second": round(m / max(c1 - c0, 1e-9), 2),
                             "gallery_generations": generation(dep) - g0}
        print(f"inserts: {result['inserts']}", flush=True)
        result["load_avg"]["before_identifies"] = os.getloadavg()
        secs, out = send_all(mosip, [identify(i) for i in range(4, 4 + m)], 1800)
        c2 = cpu()
        assert all(r["returnValue"] == "1" for r in out)
        counts = [int(r["candidateList"]["count"]) for r in out]
        real = [sum(1 for c in r["candidateList"]["candidates"] if c["referenceId"].startswith("bench-")) for r in out]
        result["identifies"] = {"n": m, "seconds": round(secs, 2), "per_second": round(m / secs, 2),
                                "serve_cpu_s": round(c2 - c1, 2), "per_cpu_second": round(m / max(c2 - c1, 1e-9), 2),
                                "candidates_mean": round(float(np.mean(counts)), 2),
                                "real_mates_min": int(min(real)),
                                "synthetic_candidates_mean": round(float(np.mean(counts) - np.mean(real)), 3)}
        print(f"identifies: {result['identifies']}", flush=True)
        result["load_avg"]["end"] = os.getloadavg()
        serve.send_signal(signal.SIGTERM)
        serve.wait(120)
        result["serve_stages"] = json.loads(timings.read_text())["stages"]
        result["token_requests"] = share.auth_calls
    finally:
        if serve is not None and serve.poll() is None:
            serve.kill()
        if mosip is not None:
            mosip.close()
        if broker is not None:
            broker.stop()
        if share is not None:
            share.stop()
        from dedup.store.db import stop_embedded

        stop_embedded(root / "dep")
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    tag = "" if args.insert_batch is None else f"-batch{args.insert_batch}"
    path = args.out / f"abis-{args.gallery_size}{tag}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
