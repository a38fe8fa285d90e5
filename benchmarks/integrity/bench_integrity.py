"""What gallery integrity costs: add and open time at 1M templates, with and without hashing.

Builds a 1M x 128 face-like synthetic gallery (float32 exact vectors, 4-bit fast-scan PQ,
one shard), and measures:

- ``add_s``: ``Gallery.add`` of every row as shipped (each shard file hashed before the
  switch); ``add_hash_s``: the SHA-256 of the files that add wrote, timed alone (the work the
  checksums add to it), so ``add_without_hash_s`` = ``add_s - add_hash_s``;
- ``open_*``: opening the gallery and loading its shard, with the hashes checked
  (``verify=True``: index.faiss, rows.parquet and the id maps on open, vectors.bin before
  the first search) and without (``verify=False``); then the first search of 100 probes,
  which for a verified shard includes hashing vectors.bin (larger than
  ``index.verify_on_open_bytes``); ``verify_full_s``: ``dedup gallery verify`` (every hash);
- the hash rates of SHA-256 and BLAKE2b on this machine (why SHA-256).

The files sit in the page cache (they were just written): these are the hashing costs, not
disk reads. Usage: ``python benchmarks/integrity/bench_integrity.py [--size N] [--out F]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from dedup.bench.synth import SyntheticData, SynthSpec, get_profile
from dedup.config import IndexSettings
from dedup.index.gallery import Gallery
from dedup.index.integrity import file_digest
from dedup.index.params import SearchParams
from dedup.index.verify import check
from dedup.machine import machine_info


def hash_rates(mib: int = 256) -> dict[str, float]:
    data = os.urandom(mib << 20)
    out = {}
    for name in ("sha256", "blake2b"):
        h = hashlib.new(name)
        t = time.perf_counter()
        view = memoryview(data)
        for i in range(0, len(data), 8 << 20):
            h.update(view[i:i + (8 << 20)])
        out[f"{name}_mib_per_s"] = round(mib / (time.perf_counter() - t), 1)
    return out


def timed(fn):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    value = fn()
    return time.perf_counter() - t, value


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("results-1m.json"))
    args = ap.parse_args()
    settings = IndexSettings(train_size=100_000)
    data = SyntheticData(SynthSpec(get_profile("face-like", 128), gallery_size=args.size, queries=100, seed=3))
    gal = data.gallery()
    probes = data.probes().vectors
    work = Path(tempfile.mkdtemp(prefix="dedup-integrity-bench-"))
    try:
        root = work / "g"
        g = Gallery.create(root, data.profile.model_id, 128, settings)
        train_s, _ = timed(lambda: g.train(gal.vectors[:settings.train_size], seed=1, expected_size=args.size))
        ids = [f"e{r}" for r in gal.row_ids]
        add_s, _ = timed(lambda: g.add(gal.vectors, ids))
        shard = root / "shards" / Gallery.open(root, settings).manifest.shards[0]
        files = {p.name: p.stat().st_size for p in shard.iterdir() if p.name != "meta.json"}
        add_hash_s, _ = timed(lambda: [file_digest(shard / f) for f in files])
        params = SearchParams(threshold=0.957, nprobe=48, depth=16, max_depth=4096, max_candidates=100)
        result = {}
        for verify in (False, True, False, True):  # twice each, the second of each kept (warm)
            open_s, opened = timed(lambda v=verify: Gallery.open(root, settings, verify=v))
            load_s, _ = timed(lambda o=opened: o.shards())
            search_s, _ = timed(lambda o=opened: o.search(probes, params))
            key = "with" if verify else "without"
            result[key] = {"open_and_load_s": round(open_s + load_s, 3), "first_search_100_probes_s": round(search_s, 3)}
        verify_full_s, (report, _) = timed(lambda: check(root, settings, deep=True))
        assert report.ok
        out = {
            "benchmark": "gallery integrity cost (issue 11)",
            "gallery_size": args.size, "dim": 128, "profile": "face-like", "exact_dtype": "float32",
            "shard_files_bytes": files,
            "train_s": round(train_s, 2), "add_s": round(add_s, 2), "add_hash_s": round(add_hash_s, 2),
            "add_without_hash_s": round(add_s - add_hash_s, 2),
            "add_hash_overhead": round(add_hash_s / (add_s - add_hash_s), 4),
            "open_with_verification": result["with"], "open_without_verification": result["without"],
            "verify_full_s": round(verify_full_s, 2), "verify_bytes": report.bytes_checked,
            **hash_rates(),
            "machine": machine_info(),
            "load_average": os.getloadavg(),
        }
        args.out.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
        print(json.dumps(out, indent=2, sort_keys=True))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
