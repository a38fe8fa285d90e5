"""The comparison half of `dedup bench` (dedup.bench.compare) on a gallery `dedup bench --workdir` already built.

Used for results/compare-1m-face-like-t0.957.json: the full `dedup bench --job jobs/bench-1m.toml
--threshold 0.957 --compare exact,faiss-refine,hnsw --workdir DIR` run was stopped after its build
(8 minutes at load 13 on 2 cores), and this re-generated the same seeded data and compared on DIR:

    PYTHONPATH=. python benchmarks/compare_existing_gallery.py DIR/gallery exact,faiss-refine OUT.json
"""

import json
import sys
import time

import numpy as np

from dedup.bench.compare import compare
from dedup.bench.gallery import BenchSpec, _blocks, _search_json, _Truth, resolve
from dedup.bench.synth import SyntheticData
from dedup.config import Settings
from dedup.index.gallery import Gallery
from dedup.machine import machine_info

t_start = time.time()
engines = tuple(sys.argv[2].split(","))
spec = BenchSpec(gallery_size=1_000_000, queries=10_000, profile="face-like", seed=1, threshold=0.957, flat_queries=2000, compare=engines)
settings = Settings()
synth, index_settings, params = resolve(spec, settings)
data = SyntheticData(synth)
probes = data.probes()
truth = _Truth(probes, params.threshold)
n, dim = spec.gallery_size, data.profile.dim
vectors = np.zeros((n, dim), dtype=np.float32)
for blk in _blocks(data, lambda k: None):
    truth.observe(blk.row_ids, blk.vectors)
    vectors[blk.row_ids] = blk.vectors
gallery = Gallery.open(sys.argv[1])
t0 = time.time()
dedup, baselines = compare(gallery, probes.vectors, params, truth.score, spec.compare, vectors, np.arange(n, dtype=np.int64),
                           (lambda: ((b.vectors, b.row_ids) for b in _blocks(data, lambda k: None))), settings.search.probe_block,
                           2000, 3, spec.hnsw_m, spec.hnsw_ef_construction, spec.seed)
stats = gallery.stats()
report = {"gallery_size": n, "queries": spec.queries, "dim": dim, "profile": "face-like", "seed": 1, "threshold": params.threshold,
          "search": _search_json(gallery.with_measured(params)), "codec": stats["codec"], "shards": stats["shards"],
          "ram_bytes_per_template": stats["index_bytes_per_template"], "machine": machine_info(), **dedup,
          "baselines": baselines, "compare_s": time.time() - t0, "script_s": time.time() - t_start,
          "note": "comparison run on the gallery built by `dedup bench` minutes earlier (same spec); "
                  "the full bench run was stopped after its build because the machine was at load 13 on 2 cores"}
with open(sys.argv[3], "w") as fh:
    json.dump(report, fh, indent=2, default=float)
print(json.dumps({k: report[k] for k in ("probes_per_s", "duplicate_recall", "missed_pairs", "compare_s")}))
