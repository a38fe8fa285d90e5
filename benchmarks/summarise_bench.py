"""Print the recorded `dedup bench` results as the Markdown table of benchmarks/README.md.

    python benchmarks/summarise_bench.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    print("| run | N | profile | threshold | codec (nlist, PQ, train) | nprobe/depth | dedup probes/s | "
          "flat probes/s | x flat | hnsw probes/s (recall) | duplicate recall | capped | false cand./probe | "
          "RAM B/t | disk B/t | train s | add s |")
    print("|" + "---|" * 17)
    for path in sorted((HERE / "results").glob("bench-*.json"), key=lambda p: (json.loads(p.read_text())["gallery_size"], p.name)):
        r = json.loads(path.read_text())
        flat = r["baselines"].get("exact") or r["baselines"]["flat"]  # "flat": the exact baseline's old name
        hnsw = r["baselines"].get("hnsw")
        codec = r["codec"]
        hn = f"{hnsw['probes_per_s']:,.0f} ({hnsw['duplicate_recall']:.4f})" if hnsw else "-"
        print(f"| {path.stem.removeprefix('bench-')} | {r['gallery_size']:,} | {r['profile']} | {r['threshold']:.3f} | "
              f"{codec['nlist']}, {codec['pq_m']}x{codec['pq_bits']}b, {r.get('train_size', '?')} | "
              f"{r['search']['nprobe']}/{r['search']['depth']} | {r['probes_per_s']:,.0f} | {flat['probes_per_s']:,.0f} | "
              f"{r['probes_per_s'] / flat['probes_per_s']:.0f} | {hn} | {r['duplicate_recall']:.4f} | "
              f"{r['capped_probes']:,} | {r['false_candidates_per_probe']:.2f} | {r['ram_bytes_per_template']:.1f} | "
              f"{r['disk_bytes_per_template']:.0f} | {r['train_s']:.1f} | {r['add_s']:.1f} |")


if __name__ == "__main__":
    main()
