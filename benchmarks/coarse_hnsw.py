"""Is an HNSW coarse quantizer cheaper than dedup's brute-force coarse step (one BLAS product +
torch.topk over the 2,048 centroids)? Time and list recall (share of the true 64 nearest lists
found) on a `dedup bench --workdir DIR` gallery (1M face-like, seed 3):

    PYTHONPATH=. python benchmarks/coarse_hnsw.py DIR/gallery

Recorded (results/coarse-hnsw-1m-face-like.json): no: at 2,048 lists HNSW is as slow as brute
force at the ef that keeps list recall >= 0.9999, and slower above.
"""
import sys
import time

import faiss
import numpy as np

from dedup.bench.gallery import BenchSpec, resolve
from dedup.bench.synth import SyntheticData
from dedup.config import Settings
from dedup.index import coarse
from dedup.index.gallery import Gallery
from dedup.index.rotation import to_index_space

g = Gallery.open(sys.argv[1])
spec = BenchSpec(gallery_size=1_000_000, queries=10000, profile="face-like", seed=3)
synth, _, params = resolve(spec, Settings())
Q = SyntheticData(synth).probes().vectors
ix = g.shards()[0].index
C, _ = coarse.centroids(ix)
Z = to_index_space(ix, Q)
h = faiss.IndexHNSWFlat(C.shape[1], 32)
h.hnsw.efConstruction = 200
h.add(C)
def tm(f):
    b = 1e9
    for _ in range(3):
        t0 = time.perf_counter()
        r = f()
        b = min(b, time.perf_counter() - t0)
    return b, r
tb, (db, lb) = tm(lambda: coarse.nearest_lists(ix, Q, 64))
print("brute (ours)", round(tb, 3))
for ef in (64, 96, 128, 192, 256):
    h.hnsw.efSearch = ef
    th, (dh, lh) = tm(lambda: h.search(Z, 64))
    rec = np.mean([len(set(lb[i]) & set(lh[i])) / 64 for i in range(0, 10000, 7)])
    print("hnsw ef", ef, round(th, 3), "list recall", round(rec, 5))
