"""Interleaved timing and recall of dedup's search at several nprobe/depth defaults, on a gallery
`dedup bench --job jobs/bench-1m.toml --threshold 0.957 --workdir DIR` built (same seeded data):

    PYTHONPATH=. python benchmarks/sweep_search_defaults.py DIR/gallery OUT.json
"""

import dataclasses
import json
import sys

from dedup.bench.gallery import BenchSpec, _blocks, _Truth, resolve
from dedup.bench.synth import SyntheticData
from dedup.bench.timing import interleave
from dedup.config import Settings
from dedup.index.gallery import Gallery

spec = BenchSpec(gallery_size=1_000_000, queries=10_000, profile="face-like", seed=1, threshold=0.957)
synth, _, params = resolve(spec, Settings())
data = SyntheticData(synth)
probes = data.probes()
truth = _Truth(probes, params.threshold)
for blk in _blocks(data, lambda k: None):
    truth.observe(blk.row_ids, blk.vectors)
g = Gallery.open(sys.argv[1])
params = g.with_bounds(params)
runs, out = {}, {}
for npb, depth in ((48, 16), (32, 16), (48, 8), (32, 8), (24, 16)):
    p = dataclasses.replace(params, nprobe=npb, depth=depth)
    r = g.search(probes.vectors, p)
    name = f"nprobe{npb}-depth{depth}"
    out[name] = truth.score(r)
    runs[name] = (lambda p=p: g.search(probes.vectors, p), 10_000)
t = interleave(runs, passes=3)
for k in out:
    out[k].update(t[k])
    print(k, round(out[k]['probes_per_s']), round(out[k]['probes_per_s_median']), out[k]['duplicate_recall'], out[k]['missed_pairs'])
with open(sys.argv[2], 'w') as fh:
    json.dump(out, fh, indent=2, default=float)
