"""How much a rotation before PQ helps dedup's fixed IVF-PQ search: missed duplicate pairs at
several nprobe x depth, and the PQ estimate error of the planted pairs, with no rotation, with
FAISS's default OPQ, and with OPQ holding a PQ of the codec's own shape (dedup.index.rotation).
Results: results/opq-1m-face-like.json. Usage (about 2-4 minutes per rotation at 1M):

    PYTHONPATH=. python benchmarks/opq_experiment.py 1000000 SEED face-like 0 none,opq-faiss-default,opq-codec-shape
"""

import sys
import time

import faiss
import numpy as np

from dedup.bench.gallery import BenchSpec, _blocks, _Truth, resolve
from dedup.bench.synth import SyntheticData
from dedup.config import Settings
from dedup.index.bounds import search_preassigned
from dedup.index.coarse import nearest_lists
from dedup.index.rotation import learn_rotation

SETTINGS = ((48, 16), (48, 32), (64, 16), (64, 32), (96, 16), (96, 32))

n, seed, profile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
dim = int(sys.argv[4]) if sys.argv[4] != "0" else None
spec = BenchSpec(gallery_size=n, queries=10000, profile=profile, seed=seed, dim=dim)
synth, _, params = resolve(spec, Settings())
t = params.threshold
data = SyntheticData(synth)
probes = data.probes()
truth = _Truth(probes, t)
D = data.profile.dim
X = np.zeros((n, D), np.float32)
for b in _blocks(data, lambda k: None):
    truth.observe(b.row_ids, b.vectors)
    X[b.row_ids] = b.vectors
Q = probes.vectors.astype(np.float32)
mask = truth.pair_score >= t
wanted_probe, wanted_row = truth.pair_probe[mask], truth.pair_row[mask]
print("threshold", t, "pairs", int(mask.sum()))
nlist = 2048 if n >= 500_000 else 1024
M = D // 4
sample = X[:100_000]


def build(rotation: np.ndarray | None) -> faiss.Index:
    xr = X if rotation is None else X @ rotation.T
    quantizer = faiss.IndexFlatL2(D)
    index = faiss.IndexIVFPQFastScan(quantizer, D, nlist, M, 4, faiss.METRIC_L2)
    index.cp.max_points_per_centroid = 256
    s = sample if rotation is None else sample @ rotation.T
    index.train(np.ascontiguousarray(s))
    index.add(np.ascontiguousarray(xr))
    index.own_fields = True
    quantizer.this.disown()
    return index


def missed(index: faiss.Index, rotation: np.ndarray | None, nprobe: int, depth: int) -> int:
    qr = Q if rotation is None else np.ascontiguousarray(Q @ rotation.T)
    dist, lists = nearest_lists(index, qr, nprobe)
    _, labels = search_preassigned(index, qr, depth, lists, dist)
    found = set()
    for p in range(Q.shape[0]):
        rows = labels[p][labels[p] >= 0]
        for r in rows[X[rows] @ Q[p] >= t]:
            found.add((p, int(r)))
    return sum((int(p), int(r)) not in found for p, r in zip(wanted_probe, wanted_row))


def estimate_error(index: faiss.Index, rotation: np.ndarray | None) -> np.ndarray:
    """Percentiles 5/50/95/99 of (PQ estimate - true) squared L2 of planted pairs, own list searched."""
    qr = Q if rotation is None else Q @ rotation.T
    p, r = wanted_probe[:2000], wanted_row[:2000]
    xr = X[r] if rotation is None else X[r] @ rotation.T
    own = index.quantizer.search(np.ascontiguousarray(xr), 1)[1]
    cents = faiss.rev_swig_ptr(faiss.downcast_index(index.quantizer).get_xb(), nlist * D).reshape(nlist, D)
    qd = ((qr[p] - cents[own[:, 0]]) ** 2).sum(1)
    est, labels = search_preassigned(index, np.ascontiguousarray(qr[p]), 4096, own, qd[:, None].astype(np.float32))
    errors = []
    for i in range(len(p)):
        w = np.where(labels[i] == r[i])[0]
        if w.size:
            errors.append(est[i][w[0]] - (2 - 2 * float(X[r[i]] @ Q[p[i]])))
    return np.percentile(np.array(errors), [5, 50, 95, 99]).round(4)


for name in sys.argv[5].split(","):
    t0 = time.time()
    if name == "none":
        rotation = None
    elif name == "opq-faiss-default":
        opq = faiss.OPQMatrix(D, M)
        opq.niter = 25
        opq.train(np.ascontiguousarray(sample[:65536]))
        rotation = faiss.vector_to_array(opq.A).reshape(D, D).astype(np.float32)
    elif name == "opq-codec-shape":
        rotation = learn_rotation(sample, M, 4)
    else:
        raise SystemExit(f"unknown rotation {name!r}")
    index = build(rotation)
    print(name, "build", round(time.time() - t0, 1), "err pct", estimate_error(index, rotation))
    for nprobe, depth in SETTINGS:
        t0 = time.time()
        print(f"  {name} nprobe {nprobe} depth {depth}: missed {missed(index, rotation, nprobe, depth)} "
              f"of {len(wanted_probe)}  ({time.time() - t0:.1f}s)")
