"""Does numpy's OpenBLAS, spinning idle after each product, slow dedup's search? One search of
10,000 probes at the threshold in force on a `dedup bench --workdir DIR` gallery, run in
fresh processes (OpenBLAS reads the variable when it loads) with OPENBLAS_THREAD_TIMEOUT=4
(idle workers sleep at once; dedup's default since this measurement, `dedup/__init__.py`)
and with OpenBLAS's own default (28: 2^28 cycles of spinning), interleaved A B A B:

    PYTHONPATH=. python benchmarks/blas_idle.py DIR/gallery PROFILE SEED OUT.json [PASSES]

Recorded: results/blas-idle-1m.json (1M face-like seed 7 and 1M arcface-like 512-d seed 11).
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, os, sys, time
from dedup.bench.gallery import BenchSpec, resolve
from dedup.bench.synth import SyntheticData
from dedup.config import Settings
from dedup.index.gallery import Gallery
root, profile, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
g = Gallery.open(root)
synth, _, params = resolve(BenchSpec(gallery_size=len(g), queries=10000, profile=profile, seed=seed), Settings())
probes = SyntheticData(synth).probes().vectors
params = g.with_measured(params)
g.search(probes[:2000], params)
best = 1e9
for _ in range(3):
    t0 = time.perf_counter(); g.search(probes, params); best = min(best, time.perf_counter() - t0)
print(json.dumps({"search_s": best, "nprobe": params.nprobe, "load1": os.getloadavg()[0]}))
"""


def run(root: str, profile: str, seed: str, timeout: str | None) -> dict:
    # 28 (2^28 cycles) is OpenBLAS's built-in default; dedup's import would otherwise set 4.
    env = {**os.environ, "OPENBLAS_THREAD_TIMEOUT": timeout or "28"}
    out = subprocess.run([sys.executable, "-c", CHILD, root, profile, seed], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    root, profile, seed, out_path = sys.argv[1:5]
    passes = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    rows: dict[str, list[dict]] = {"sleep_at_once": [], "openblas_default": []}
    for _ in range(passes):
        rows["sleep_at_once"].append(run(root, profile, seed, "4"))
        rows["openblas_default"].append(run(root, profile, seed, None))
    best = {k: min(r["search_s"] for r in v) for k, v in rows.items()}
    from dedup.machine import machine_info

    report = {"gallery": root, "profile": profile, "seed": int(seed), "probes": 10000, "passes": rows,
              "best_search_s": best, "speedup": best["openblas_default"] / best["sleep_at_once"],
              "machine": machine_info(), "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    existing = json.loads(Path(out_path).read_text()) if os.path.exists(out_path) else {}
    existing[f"{profile}-seed{seed}"] = report
    with open(out_path, "w") as f:
        json.dump(existing, f, indent=2)
    print(json.dumps({"best_search_s": best, "speedup": report["speedup"]}))


if __name__ == "__main__":
    main()
