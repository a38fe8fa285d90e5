"""Settings: defaults, the deployment's TOML file, DEDUP_* variables, errors, docs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dedup.cli import app
from dedup.config import Settings, describe, load_settings, markdown_table
from dedup.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_toml_then_environment(tmp_path: Path) -> None:
    assert load_settings(None, {}) == Settings()
    (tmp_path / "dedup.toml").write_text("[search]\nthreshold = 0.91\nnprobe = 24\n[index]\npq_bits = 8\n")
    s = load_settings(tmp_path, {})
    assert (s.search.threshold, s.search.nprobe, s.index.pq_bits) == (0.91, 24, 8)
    s = load_settings(tmp_path, {"DEDUP_SEARCH_NPROBE": "48", "DEDUP_HOME": "/elsewhere", "OTHER": "x"})
    assert s.search.nprobe == 48 and s.search.threshold == 0.91


@pytest.mark.parametrize(("toml", "env", "message"), [
    ("[search]\nthreshold = 2.0\n", {}, r"\[search\]: threshold is a cosine"),
    ("[serch]\nthreshold = 0.5\n", {}, r"unknown section \[serch\]"),
    ("[search]\nthreshhold = 0.5\n", {}, r"unknown setting 'threshhold'"),
    ("[search]\nnprobe = 'many'\n", {}, r"\[search\] nprobe: expected int"),
    ("[search\n", {}, r"not valid TOML"),
    ("", {"DEDUP_SEARCH_NPROBE": "0"}, r"nprobe must be >= 1"),
    ("", {"DEDUP_NOPE_X": "1"}, r"DEDUP_NOPE_X: no such setting section"),
    ("", {"DEDUP_INDEX_PQ_BITS": "six"}, r"expected int"),
])
def test_bad_settings_are_named(tmp_path: Path, toml: str, env: dict, message: str) -> None:
    (tmp_path / "dedup.toml").write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_settings(tmp_path, env)


def test_every_setting_is_documented() -> None:
    for row in describe():
        assert row["doc"] and len(row["doc"]) > 15, row["name"]
        assert row["env"] == "DEDUP_" + row["name"].replace(".", "_").upper()


def test_readme_settings_table_is_current() -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- settings-table[^>]*-->\n(.*?)<!-- /settings-table -->", readme, re.S)
    assert match, "README lost its settings table markers"
    assert match.group(1).strip() == markdown_table().strip(), (
        "README settings table is stale: regenerate it with `dedup config --markdown`")


def test_config_command(tmp_path: Path) -> None:
    (tmp_path / "dedup.toml").write_text("[search]\nnprobe = 20\n")
    result = CliRunner().invoke(app, ["config", "--home", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert '"value": 20' in result.output
    (tmp_path / "dedup.toml").write_text("[search]\nnprobe = 0\n")
    result = CliRunner().invoke(app, ["config", "--home", str(tmp_path)])
    assert result.exit_code == 2 and "nprobe must be >= 1" in result.output and "Traceback" not in result.output


def test_a_command_started_with_the_crash_variables_set_works(tmp_path: Path) -> None:
    """DEDUP_CRASH_ONCE (read by dedup.faults) is not a setting: a `dedup` process started
    with it set (as the Dask crash tests start their workers) must run, not exit 2."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "DEDUP_CRASH_AT": "nowhere", "DEDUP_CRASH_ONCE": str(tmp_path / "once")}
    env.pop("DEDUP_HOME", None)
    proc = subprocess.run([sys.executable, "-m", "dedup.cli", "config", "--home", str(tmp_path), "--json"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert '"name": "search.threshold"' in proc.stdout


def test_every_non_setting_variable_read_by_dedup_is_registered() -> None:
    """Every ``DEDUP_*`` name in dedup's source is a setting's variable or in the registry."""
    from dedup.config import NON_SETTING_ENV, env_value

    settings_env = {row["env"] for row in describe()}
    named = {m for p in (ROOT / "dedup").rglob("*.py") for m in re.findall(r"\bDEDUP_[A-Z][A-Z0-9_]*[A-Z0-9]\b", p.read_text())}
    placeholders = {"DEDUP_SECTION_FIELD"}  # the naming rule, as config.py's docstring spells it
    unknown = named - settings_env - set(NON_SETTING_ENV) - placeholders
    assert not unknown, f"register in config.NON_SETTING_ENV (or make them settings): {sorted(unknown)}"
    with pytest.raises(KeyError, match="NON_SETTING_ENV"):
        env_value("DEDUP_NOT_REGISTERED")
