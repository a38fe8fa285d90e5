"""Calibration on a live deployment: `dedup calibrate` samples impostor pairs from the gallery
of accepted identities and `--apply` records it (audit row, calibration.json, the deployment's
model card, the target in dedup.toml); the threshold then follows the calibration at the
gallery's size. An explicit `search.threshold` the gallery has outgrown is a warning of every
run (stderr, `--json` warnings, audit row).

The accepted identities here are real enrolments (submitted through `dedup submit`, UINs
issued in PostgreSQL) whose gallery templates are face-like synthetic vectors under the
pipeline's ids: embedding dozens of distinct real faces is more than the photos installed
packages ship. The warning after a unit enters the gallery is checked with real photos.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.cli import Cli
from tests.support.live import accepted_gallery, audit_rows
from tests.support.manifests import write_batch

ACCEPTED = 40           # accepted identities; one of them is not in the gallery yet
SYNTHETIC = 2000        # synthetic gallery rows (never sampled)
FAST = {"DEDUP_INDEX_TRAIN_SIZE": "1000", "DEDUP_FACE_WORKERS": "1", "DEDUP_CALIBRATION_BOOTSTRAP": "20"}


@pytest.fixture
def live(deployment: Cli, database_url: str, tmp_path: Path, photos: dict[str, Path]) -> dict[str, Any]:
    """A deployment with 40 accepted identities, one enrolment in adjudication and 2000 synthetic rows."""
    return accepted_gallery(deployment, database_url, tmp_path / "b", photos, ACCEPTED, SYNTHETIC)


def test_live_sample_pairs_accepted_identities_only(deployment: Cli, live: dict[str, Any]) -> None:
    from dedup.evaluation.calibrate import sample_deployment_impostors

    got = sample_deployment_impostors(deployment.home, 10**6, np.random.default_rng(0))
    n = ACCEPTED - 1
    assert (got.accepted, got.gallery_size, got.model_id) == (ACCEPTED, live["size"], live["model_id"])
    assert got.impostor.rows.size == n and got.impostor.n_pairs == n * (n - 1) // 2 and got.impostor.exhaustive
    v = live["vectors"]
    brute = (v @ v.T)[np.triu_indices(n, k=1)]
    # The pending copy of identity 0 (score 1.0 against it) and the synthetic rows are not sampled.
    assert float(got.impostor.tail_scores.max()) == pytest.approx(float(brute.max()), abs=2e-3)
    assert float(brute.max()) < 0.99
    # A sample of fewer pairs takes a random subset of the accepted identities.
    few = sample_deployment_impostors(deployment.home, 100, np.random.default_rng(0))
    assert few.impostor.n_pairs <= 100 and 2 <= few.impostor.rows.size < n


def test_calibrate_apply_from_the_live_gallery(deployment: Cli, database_url: str, live: dict[str, Any]) -> None:
    toml = deployment.home / "dedup.toml"
    toml.write_text(toml.read_text() + "\n# tuned by hand\n[search]\nnprobe = 24\n", encoding="utf-8")
    before = toml.read_text()
    deployment.run("calibrate", "--apply", "--json", user="sue", code=5, env=FAST)   # a supervisor may not
    assert toml.read_text() == before and not audit_rows(database_url, "threshold.calibrate")
    assert not (deployment.home / "calibration.json").exists()

    doc = json.loads(deployment.run("calibrate", "--apply", "--json", "--target-fpir", "0.01", env=FAST).stdout)
    assert (doc["gallery_size"], doc["gallery_size_source"], doc["impostor_source"]) == (live["size"], "deployment gallery",
                                                                                         "deployment gallery")
    assert doc["impostor_pairs"] == (ACCEPTED - 1) * (ACCEPTED - 2) // 2 and doc["expected_fnir"] is None
    assert doc["applied"]["by"] == "admin"
    text = toml.read_text()
    assert text.startswith(before.split("\n# tuned")[0]) and "# tuned by hand" in text
    settings = tomllib.loads(text)
    assert settings["search"] == {"nprobe": 24}          # no threshold pinned: it follows the calibration
    assert settings["calibration"] == {"target_fpir": 0.01}
    card = json.loads((deployment.home / "modelcard.json").read_text())
    assert (card["model_id"], card["kind"], card["provenance"]["impostor_pairs"]) == (live["model_id"], "deployment",
                                                                                      doc["impostor_pairs"])
    assert "accepted identities" in card["provenance"]["data"] and card["provenance"]["synthetic"] is False
    assert settings["store"]["database_url"] == database_url
    [row] = audit_rows(database_url, "threshold.calibrate")
    assert (row["actor"], row["object_id"]) == ("admin", "search.threshold")
    assert row["detail"]["threshold"] == doc["threshold"] and row["detail"]["gallery_size"] == live["size"]
    assert json.loads((deployment.home / "calibration.json").read_text())["calibration"]["threshold"] == doc["threshold"]

    # Calibrated for the gallery as it is: a run has nothing to warn about, and it is in force.
    from dedup.config import load_settings
    from dedup.operating_point import threshold_in_force

    out = deployment.run("run", "--once", "--json", env=FAST)
    assert json.loads(out.stdout)["warnings"] == [] and "warning" not in out.stderr
    assert not audit_rows(database_url, "run.threshold_warning")
    now = threshold_in_force(live["model_id"], live["size"], load_settings(deployment.home), deployment.home)
    assert now.source == "deployment-calibration" and doc["threshold_ci"][1] <= now.value < doc["threshold_ci"][1] + 1e-4


def test_run_warns_when_the_gallery_has_outgrown_an_explicit_threshold(deployment: Cli, database_url: str,
                                                                      live: dict[str, Any]) -> None:
    from dedup.evaluation.calibrate import apply_threshold

    # Calibrated for a gallery of 100, and that threshold pinned by hand; used on one of 2,040.
    doc = deployment.json("calibrate", "--apply", "--gallery-size", "100", env=FAST)
    apply_threshold(deployment.home, doc["threshold"], 0.001)
    out = deployment.run("run", "--once", "--json", env=FAST)
    [warning] = json.loads(out.stdout)["warnings"]
    pinned = math.ceil(doc["threshold"] * 1e6) / 1e6
    assert f"search.threshold {pinned:.4f} implies FPIR" in warning and f"at gallery size {live['size']:,}" in warning
    assert "above the target 0.001" in warning and "this deployment's calibration" in warning
    assert f"warning: {warning}" in out.stderr
    [row] = audit_rows(database_url, "run.threshold_warning")
    assert row["detail"]["gallery_size"] == live["size"] and row["detail"]["fpir"] > row["detail"]["target_fpir"]
    assert row["detail"]["source"] == "setting" and row["detail"]["threshold"] == pinned
    human = deployment.run("run", "--once", env=FAST)                 # without --json: on stderr, once
    assert human.stderr.count("warning: search.threshold") == 1
    assert len(audit_rows(database_url, "run.threshold_warning")) == 2  # one per run


def test_run_warns_when_its_own_enrolments_outgrow_the_threshold(deployment: Cli, database_url: str, tmp_path: Path,
                                                                 live: dict[str, Any]) -> None:
    """The check after a unit enters the gallery: a pinned threshold that meets the target at
    2,040 rows and misses it at 2,042."""
    import matplotlib.cbook
    from PIL import Image

    from dedup.config import load_settings
    from dedup.evaluation.calibrate import apply_threshold
    from dedup.evaluation.tail import fpir_from_fmr
    from dedup.modelcards.calibration_file import load_calibration
    from dedup.operating_point import threshold_in_force

    deployment.run("calibrate", "--apply", "--json", env=FAST)
    cal, tail = load_calibration(deployment.home)
    t = math.ceil(cal["threshold"] * 1e6) / 1e6
    target = float(fpir_from_fmr(tail.fmr(t), live["size"] + 1))   # between FPIR at 2,040 and at 2,042
    apply_threshold(deployment.home, t, target)
    settings = load_settings(deployment.home)
    assert not threshold_in_force(live["model_id"], live["size"], settings, deployment.home).warnings
    assert threshold_in_force(live["model_id"], live["size"] + 2, settings, deployment.home).warnings
    from skimage import data

    folder = tmp_path / "faces"
    (folder / "photos").mkdir(parents=True)
    Image.fromarray(data.astronaut()).save(folder / "photos" / "astronaut.jpg", quality=92)
    hopper = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    hopper.save(folder / "photos" / "hopper.jpg", quality=92)
    rows = [{"enrolment_id": "R1", "centre_id": "C1", "photo": "photos/astronaut.jpg"},
            {"enrolment_id": "R2", "centre_id": "C1", "photo": "photos/hopper.jpg"}]
    deployment.json("submit", str(write_batch(folder, rows, {})), user="c1")
    out = deployment.run("run", "--once", "--json", env=FAST)
    doc = json.loads(out.stdout)
    assert doc["enrolments"] == 2 and doc["rejected"] == 0
    [warning] = doc["warnings"]
    assert f"at gallery size {live['size'] + 2:,}" in warning
    [row] = audit_rows(database_url, "run.threshold_warning")
    assert row["detail"]["gallery_size"] == live["size"] + 2
