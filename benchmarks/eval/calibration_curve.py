"""Calibration curve: threshold vs gallery size for a target FPIR, FNIR at each, daily load.

For each synthetic profile (``face-like`` stands for the default dlib model, ``arcface-like``
for an ArcFace-class model):

1. impostor pairs: all pairs of a random subset of a synthetic gallery (``--pairs``), the
   tail model (generalized Pareto above the top 1e-4) with a bootstrap over templates;
2. genuine pairs: planted duplicates (two captures of one identity) of the same gallery;
3. the threshold holding FPIR = ``--fpir`` for N = 1e3 .. 1e9 (``FPIR = 1 - (1 - FMR)^N``),
   its interval, the FNIR it costs, and the adjudication cases per day at 1M enrolments/day,
   at the calibrated threshold and at the profile's documented threshold;
4. a check of the model against exact searches of held-out galleries (non-mated probes of
   the same population, nested galleries up to ``--check-size``): measured FPIR at the
   model's thresholds, with Wilson intervals.

    python benchmarks/eval/calibration_curve.py --profile face-like --out benchmarks/eval/results
    python benchmarks/eval/plot_calibration.py benchmarks/eval/results

Writes ``calibration-<profile>.json`` (the machine included).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from dedup.bench.synth import SyntheticData, SynthSpec, get_profile
from dedup.evaluation.calibrate import calibrate
from dedup.evaluation.identification import search_prefixes
from dedup.evaluation.scores import genuine_scores, impostor_sample
from dedup.evaluation.stats import wilson_interval
from dedup.evaluation.tail import fit_tail, fmr_for_fpir, fpir_from_fmr
from dedup.machine import machine_info

SIZES = [10**3, 10**4, 10**5, 10**6, 10**7, 10**8, 10**9]
RATE = 1_000_000  # enrolments per day


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="face-like")
    ap.add_argument("--fpir", type=float, default=1e-3)
    ap.add_argument("--population", type=int, default=300_000, help="synthetic gallery the pairs are drawn from")
    ap.add_argument("--pairs", type=float, default=1e8, help="impostor pairs sampled")
    ap.add_argument("--check-size", type=int, default=1_000_000, help="largest held-out gallery searched exactly")
    ap.add_argument("--check-probes", type=int, default=4000, help="non-mated searches of the held-out check")
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/eval/results"))
    args = ap.parse_args()

    profile = get_profile(args.profile)
    t0 = time.time()
    data = SyntheticData(SynthSpec(profile, args.population, queries=0, duplicate_rate=0.05, seed=args.seed))
    gal = data.gallery()
    rng = np.random.default_rng(args.seed)
    names = [g.name for g in profile.groups]
    imp = impostor_sample(gal.vectors, gal.identity, gal.group, names, max_pairs=int(args.pairs), rng=rng)
    gen = genuine_scores(gal.vectors, gal.identity, gal.group)
    t_pairs = time.time() - t0
    tail = fit_tail(imp, bootstrap=args.bootstrap, rng=rng)
    print(f"{args.profile}: {imp.n_pairs:,} impostor pairs of {imp.rows.size:,} templates, {gen.n_pairs:,} genuine "
          f"pairs ({t_pairs:.0f} s); tail u={tail.u:.4f} xi={tail.gpd.xi:.3f} sigma={tail.gpd.sigma:.4g}", flush=True)

    curve = []
    for n in SIZES:
        cal = calibrate(tail, gen, args.fpir, n, profile.model_id, imp, RATE, 0.0, profile.threshold)
        fixed_fpir = cal.current_fpir
        curve.append({
            "gallery_size": n, "fmr_target": cal.fmr_target, "threshold": cal.threshold,
            "threshold_ci": cal.threshold_ci, "threshold_source": cal.threshold_source,
            "fnir": cal.expected_fnir, "fnir_ci": cal.expected_fnir_ci,
            "adjudications_per_day_calibrated": cal.adjudications_per_day,
            "fpir_at_documented_threshold": fixed_fpir, "fpir_at_documented_threshold_ci": cal.current_fpir_ci,
            "adjudications_per_day_at_documented_threshold": None if fixed_fpir is None else RATE * fixed_fpir,
        })
        print(f"  N={n:>13,}  t={cal.threshold:.4f} [{cal.threshold_ci[0]:.4f}, {cal.threshold_ci[1]:.4f}] "
              f"({cal.threshold_source})  FNIR={cal.expected_fnir:.4f}  FPIR@{profile.threshold}={fixed_fpir:.3g}", flush=True)
    # Gallery size at which the documented threshold stops holding the target FPIR.
    fmr_doc = float(tail.fmr(profile.threshold))
    n_doc = float(np.log1p(-args.fpir) / np.log1p(-fmr_doc)) if fmr_doc > 0 else float("inf")

    # Held-out check by exact searches (a different seed: a population the model never saw).
    t1 = time.time()
    check_sizes = [s for s in (10**4, 10**5, 10**6, 10**7) if s < args.check_size] + [args.check_size]
    held = SyntheticData(SynthSpec(profile, args.check_size, queries=args.check_probes, duplicate_rate=0.0,
                                   mated_fraction=0.0, seed=args.seed + 1000))
    probes = held.probes()
    out = search_prefixes(probes.vectors, probes.identity, ((b.vectors, b.identity) for b in held.blocks()),
                          check_sizes, total=args.check_size)
    checks = []
    for s, n in enumerate(check_sizes):
        for target in (args.fpir, 1e-2, 1e-1):
            t = tail.threshold_for_fmr(fmr_for_fpir(target, n))
            lo_t, hi_t = tail.threshold_interval(fmr_for_fpir(target, n))
            hits = int(np.count_nonzero(out.nonmate[s] >= t))
            lo, hi = wilson_interval(hits, out.nonmate.shape[1])
            checks.append({"gallery_size": n, "fpir_target": target, "threshold": t, "threshold_ci": [lo_t, hi_t],
                           "measured_fpir": hits / out.nonmate.shape[1], "measured_fpir_ci": [float(lo), float(hi)],
                           "searches": int(out.nonmate.shape[1]), "false_positive_searches": hits,
                           "model_fpir_at_documented_threshold": float(fpir_from_fmr(fmr_doc, n)),
                           "measured_fpir_at_documented_threshold":
                               float(np.mean(out.nonmate[s] >= profile.threshold))})
            print(f"  check N={n:>9,} target {target:g}: measured {hits / out.nonmate.shape[1]:.4f} "
                  f"[{float(lo):.4f}, {float(hi):.4f}] at t={t:.4f}", flush=True)
    doc = {
        "profile": dataclasses.asdict(profile), "fpir_target": args.fpir, "enrolments_per_day": RATE,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "impostor_pairs": imp.n_pairs, "templates_paired": int(imp.rows.size), "genuine_pairs": gen.n_pairs,
        "tail": {"u": tail.u, "p_u": tail.p_u, "xi": tail.gpd.xi, "sigma": tail.gpd.sigma,
                 "exceedances": tail.n_exceed, "bootstrap": int(tail.boot.shape[0])},
        "documented_threshold": profile.threshold,
        "gallery_size_where_documented_threshold_exceeds_target": n_doc,
        "curve": curve, "held_out_check": checks,
        "seconds": {"pairs": t_pairs, "check": time.time() - t1, "total": time.time() - t0},
        "machine": machine_info(),
        "model": "FPIR(N, t) = 1 - (1 - FMR(t))^N; FMR(t) sampled below u, generalized Pareto above u; "
                 "intervals: percentile bootstrap over templates; FNIR = FNMR of genuine pairs at t",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"calibration-{args.profile}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
