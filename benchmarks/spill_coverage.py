"""Would storing rows in a second IVF list ("spilling") let a probe visit fewer lists?

On a `dedup bench --workdir DIR` gallery, pairs of (gallery row, a fresh capture of its
identity: `SyntheticData.fresh_captures`) at or near the threshold are ranked the way the
coverage is (`dedup.index.coverage`: the rank of one's list among the other's coarse
distances, the larger of both ways), once with each row in its own list only and once with
rows also stored in a second list: their second-nearest (all rows, or the share whose second
list is nearest to their first), or the list SOAR's rule picks (Sun et al., "SOAR: improved
indexing for approximate nearest neighbor search", NeurIPS 2023: the list minimising
|x - c|^2 + lambda (r . (x - c))^2 / |r|^2, r the residual to the row's own list; lambda 1).
The cost of a search is the codes it scans, so the list count a recall needs is reported next
to that count times the lists' growth (1 + the share spilled):

    PYTHONPATH=. python benchmarks/spill_coverage.py DIR/gallery PROFILE SEED OUT.json

Recorded: results/spill-coverage-1m-face-like.json (1M face-like, seed 7).
"""

import json
import sys
import time

import numpy as np

import dedup  # noqa: F401  (sets the BLAS environment before numpy loads)
from dedup.bench.gallery import BenchSpec, _blocks, resolve
from dedup.bench.synth import SyntheticData
from dedup.config import Settings
from dedup.index.coarse import centroids, distances
from dedup.index.gallery import Gallery
from dedup.index.rotation import to_index_space
from dedup.machine import machine_info

BLOCKS, ROWS_PER_BLOCK, NEAR, CHUNK, SOAR_LAMBDA = 8, 20_000, 0.005, 8_192, 1.0
QUANTILES = (0.999, 0.9995, 0.9999)


def pair_ranks(index, probes: np.ndarray, rows: np.ndarray, lists: int = 3,
               lam: float = SOAR_LAMBDA) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pair, with each chunk's coarse distances computed once: the ranks, among the
    probe's lists (the coverage's rule: lists at an equal distance count as nearer), of the
    row's ``lists`` nearest lists and of the second list SOAR's rule gives the row; and how
    much farther the row's second list is than its first."""
    cents = centroids(index)[0].astype(np.float64)
    ranks = np.empty((len(rows), lists), dtype=np.int32)
    soar = np.empty(len(rows), dtype=np.int32)
    second = np.empty(len(rows), dtype=np.float32)
    for lo in range(0, len(rows), CHUNK):
        d_probe, d_row = distances(index, probes[lo:lo + CHUNK]), distances(index, rows[lo:lo + CHUNK])
        nearest = np.argsort(d_row, axis=1)[:, :lists]
        at = np.arange(len(d_row))[:, None]
        # SOAR: |x - c|^2 + lam (r . (x - c))^2 / |r|^2, r the residual to the row's own list.
        x = to_index_space(index, rows[lo:lo + CHUNK]).astype(np.float64)
        r = x - cents[nearest[:, 0]]
        along = np.einsum("ij,ij->i", x, r)[:, None] - r @ cents.T
        loss = d_row + lam * along ** 2 / np.einsum("ij,ij->i", r, r)[:, None]
        loss[at[:, 0], nearest[:, 0]] = np.inf
        chosen = np.concatenate([nearest, loss.argmin(axis=1)[:, None]], axis=1)
        found = (d_probe[:, None, :] <= d_probe[at, chosen][:, :, None]).sum(axis=2) - 1
        ranks[lo:lo + CHUNK], soar[lo:lo + CHUNK] = found[:, :lists], found[:, lists]
        second[lo:lo + CHUNK] = d_row[at[:, 0], nearest[:, 1]] - d_row[at[:, 0], nearest[:, 0]]
    return ranks, soar, second


def needed(ranks: np.ndarray) -> dict[str, int]:
    return {**{str(q): int(np.quantile(ranks, q)) + 1 for q in QUANTILES}, "max": int(ranks.max()) + 1}


def main() -> None:
    root, profile, seed, out_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    gallery = Gallery.open(root)
    synth, _, params = resolve(BenchSpec(gallery_size=len(gallery), queries=10_000, profile=profile, seed=seed), Settings())
    data = SyntheticData(synth)
    rows, fresh = [], []
    for b, blk in enumerate(_blocks(data, lambda k: None)):
        if b >= BLOCKS:
            break
        rows.append(blk.vectors[:ROWS_PER_BLOCK])
        fresh.append(data.fresh_captures(b, blk.row_ids[:ROWS_PER_BLOCK]))
    a, f = np.concatenate(rows), np.concatenate(fresh)
    keep = np.einsum("ij,ij->i", a, f) >= params.threshold - NEAR
    a, f = a[keep], f[keep]
    index = gallery.codec.trained
    r_af, soar_af, second_a = pair_ranks(index, f, a)  # the row in the gallery, the capture probing
    r_fa, soar_fa, second_f = pair_ranks(index, a, f)  # and the other way round
    variants = {"no spill": (np.maximum(r_af[:, 0], r_fa[:, 0]), 0.0),
                "every row in its 2 nearest lists": (np.maximum(r_af[:, :2].min(1), r_fa[:, :2].min(1)), 1.0),
                "every row in its 3 nearest lists": (np.maximum(r_af[:, :3].min(1), r_fa[:, :3].min(1)), 2.0)}
    variants[f"every row also in the list SOAR's rule picks (lambda {SOAR_LAMBDA:g})"] = (
        np.maximum(np.minimum(r_af[:, 0], soar_af), np.minimum(r_fa[:, 0], soar_fa)), 1.0)
    seconds = np.concatenate([second_a, second_f])
    for share in (0.1, 0.25, 0.5):
        cut = np.quantile(seconds, share)
        one = np.where(second_a <= cut, r_af[:, :2].min(1), r_af[:, 0])
        other = np.where(second_f <= cut, r_fa[:, :2].min(1), r_fa[:, 0])
        variants[f"the {share:.0%} of rows nearest their second list also in it"] = (np.maximum(one, other), share)
    report = {"gallery": root, "profile": profile, "seed": seed, "threshold": params.threshold,
              "pairs": int(a.shape[0]), "pairs_rule": f"gallery row and a fresh capture scoring >= threshold - {NEAR}",
              "variants": {}, "machine": machine_info(), "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    plain = needed(variants["no spill"][0])
    for name, (ranks, grown) in variants.items():
        lists = needed(ranks)
        report["variants"][name] = {"lists_needed": lists, "list_growth": 1.0 + grown,
                                    "codes_scanned_vs_no_spill": {q: lists[q] * (1.0 + grown) / plain[q] for q in lists},
                                    "extra_index_bytes_per_template": grown * (gallery.codec.spec.code_bytes + 8)}
        print(name, lists, f"growth {1 + grown:.2f}")
    with open(out_path, "w") as fh:
        json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
