"""Plot the calibration curves recorded by ``calibration_curve.py``.

    python benchmarks/eval/plot_calibration.py benchmarks/eval/results

Writes ``calibration-threshold.png`` (threshold vs gallery size, with intervals) and
``calibration-fnir.png`` (FNIR at that threshold) beside the JSON files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/eval/results")
    docs = [json.loads(p.read_text()) for p in sorted(folder.glob("calibration-*.json"))]
    fig1, ax1 = plt.subplots(figsize=(7, 4.5))
    fig2, ax2 = plt.subplots(figsize=(7, 4.5))
    for doc in docs:
        name = doc["profile"]["name"]
        n = [c["gallery_size"] for c in doc["curve"]]
        t = [c["threshold"] for c in doc["curve"]]
        lo = [c["threshold_ci"][0] for c in doc["curve"]]
        hi = [c["threshold_ci"][1] for c in doc["curve"]]
        line, = ax1.plot(n, t, "o-", label=f"{name} (documented {doc['documented_threshold']})")
        ax1.fill_between(n, lo, hi, alpha=0.2, color=line.get_color())
        f = [c["fnir"] for c in doc["curve"]]
        flo = [c["fnir_ci"][0] for c in doc["curve"]]
        fhi = [c["fnir_ci"][1] for c in doc["curve"]]
        line, = ax2.plot(n, f, "o-", label=name)
        ax2.fill_between(n, flo, fhi, alpha=0.2, color=line.get_color())
    ax1.set_xscale("log")
    ax1.set_xlabel("gallery size N")
    ax1.set_ylabel("cosine threshold")
    ax1.set_title(f"Threshold holding FPIR {docs[0]['fpir_target']:g} (95% bootstrap interval)")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("gallery size N")
    ax2.set_ylabel("FNIR")
    ax2.set_title(f"FNIR at the threshold holding FPIR {docs[0]['fpir_target']:g}")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=8)
    for fig, name in ((fig1, "calibration-threshold.png"), (fig2, "calibration-fnir.png")):
        fig.tight_layout()
        fig.savefig(folder / name, dpi=110)
        print(f"wrote {folder / name}")


if __name__ == "__main__":
    main()
