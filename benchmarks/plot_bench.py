"""Plot recorded `dedup bench` results: probes/s and RAM per template vs gallery size.

Reads every ``results/bench-*.json`` (one report each, as `dedup bench --json` writes them)
and writes ``results/bench.png``: one panel of probes/s and one of index RAM bytes per
template, dedup against its baselines, one line per profile and engine.

    python benchmarks/plot_bench.py
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[tuple[str, str], list[tuple[int, float, float]]] = defaultdict(list)
    for path in sorted((HERE / "results").glob("bench-*.json")):
        r = json.loads(path.read_text())
        n = r["gallery_size"]
        # Lines join runs of one profile at one threshold (and nprobe), across gallery sizes.
        key = f"{r['profile']}, t={r['threshold']:.3f}, nprobe {r['search']['nprobe']}"
        series[(key, "dedup IVF-PQ")].append((n, r["probes_per_s"], r["ram_bytes_per_template"]))
        for name, b in r.get("baselines", {}).items():
            series[(f"{r['profile']}, t={r['threshold']:.3f}", name)].append((n, b["probes_per_s"], b["ram_bytes_per_template"]))
    if not series:
        raise SystemExit("no results/bench-*.json to plot")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(16, 5))
    for (profile, engine), points in sorted(series.items()):
        points = sorted(set(points))
        xs = [p[0] for p in points]
        style = "-o" if engine.startswith("dedup") else "--s"
        ax1.plot(xs, [p[1] for p in points], style, label=f"{engine} ({profile})")
        ax2.plot(xs, [p[2] for p in points], style, label=f"{engine} ({profile})")
    for ax, ylabel in ((ax1, "probes / s (threshold search, 2 cores)"), (ax2, "index RAM bytes / template")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("gallery size (templates)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center right")
    fig.suptitle("dedup bench: sharded IVF-PQ + exact re-rank vs exact flat and hnswlib")
    fig.tight_layout(rect=(0, 0, 0.72, 1))
    out = HERE / "results" / "bench.png"
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
