"""How long the server works on a control case and on a real case, step by step.

A control that answered faster or slower than a real case could be recognised by timing
alone. This times the adjudication calls every web request and ``dedup queue`` command
makes (claim, case view, a photo read, decision) on a real embedded PostgreSQL, alternating
a control claim and a real claim so that the machine's load falls on both alike, and writes
the medians and 90th percentiles per step and kind. The HTTP layer in front is the same
code for both kinds, so it is left out.

    .venv/bin/python benchmarks/adjudication/control_timing.py --rounds 60 --out benchmarks/adjudication/results-control-timing.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def _photos() -> list[bytes]:
    import matplotlib.cbook
    from PIL import Image
    from skimage import data

    images = [Image.fromarray(data.astronaut()), Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)),
              Image.fromarray(data.chelsea()), Image.fromarray(data.coffee())]
    out = []
    for img in images:
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def _manifest(path: Path, rows: list[tuple[str, bytes]]) -> None:
    at = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    pq.write_table(pa.table({"enrolment_id": [r[0] for r in rows], "centre_id": ["C1"] * len(rows),
                             "captured_at": pa.array([at] * len(rows), pa.timestamp("us", tz="UTC")),
                             "photo": pa.array([r[1] for r in rows], pa.binary())}), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60, help="control claims (and as many real claims)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()

    from dedup.adjudication import cases, controls, queue
    from dedup.deployment import init_deployment, open_deployment
    from dedup.ingest.photos import photo_store
    from dedup.ingest.submit import submit_batch
    from dedup.store.cases import NewCandidate, open_case
    from dedup.store.centres import add_centre
    from dedup.store.db import stop_embedded
    from dedup.store.identities import issue_uin
    from dedup.store.users import add_user, authenticate

    root = Path(tempfile.mkdtemp(prefix="dedup-control-timing-"))
    home = root / "dep"
    try:
        init_deployment(home)
        dep = open_deployment(home)
        photos = _photos()
        n_cases = 2 * args.rounds + 4
        with dep.database.session() as conn:
            admin = authenticate(conn, "admin")
            add_centre(conn, admin, "C1")
            add_user(conn, admin, "c1", "centre", "C1")
            add_user(conn, admin, "sue", "supervisor")
            for i in range(2 * args.rounds):
                add_user(conn, admin, f"adj{i}", "adjudicator")
            rows = [(f"P{i}", photos[i % len(photos)]) for i in range(n_cases)] + [("ID", photos[0])]
            _manifest(root / "batch.parquet", rows)
            receipt, _ = submit_batch(dep, conn, authenticate(conn, "c1"), root / "batch.parquet")
            pks = {r["enrolment_id"]: r["enrolment_pk"] for r in conn.execute("SELECT enrolment_id, enrolment_pk FROM enrolments")}
            with conn.transaction():
                issue_uin(conn, pks["ID"], "bench")
                for i in range(n_cases):  # two candidates each, as the control's source has
                    open_case(conn, pks[f"P{i}"], [NewCandidate(pks["ID"], pks["ID"], 0.96, "gallery"),
                                                   NewCandidate(90_000_000 + i, None, 0.91, "gallery")])
            sue = authenticate(conn, "sue")
            source = queue.claim_next(conn, sue, 900, 0.0)
            assert source is not None
            uin = cases.show(conn, sue, source).candidates[0].identity
            cases.decide(conn, sue, source, "duplicate", uin)
            controls.add_from_case(conn, sue, source)

            store = photo_store(dep.store)
            times: dict[str, dict[str, list[float]]] = {k: {s: [] for s in ("claim", "view", "photo", "decide")}
                                                        for k in ("control", "real")}

            def timed(kind: str, step: str, call: Callable[[], Any]) -> Any:
                start = time.perf_counter()
                got = call()
                times[kind][step].append(time.perf_counter() - start)
                return got

            for r in range(args.rounds):
                pair = [("control", 1.0, f"adj{2 * r}"), ("real", 0.0, f"adj{2 * r + 1}")]
                for kind, rate, name in pair if r % 2 == 0 else pair[::-1]:  # each kind goes first in half the rounds
                    actor = authenticate(conn, name)
                    case_id = timed(kind, "claim", lambda a=actor, q=rate: queue.claim_next(conn, a, 900, q))
                    view = timed(kind, "view", lambda a=actor, c=case_id: cases.show(conn, a, c))
                    assert view.control == (kind == "control"), (kind, case_id)
                    timed(kind, "photo", lambda a=actor, c=case_id: cases.photo(conn, a, store, c, "1", "full"))
                    timed(kind, "decide", lambda a=actor, c=case_id: cases.decide_on_page(conn, a, c, "duplicate", "1", None, False))
        result: dict[str, Any] = {"rounds": args.rounds, "machine": f"{platform.processor() or platform.machine()}, "
                                  f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}",
                                  "load_average_1min": round(os.getloadavg()[0], 1), "ms": {}}
        for kind, steps in times.items():
            for step, values in steps.items():
                ordered = sorted(values)
                result["ms"][f"{kind}.{step}"] = {"median": round(1000 * statistics.median(ordered), 3),
                                                  "p90": round(1000 * ordered[int(0.9 * (len(ordered) - 1))], 3)}
        print(json.dumps(result, indent=2))
        if args.out is not None:
            args.out.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        stop_embedded(home)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
