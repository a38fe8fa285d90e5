"""Enrolments per second through ``dedup run`` against a large gallery (issue 4's benchmark).

    python benchmarks/system/bench_run.py --gallery-size 100000 --captures 512
    python benchmarks/system/bench_run.py --gallery-size 1000000 --captures 512

Stages: create a deployment (embedded PostgreSQL) in a temporary folder; fill its gallery
with N synthetic face-like templates (``dedup.pipeline.fill_synthetic``, what ``dedup demo
--gallery-size`` uses); submit one batch of M real-photo captures; time ``dedup run --once``
(the library call behind the command, in this process, so each step can be timed); write
the results JSON to ``benchmarks/results/`` and delete the deployment (photos and templates
never leave it; nothing biometric is printed or written to the results).

Captures: no installed package ships two photographs of one person, so the real faces are
scikit-image's ``astronaut`` and matplotlib's ``grace_hopper``, each captured again and again
(random crop, rotation, scale, exposure, contrast, mirror, JPEG quality), plus the faces of
scikit-image's ``lfw_subset`` (25 x 25 px) upscaled, which the quality checks may reject:
the outcome of every source is counted. Because the real captures are of two people, all
but the first capture of each become adjudication cases: the database does more work per
enrolment (a case and up to ``max_candidates`` candidate rows) than for a new person.

The machine is shared: the load average is recorded before the fill, before the run and
after it. Timings under load are pessimistic.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CENTRE = "BENCH-1"


def machine() -> dict[str, Any]:
    """CPU model and cores (``lscpu``), Python and library versions."""
    info: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                            "cpus_usable": len(os.sched_getaffinity(0))}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)", "Thread(s) per core", "Hypervisor vendor"):
                info[key.strip()] = value.strip()
    except (OSError, subprocess.SubprocessError):
        info["lscpu"] = "unavailable"
    try:
        import faiss
        import torch

        info["torch"], info["faiss"] = torch.__version__, faiss.__version__
    except ImportError:
        pass
    info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return info


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --------------------------------------------------------------------------- captures


def capture(image: Any, rng: np.random.Generator) -> Any:
    """Another capture of the same face: framing, rotation, scale, exposure, contrast, mirror."""
    from PIL import Image, ImageEnhance, ImageOps

    w, h = image.size
    left, top = (int(rng.uniform(0, 0.08) * w) for _ in range(2))
    right, bottom = (int(rng.uniform(0, 0.08) * w) for _ in range(2))
    out = image.crop((left, top, w - right, h - bottom))
    if rng.random() < 0.5:
        out = ImageOps.mirror(out)
    out = out.rotate(float(rng.uniform(-8, 8)), resample=Image.BICUBIC)
    scale = float(rng.uniform(0.75, 1.0))
    out = out.resize((int(out.width * scale), int(out.height * scale)), Image.LANCZOS)
    out = ImageEnhance.Brightness(out).enhance(float(rng.uniform(0.85, 1.15)))
    return ImageEnhance.Contrast(out).enhance(float(rng.uniform(0.85, 1.15)))


def write_captures(folder: Path, n: int, seed: int) -> tuple[Path, dict[str, int]]:
    """A batch folder of ``n`` captures (astronaut, grace_hopper, lfw_subset upscaled) and its manifest."""
    import matplotlib.cbook
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(seed)
    photos = folder / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    bases = {"A": Image.fromarray(data.astronaut()),
             "G": Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")}
    lfw = data.lfw_subset()[:100]          # the first 100 are faces, the rest are not
    n_lfw = min(len(lfw), n // 8)
    sources = ["L"] * n_lfw + ["A", "G"] * ((n - n_lfw) // 2) + ["A"] * ((n - n_lfw) % 2)
    rng.shuffle(sources)
    rows, counts = [], {"A": 0, "G": 0, "L": 0}
    for i, src in enumerate(sources):
        name = f"{src}-{i:06d}.jpg"
        if src == "L":
            face = Image.fromarray((lfw[counts["L"]] * 255).astype(np.uint8)).convert("RGB")
            face.resize((250, 250), Image.BICUBIC).save(photos / name, quality=90)
        else:
            capture(bases[src], rng).save(photos / name, quality=int(rng.integers(60, 96)))
        counts[src] += 1
        rows.append((f"{src}-{i:06d}", f"photos/{name}"))
    when = dt.datetime(2024, 6, 1, 9, 0, tzinfo=dt.UTC)
    pq.write_table(pa.table({
        "enrolment_id": [r[0] for r in rows], "centre_id": [CENTRE] * len(rows),
        "captured_at": pa.array([when + dt.timedelta(seconds=i) for i in range(len(rows))], pa.timestamp("us", tz="UTC")),
        "photo": [r[1] for r in rows]}), folder / "manifest.parquet")
    return folder / "manifest.parquet", {"astronaut": counts["A"], "grace_hopper": counts["G"], "lfw_subset_upscaled": counts["L"]}


# --------------------------------------------------------------------------- the timed run


def timed_runner_class() -> type:
    """``Runner`` with each step timed (wall seconds), without changing what it does."""
    from dedup.pipeline import Runner

    class TimedRunner(Runner):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.times: dict[str, float] = {}
            self._timed_gallery = False

        def _time(self, key: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.times[key] = self.times.get(key, 0.0) + time.perf_counter() - t0

        def model(self) -> Any:
            return self._time("model_load", super().model) if self._model is None else super().model()

        def _claim(self, conn: Any) -> Any:
            return self._time("db_claim", super()._claim, conn)

        def _templates(self, conn: Any, unit_id: int) -> Any:
            return self._time("embed", super()._templates, conn, unit_id)

        def _search(self, conn: Any, unit_id: int, unit: Any) -> Any:
            return self._time("search", super()._search, conn, unit_id, unit)

        def _gallery_search(self, gallery: Any, probes: Any, params: Any) -> Any:
            return self._time("search_gallery", super()._gallery_search, gallery, probes, params)

        def _decide(self, *args: Any) -> Any:
            return self._time("db_decide", super()._decide, *args)

        def _add(self, conn: Any, unit_id: int, unit: Any) -> Any:
            return self._time("add", super()._add, conn, unit_id, unit)

        def gallery(self, model_id: str, dim: int) -> Any:
            g = super().gallery(model_id, dim)
            if not self._timed_gallery:
                add = g.add
                g.add = lambda *a, **k: self._time("gallery_write", add, *a, **k)
                self._timed_gallery = True
            return g

    return TimedRunner


def breakdown(times: dict[str, float], total: float) -> dict[str, Any]:
    """Where the run's wall time went, by kind of work."""
    embed = times.get("embed", 0.0) - times.get("model_load", 0.0)
    search = times.get("search", 0.0)
    write = times.get("gallery_write", 0.0)
    db = times.get("db_claim", 0.0) + times.get("db_decide", 0.0) + times.get("add", 0.0) - write
    parts = {"model_load": times.get("model_load", 0.0), "embedding": embed,
             "search": search, "search_gallery_ann": times.get("search_gallery", 0.0),
             "database": db, "gallery_writes": write}
    parts["other"] = total - (parts["model_load"] + embed + search + db + write)
    return {k: {"seconds": round(v, 3), "share": round(v / total, 4) if total else 0.0} for k, v in parts.items()}


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from dedup.deployment import init_deployment, open_deployment
    from dedup.evaluation.calibrate import apply_threshold, set_toml_value
    from dedup.face.model import ModelSpec, model_id_for
    from dedup.index.gallery import Gallery
    from dedup.ingest.submit import submit_batch
    from dedup.pipeline import fill_synthetic
    from dedup.store import db as dbmod
    from dedup.store.centres import add_centre
    from dedup.store.users import authenticate

    doc: dict[str, Any] = {"benchmark": "dedup-run", "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                           "machine": machine(), "load_average": {"start": load()},
                           "arguments": {k: v for k, v in vars(args).items() if k != "out"}}
    root = Path(tempfile.mkdtemp(prefix="dedup-bench-run-", dir=args.tmp))
    home = root / "deployment"
    try:
        init_deployment(home)
        toml = home / "dedup.toml"
        if args.threshold:
            apply_threshold(home, args.threshold, args.target_fpir)
        if args.run_batch_size:
            toml.write_text(set_toml_value(toml.read_text(), "store", "run_batch_size", str(args.run_batch_size)))
        dep = open_deployment(home)
        doc["settings"] = {"search": vars(dep.settings.search), "run_batch_size": dep.settings.store.run_batch_size,
                           "face_workers": dep.settings.face.workers, "index": vars(dep.settings.index)}
        spec = ModelSpec.from_settings(dep.settings.face)
        t0 = time.perf_counter()
        done = [0]

        def progress(n: int) -> None:
            done[0] += n
            if done[0] % 1_000_000 < n:
                print(f"  fill: {done[0]:,} / {args.gallery_size:,} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)

        size = fill_synthetic(dep, args.gallery_size, model_id_for(spec), spec.output_dim, progress=progress)
        fill_s = time.perf_counter() - t0
        doc["fill"] = {"templates": size, "seconds": round(fill_s, 1), "templates_per_s": round(size / fill_s, 1),
                       "gallery": Gallery.open(dep.gallery, dep.settings.index).stats()}
        print(f"gallery filled: {size:,} synthetic templates in {fill_s:.0f} s", file=sys.stderr)
        with dep.database.session() as conn:
            admin = authenticate(conn, "admin")
            add_centre(conn, admin, CENTRE, "Benchmark centre")
            manifest, sources = write_captures(root / "centre-batch", args.captures, args.seed)
            t0 = time.perf_counter()
            receipt, _ = submit_batch(dep, conn, admin, manifest)
            doc["submit"] = {"captures": sources, "accepted": receipt.accepted, "rejected": receipt.rejected,
                             "seconds": round(time.perf_counter() - t0, 2)}
            shutil.rmtree(root / "centre-batch")          # the photos now live in the store only
            doc["load_average"]["before_run"] = load()
            print(f"submitted {receipt.accepted} captures; running", file=sys.stderr)
            runner = timed_runner_class()(dep, admin, progress=lambda m: print(f"  {m}", file=sys.stderr))
            cpu0 = os.times()
            report = runner.run(once=True)
            cpu1 = os.times()
            doc["load_average"]["after_run"] = load()
            outcome = conn.execute(
                """SELECT left(enrolment_id, 1) AS src, state, coalesce(reason, '') AS reason, count(*) AS n
                   FROM enrolments GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""").fetchall()
            # What the run judged at, and what real probes found among the synthetic rows (false candidates:
            # since issue 13 the synthetic templates live where dlib's do, so real probes can false-match them).
            judged = conn.execute("""SELECT threshold, threshold_source, count(*) AS units FROM run_units
                                     GROUP BY 1, 2 ORDER BY 1""").fetchall()
            synthetic = conn.execute("""SELECT count(*) AS rows, count(DISTINCT case_id) AS cases FROM case_candidates
                                        WHERE synthetic""").fetchone()
        gallery = Gallery.open(dep.gallery, dep.settings.index)
        total = report.seconds
        compute = total - runner.times.get("model_load", 0.0)
        names = {"A": "astronaut", "G": "grace_hopper", "L": "lfw_subset_upscaled"}
        own = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        children = (cpu1.children_user - cpu0.children_user) + (cpu1.children_system - cpu0.children_system)
        per = (own + children) / report.enrolments if report.enrolments else 0.0
        cores = doc["machine"]["cpus_usable"]
        doc["run_cpu"] = {
            "seconds_this_process": round(own, 2), "seconds_face_workers": round(children, 2),
            "seconds_per_enrolment": round(per, 4),
            "enrolments_per_second_on_free_cores": round(cores / per, 1) if per else None,
            "note": (f"CPU time of this process and its face worker processes (not PostgreSQL's); "
                     f"{cores} cores / CPU seconds per enrolment: what the run would reach on an otherwise idle "
                     "machine if the work spread perfectly over the cores (an upper bound; the wall numbers are "
                     "pessimistic under load)")}
        doc["run"] = {**report.as_dict(),
                      "enrolments_per_second_without_model_load": round(report.enrolments / compute, 3) if compute else 0.0,
                      "breakdown": breakdown(runner.times, total),
                      "thresholds": [dict(r) for r in judged],
                      "synthetic_candidates": {"rows": synthetic["rows"], "cases": synthetic["cases"],
                                               "per_enrolment": round(synthetic["rows"] / report.enrolments, 4)
                                               if report.enrolments else 0.0},
                      "outcome_by_source": [{"source": names.get(r["src"], r["src"]), "state": r["state"],
                                             "reason": r["reason"] or None, "n": r["n"]} for r in outcome],
                      "gallery_after": {"templates": len(gallery), "shards": len(gallery.shard_paths()),
                                        "generation": gallery.generation}}
        return doc
    finally:
        dbmod.stop_embedded(home)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gallery-size", type=int, default=100_000, help="synthetic templates in the gallery")
    parser.add_argument("--captures", type=int, default=512, help="real-photo captures submitted and run")
    parser.add_argument("--threshold", type=float, default=0.0,
                        help="[search] threshold (default 0: the threshold in force for the gallery's size, "
                             "dedup.operating_point; give one to pin it)")
    parser.add_argument("--target-fpir", type=float, default=0.001, help="[calibration] target_fpir written with it")
    parser.add_argument("--run-batch-size", type=int, default=0, help="[store] run_batch_size (default: the setting's default)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the captures")
    parser.add_argument("--tmp", default=None, help="folder for the temporary deployment (default: the system's)")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default benchmarks/results/run-<N>.json)")
    args = parser.parse_args()
    out = args.out or ROOT / "benchmarks" / "results" / f"run-{args.gallery_size}.json"
    doc = run_benchmark(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
    r = doc["run"]
    print(f"{r['enrolments']} enrolments against {doc['fill']['templates']:,} templates: {r['enrolments_per_second']} /s "
          f"({r['enrolments_per_second_without_model_load']} /s without the model load); load average "
          f"{doc['load_average']['before_run']} -> {doc['load_average']['after_run']}; {out}")
    c = doc["run_cpu"]
    print(f"  CPU: {c['seconds_per_enrolment']} s per enrolment -> about {c['enrolments_per_second_on_free_cores']} /s "
          f"on {doc['machine']['cpus_usable']} free cores")
    for k, v in r["breakdown"].items():
        print(f"  {k:>20}: {v['seconds']:8.2f} s  {100 * v['share']:5.1f}%")


if __name__ == "__main__":
    main()
