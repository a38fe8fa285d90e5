"""The one threshold policy (``dedup.operating_point``): precedence, warnings, refusal, growth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dedup.bench.synth import SyntheticData, SynthSpec, get_profile
from dedup.config import Settings
from dedup.errors import NoOperatingPoint
from dedup.evaluation.calibrate import calibrate
from dedup.evaluation.scores import impostor_sample
from dedup.evaluation.tail import fit_tail, fpir_from_fmr
from dedup.modelcards import load_card
from dedup.modelcards.calibration_file import save_calibration
from dedup.operating_point import held_threshold, ratchet, threshold_for_target, threshold_in_force

FACE = get_profile("face-like").model_id


def test_model_card_threshold_rises_with_the_gallery() -> None:
    card = load_card(FACE)
    assert card is not None and card.provenance.impostor_pairs >= 10**8 and card.documented_threshold == 0.908
    got = [threshold_in_force(FACE, n, Settings()) for n in (10**3, 10**5, 10**6, 10**7)]
    point_settings = Settings().replace("calibration", hold_with_confidence=False)
    values = [g.value for g in got]
    assert values == sorted(values) and len(set(values)) == 4 and all(round(v, 4) == v for v in values)
    for g in got:
        assert g.source == "model-card" and g.warnings == () and g.target_fpir == 1e-3
        point = threshold_for_target(card.tail, 1e-3, g.gallery_size)
        held = held_threshold(card.tail, 1e-3, g.gallery_size)             # the bootstrap interval's upper end
        assert point < held <= g.value < held + 1e-4                        # rounded up, never down
        assert threshold_in_force(FACE, g.gallery_size, point_settings).value == pytest.approx(point, abs=1e-4)
        assert g.fpir == pytest.approx(float(fpir_from_fmr(card.tail.fmr(g.value), g.gallery_size)))
        assert g.fpir <= 1e-3 * (1 + 1e-9) and g.fpir_ci[0] <= g.fpir <= g.fpir_ci[1]
    # Far above dlib's documented LFW rule (0.908), which the policy never uses.
    assert values[0] > 0.93


def test_explicit_setting_wins_and_warns_when_it_misses_the_target() -> None:
    loose = Settings().replace("search", threshold=0.93)
    got = threshold_in_force(FACE, 10**6, loose)
    assert (got.value, got.source) == (0.93, "setting") and got.fpir > 0.5
    [warning] = got.warnings
    assert "search.threshold 0.9300 implies FPIR" in warning and "above the target 0.001" in warning
    strict = threshold_in_force(FACE, 10**6, Settings().replace("search", threshold=0.99))
    assert strict.warnings == () and strict.fpir < 1e-3
    # A plugged model with an explicit threshold: kept, but its FPIR is unknown and it says so.
    blind = threshold_in_force("onnx-0123456789abcdef", 10**6, strict_settings := Settings().replace("search", threshold=0.5))
    assert blind.value == strict_settings.search.threshold and blind.fpir is None and "unknown" in blind.warnings[0]


def test_no_card_no_calibration_is_refused() -> None:
    with pytest.raises(NoOperatingPoint) as err:
        threshold_in_force("onnx-0123456789abcdef", 1000, Settings())
    assert "has no model card" in str(err.value) and "dedup calibrate --templates" in str(err.value)
    assert err.value.exit_code == 2


def test_calibration_comes_before_the_card_and_only_for_its_model(tmp_path: Path) -> None:
    profile = get_profile("face-like")
    gal = SyntheticData(SynthSpec(profile, 4000, queries=0, seed=8)).gallery()
    imp = impostor_sample(gal.vectors, gal.identity, gal.group, ["A", "B", "C", "D"], max_pairs=5_000_000,
                          rng=np.random.default_rng(0))
    tail = fit_tail(imp, bootstrap=20)
    cal = calibrate(tail, None, 1e-3, 10**5, FACE, imp)
    save_calibration(tmp_path, cal.to_dict(), tail)
    got = threshold_in_force(FACE, 10**5, Settings(), tmp_path)
    held = held_threshold(tail, 1e-3, 10**5)
    assert got.source == "deployment-calibration" and cal.threshold < held <= got.value < held + 1e-4
    assert threshold_in_force(FACE, 10**5, Settings()).source == "model-card"          # without the home
    other = get_profile("uniform").model_id
    elsewhere = threshold_in_force(other, 10**5, Settings(), tmp_path)
    assert elsewhere.source == "model-card" and "not used" in elsewhere.warnings[0]
    (tmp_path / "calibration.json").write_text("{broken", encoding="utf-8")
    broken = threshold_in_force(FACE, 10**5, Settings(), tmp_path)
    assert broken.source == "model-card" and "calibration not used" in broken.warnings[0]


def test_ratchet_never_lets_it_fall_by_itself() -> None:
    big = threshold_in_force(FACE, 10**6, Settings())
    small = threshold_in_force(FACE, 10**4, Settings())
    assert small.value < big.value
    kept = ratchet(small, big.value, big.basis)                  # the gallery shrank: same tail, keep the higher
    assert kept.value == big.value and kept.gallery_size == small.gallery_size
    assert ratchet(small, big.value, "deployment-calibration@another").value == small.value   # a new tail: taken as is
    assert ratchet(big, small.value, big.basis).value == big.value
    pinned = threshold_in_force(FACE, 10**4, Settings().replace("search", threshold=0.95))
    assert ratchet(pinned, 0.99, pinned.basis).value == 0.95     # an explicit setting is a decision
