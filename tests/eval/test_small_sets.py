"""`dedup eval` and `dedup calibrate` on a set too small for most of their figures: every figure
says where it comes from, and what the pair count cannot support is "not estimable", never an
"empirical" number that is only the highest impostor score.

The set: 10 templates of 5 identities (two captures each) of the face-like profile, so 5
genuine and 40 impostor pairs, like a folder of 10 photos of 5 people. 40 pairs cannot show an
FMR below about 1/40, and no tail model can be fitted to them.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dedup.bench.synth import SyntheticData, SynthSpec, get_profile, write_parquet
from dedup.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 templates, 5 identities x 2 captures (a probe of each gallery person as the second capture)."""
    out = tmp_path_factory.mktemp("tiny")
    data = SyntheticData(SynthSpec(get_profile("face-like"), 200, queries=20, duplicate_rate=0.0, mated_fraction=1.0, seed=3))
    files = write_parquet(data, out)
    gallery, probes = pq.read_table(files["gallery"]), pq.read_table(files["probes"])
    people: list[str] = []
    for who in probes.column("identity").to_pylist():
        if who not in people:
            people.append(who)
    people = people[:5]
    keep = pa.array(people)
    parts = [t.filter(pc.is_in(t.column("identity"), value_set=keep)).select(gallery.schema.names) for t in (gallery, probes)]
    parts = [p.cast(gallery.schema) for p in parts]
    table = pa.concat_tables(parts)
    path = out / "tiny.parquet"
    pq.write_table(table, path)
    ident = table.column("identity").to_pylist()
    assert len(ident) == 10 and len(set(ident)) == 5
    return path


def test_eval_says_not_estimable(tiny: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # no matplotlib UserWarning may escape
        res = runner.invoke(app, ["eval", str(tiny), "--out", str(tmp_path / "r"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert (doc["counts"]["impostor_pairs"], doc["counts"]["genuine_pairs"]) == (40, 5)
    assert doc["tail_model"] is None and "no tail model" in doc["tail_note"]
    rows = doc["fnmr_at_fmr"]
    assert [r["fmr_target"] for r in rows] == [1e-3, 1e-4, 1e-5, 1e-6]
    for r in rows:                                          # 40 pairs support none of them
        assert r["source"] == "not estimable" and r["threshold"] is None and r["fnmr"] is None
        assert "not estimable from 40 impostor pairs" in r["note"]
    # The operating threshold is the one in force for the profile's model (its card), said so.
    assert "threshold in force" in doc["threshold_source"] and "model-card" in doc["threshold_source"]
    src = doc["figure_sources"]
    assert src["at_threshold"].startswith("empirical: ") and "of 40 sampled impostor pairs" in src["at_threshold"]
    assert "not estimable" in src["at_threshold"]            # no impostor pair reaches it: FMR 0 of 40 proves nothing
    for size in doc["identification"]:
        for p in size["fnir_at_fpir"]:
            assert p["fnir"] is None and p["note"].startswith("not estimable from ")
    report = (tmp_path / "r" / "report.md").read_text()
    assert "not estimable from 40 impostor pairs" in report and "| empirical" not in report

    human = runner.invoke(app, ["eval", str(tiny), "--out", str(tmp_path / "h")])
    assert human.exit_code == 0, human.output
    assert human.output.count("not estimable from 40 impostor pairs") == 4 and "UserWarning" not in human.output


def test_eval_with_enough_pairs_says_empirical_or_tail(tmp_path: Path) -> None:
    """The same rows on a set that supports them: each says which, and why."""
    data = SyntheticData(SynthSpec(get_profile("face-like"), 3000, queries=500, duplicate_rate=0.05, seed=4))
    files = write_parquet(data, tmp_path / "set")
    res = runner.invoke(app, ["eval", str(files["gallery"]), "--out", str(tmp_path / "r"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    n = doc["counts"]["impostor_pairs"]
    for r in doc["fnmr_at_fmr"]:
        if n * r["fmr_target"] >= 10:
            assert r["source"] == "empirical" and f"read from {n:,} sampled impostor pairs" in r["note"]
        else:
            assert r["source"] == "tail-model" and "extrapolated by the tail model" in r["note"]
    assert {r["source"] for r in doc["fnmr_at_fmr"]} == {"empirical", "tail-model"}


def test_calibrate_on_a_small_set_is_not_estimable(tiny: Path) -> None:
    res = runner.invoke(app, ["calibrate", "--templates", str(tiny), "--gallery-size", "1000000"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "is not estimable from 40 impostor pairs" in res.output


def test_calibrate_says_where_each_figure_comes_from(tmp_path: Path) -> None:
    data = SyntheticData(SynthSpec(get_profile("face-like"), 3000, queries=0, duplicate_rate=0.1, seed=5))
    files = write_parquet(data, tmp_path / "set")
    res = runner.invoke(app, ["calibrate", "--templates", str(files["gallery"]), "--gallery-size", "1000000", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["threshold_source"] == "tail-model" and doc["sources"]["threshold"].startswith("tail model: ")
    assert f"below 1/{doc['impostor_pairs']:,} pairs" in doc["sources"]["threshold"]
    assert doc["sources"]["expected_fnir"].startswith(f"empirical: share of {doc['genuine_pairs']:,} genuine pairs")
    # What was in force before: the profile's model card at this size.
    assert doc["threshold_in_force"]["source"] == "model-card" and doc["threshold_in_force"]["gallery_size"] == 1_000_000
    human = runner.invoke(app, ["calibrate", "--templates", str(files["gallery"]), "--gallery-size", "1000000"])
    assert human.exit_code == 0 and "from: tail model: " in human.output and "from: empirical: share of" in human.output
    assert np.isfinite(doc["threshold"])
