"""Interleaved timing and recall of dedup's search at several nprobe/depth settings, on a gallery
`dedup bench --gallery-size N --profile P --seed S --workdir DIR` built (the same seeded data is
regenerated here for the ground truth):

    PYTHONPATH=. python benchmarks/sweep_search_defaults.py DIR/gallery OUT.json \
        [--gallery-size 1000000] [--profile face-like] [--seed 7] [--queries 10000] [--settings 48x16,64x16]

The threshold is the one `dedup bench` searched at (the threshold in force for the gallery's size).
"""

import argparse
import dataclasses
import json

from dedup.bench.gallery import BenchSpec, _blocks, _Truth, resolve
from dedup.bench.synth import SyntheticData
from dedup.bench.timing import interleave
from dedup.config import Settings
from dedup.index.gallery import Gallery
from dedup.machine import machine_info

ap = argparse.ArgumentParser()
ap.add_argument("gallery")
ap.add_argument("out")
ap.add_argument("--gallery-size", type=int, default=1_000_000)
ap.add_argument("--profile", default="face-like")
ap.add_argument("--dim", type=int, default=None)
ap.add_argument("--seed", type=int, default=7)
ap.add_argument("--queries", type=int, default=10_000)
ap.add_argument("--settings", default="48x16,64x8,64x16,96x8,96x16")
args = ap.parse_args()

spec = BenchSpec(gallery_size=args.gallery_size, queries=args.queries, profile=args.profile, dim=args.dim, seed=args.seed)
synth, _, params = resolve(spec, Settings())
data = SyntheticData(synth)
probes = data.probes()
truth = _Truth(probes, params.threshold)
for blk in _blocks(data, lambda k: None):
    truth.observe(blk.row_ids, blk.vectors)
g = Gallery.open(args.gallery)
params = g.with_measured(params)
runs, out = {}, {}
for item in args.settings.split(","):
    npb, depth = (int(v) for v in item.split("x"))
    p = dataclasses.replace(params, nprobe=npb, depth=depth)
    r = g.search(probes.vectors, p)
    name = f"nprobe{npb}-depth{depth}"
    out[name] = truth.score(r)
    runs[name] = (lambda p=p: g.search(probes.vectors, p), args.queries)
t = interleave(runs, passes=3)
for k in out:
    out[k].update(t[k])
    print(k, round(out[k]["probes_per_s"]), round(out[k]["probes_per_s_median"]), out[k]["duplicate_recall"],
          out[k]["missed_pairs"], out[k]["capped_probes"])
report = {"gallery_size": args.gallery_size, "profile": args.profile, "seed": args.seed, "queries": args.queries,
          "threshold": params.threshold, "codec": g.stats()["codec"], "machine": machine_info(), "settings": out}
with open(args.out, "w") as fh:
    json.dump(report, fh, indent=2, default=float)
