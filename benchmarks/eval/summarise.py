"""Print the recorded calibration numbers as Markdown tables (pasted into README.md).

    python benchmarks/eval/summarise.py benchmarks/eval/results
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/eval/results")
    docs = [json.loads(p.read_text()) for p in sorted(folder.glob("calibration-*.json"))]
    print("| profile | N | threshold (95% CI) | FNIR at it (95% CI) | FPIR at the documented threshold"
          " | cases/day at 1M/day, documented threshold |")
    print("|---|---:|---|---|---:|---:|")
    for d in docs:
        for c in d["curve"]:
            if c["gallery_size"] < 10**6:
                continue
            lo, hi = c["threshold_ci"]
            flo, fhi = c["fnir_ci"]
            print(f"| {d['profile']['name']} | {c['gallery_size']:,} | {c['threshold']:.4f} ({lo:.4f}–{hi:.4f}) | "
                  f"{c['fnir']:.1%} ({flo:.1%}–{fhi:.1%}) | {c['fpir_at_documented_threshold']:.3g} "
                  f"(t = {d['documented_threshold']}) | {c['adjudications_per_day_at_documented_threshold']:,.0f} |")
    print()
    print("| profile | held-out N | FPIR target | measured FPIR (95% Wilson) | non-mated searches |")
    print("|---|---:|---:|---|---:|")
    for d in docs:
        for c in d["held_out_check"]:
            lo, hi = c["measured_fpir_ci"]
            print(f"| {d['profile']['name']} | {c['gallery_size']:,} | {c['fpir_target']:g} | "
                  f"{c['measured_fpir']:.4f} ({lo:.4f}–{hi:.4f}) | {c['searches']:,} |")
    print()
    for d in docs:
        m = d["machine"]
        print(f"{d['profile']['name']}: {d['impostor_pairs']:,} impostor pairs of {d['templates_paired']:,} templates, "
              f"{d['genuine_pairs']:,} genuine pairs; tail xi = {d['tail']['xi']:.3f}; {d['seconds']['total']:.0f} s on "
              f"{m['cpu']} ({m['cores']} cores)")


if __name__ == "__main__":
    main()
