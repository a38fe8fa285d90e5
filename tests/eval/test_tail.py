"""The tail model: GPD fit, FPIR(N) algebra, and calibration checked on held-out galleries."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dedup.bench.synth import Group, SyntheticData, SynthSpec, get_profile
from dedup.evaluation.calibrate import calibrate
from dedup.evaluation.identification import search_prefixes, threshold_for_fpir
from dedup.evaluation.metrics import empirical_threshold, per_group
from dedup.evaluation.scores import genuine_scores, impostor_sample
from dedup.evaluation.stats import rate_ratio_interval
from dedup.evaluation.tail import GPD, fit_gpd, fit_tail, fmr_for_fpir, fpir_from_fmr


@pytest.mark.parametrize("xi,sigma", [(-0.2, 0.01), (0.0, 0.02), (0.15, 0.005)])
def test_gpd_fit_recovers_parameters(xi: float, sigma: float) -> None:
    rng = np.random.default_rng(1)
    y = GPD(xi, sigma).isf(rng.random(20_000))
    fit = fit_gpd(y)
    assert abs(fit.xi - xi) < 0.04
    assert abs(fit.sigma / sigma - 1) < 0.06
    # Weights count as repeated observations.
    w = rng.integers(1, 3, y.size).astype(float)
    assert abs(fit_gpd(np.repeat(y, w.astype(int))).xi - fit_gpd(y, w).xi) < 1e-3


def test_gpd_sf_isf_inverse() -> None:
    for g in (GPD(-0.3, 0.01), GPD(0.0, 0.01), GPD(0.2, 0.01)):
        q = np.array([0.5, 1e-3, 1e-9])
        assert np.allclose(g.sf(g.isf(q)), q, rtol=1e-9)


def test_fpir_fmr_algebra() -> None:
    n, f = 1_000_000, 1e-9                        # series: N f - C(N, 2) f^2 + C(N, 3) f^3
    assert fpir_from_fmr(f, n) == pytest.approx(n * f - n * (n - 1) / 2 * f**2 + n * (n - 1) * (n - 2) / 6 * f**3, rel=1e-9)
    for n in (1, 1000, 10**9):
        assert fpir_from_fmr(fmr_for_fpir(1e-3, n), n) == pytest.approx(1e-3, rel=1e-9)
    assert fmr_for_fpir(1e-3, 10**6) == pytest.approx(1e-9, rel=1e-3)


def test_calibrated_threshold_holds_on_held_out_gallery() -> None:
    """Calibrate on one part of a synthetic population, check on a gallery it never saw."""
    profile = get_profile("face-like")
    data = SyntheticData(SynthSpec(profile, 60_000, queries=20_000, duplicate_rate=0.0, mated_fraction=0.0, seed=11))
    gal = data.gallery()
    train = slice(0, 20_000)
    rng = np.random.default_rng(0)
    imp = impostor_sample(gal.vectors[train], gal.identity[train], gal.group[train], [g.name for g in profile.groups],
                          max_pairs=30_000_000, rng=rng)
    tail = fit_tail(imp, bootstrap=100, rng=rng)
    n, target = 40_000, 0.01
    cal = calibrate(tail, None, target, n, profile.model_id, imp)
    assert cal.threshold_source == "tail-model"                   # beyond what 3e7 pairs can count
    assert cal.threshold_ci[0] < cal.threshold < cal.threshold_ci[1]
    probes = data.probes()
    held = search_prefixes(probes.vectors, probes.identity, [(gal.vectors[20_000:], gal.identity[20_000:])], [n])
    measured = float(np.mean(held.nonmate[0] >= cal.threshold))
    assert cal.fpir_ci[0] <= measured <= cal.fpir_ci[1], (measured, cal.fpir_ci)
    t_held = threshold_for_fpir(held.nonmate[0], target)
    assert cal.threshold_ci[0] <= t_held <= cal.threshold_ci[1], (t_held, cal.threshold_ci)
    # The one policy's arithmetic: the threshold holds the target at its size, and the gallery
    # outgrows it: at 100 times the size the same threshold gives about 100 times the FPIR,
    # and the threshold for the target is higher.
    from dedup.operating_point import fpir_at, threshold_for_target

    assert threshold_for_target(tail, target, n) == cal.threshold
    assert fpir_at(tail, cal.threshold, n)[0] == pytest.approx(target, rel=1e-6)
    late, late_ci = fpir_at(tail, cal.threshold, 100 * n)
    assert late > 50 * target and late_ci[0] <= late <= late_ci[1]
    assert threshold_for_target(tail, target, 100 * n) > cal.threshold


def _group_rows(spreads: tuple[float, float]) -> dict[str, object]:
    profile = dataclasses.replace(get_profile("face-like"),
                                  groups=(Group("A", 0.5, spreads[0]), Group("B", 0.5, spreads[1])))
    data = SyntheticData(SynthSpec(profile, 6000, queries=0, duplicate_rate=0.2, seed=4))
    gal = data.gallery()
    imp = impostor_sample(gal.vectors, gal.identity, gal.group, ["A", "B"], max_pairs=10**9)
    gen = genuine_scores(gal.vectors, gal.identity, gal.group)
    t = empirical_threshold(imp, 1e-3)
    return {r.group: r for r in per_group(imp, gen, t)}


def test_group_with_narrower_spread_shows_its_differential() -> None:
    """Same population twice: group B given a narrower identity spread must show a higher FMR
    relative to group A than it has with equal spreads (groups differ a little anyway: their
    directions sit at different angles to the common face direction)."""
    def ratio(rows: dict[str, object]) -> tuple[float, float, float]:
        a, b = rows["A"], rows["B"]
        return rate_ratio_interval(b.false_matches, b.impostor_pairs, a.false_matches, a.impostor_pairs)

    r0, lo0, hi0 = ratio(_group_rows((1.0, 1.0)))
    planted = _group_rows((1.0, 0.8))
    r1, lo1, hi1 = ratio(planted)
    assert r1 > 2 * r0 and lo1 > hi0
    assert planted["B"].fmr > planted["A"].fmr
