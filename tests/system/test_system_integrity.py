"""A damaged or missing gallery is detected end to end, never silently replaced (issue 11).

The real pipeline, real photos (scikit-image's astronaut, matplotlib's Grace Hopper and their
re-framed second captures), the test session's PostgreSQL. Each test enrols two people,
damages the gallery on disk, re-submits second captures of the same people, and checks that
``dedup run`` refuses before deciding anything, that ``gallery stats``/``verify`` name the
damage, and (where it is safe) that ``verify --repair`` gives a gallery in which the second
captures are found: cases, never new UINs.

On the code before this change, deleting CURRENT made ``ensure_gallery`` create a new empty
gallery over the old generations: the second captures were accepted with new UINs (the
issue's reproduction); ``test_resubmitted_captures_after_current_is_deleted_get_no_uin``
asserts the opposite, so it fails there.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.cli import Cli
from tests.system.test_system_pipeline import FAST, batch, faces, states  # noqa: F401  (faces: a fixture)

# A fixed threshold, so these tests do not depend on the operating-point policy.
ENV = {**FAST, "DEDUP_SEARCH_THRESHOLD": "0.9"}


def enrol_two(deployment: Cli, tmp_path: Path, faces: Path) -> None:  # noqa: F811
    deployment.json("submit", str(batch(tmp_path / "b1", faces, [("A1", "astronaut-1.jpg"), ("G1", "hopper-1.jpg")])), user="c1")
    out = deployment.json("run", "--once", env=ENV)
    assert (out["accepted"], out["cases"]) == (2, 0)


def resubmit(deployment: Cli, tmp_path: Path, faces: Path) -> None:  # noqa: F811
    deployment.json("submit", str(batch(tmp_path / "b2", faces, [("A2", "astronaut-2.jpg"), ("G2", "hopper-2.jpg")])), user="c1")


def uin_count(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM uins").fetchone()
        assert row is not None
        return int(row[0])


def assert_refused_before_deciding(deployment: Cli, database_url: str, words: str) -> None:
    r = deployment.run("run", "--once", env=ENV, code=4)
    assert words in r.stderr and "dedup gallery verify" in r.stderr and "Nothing was decided" in r.stderr, r.stderr
    st = states(database_url)
    assert {st["A2"]["state"], st["G2"]["state"]} <= {"received", "processing"}  # neither accepted nor a case
    assert uin_count(database_url) == 2


def assert_found_as_duplicates(deployment: Cli, database_url: str) -> None:
    out = deployment.json("run", "--once", env=ENV)
    assert (out["accepted"], out["cases"]) == (0, 2), out
    st = states(database_url)
    assert st["A2"]["state"] == st["G2"]["state"] == "adjudication" and uin_count(database_url) == 2
    with psycopg.connect(database_url) as conn:
        found = {r[0] for r in conn.execute("SELECT found_in FROM case_candidates")}
    assert found == {"gallery"}


def shard(deployment: Cli) -> Path:
    from dedup.index.gallery import Gallery

    g = Gallery.open(deployment.home / "gallery")
    return deployment.home / "gallery" / "shards" / g.manifest.shards[-1]


def test_resubmitted_captures_after_current_is_deleted_get_no_uin(deployment: Cli, database_url: str, tmp_path: Path, faces: Path) -> None:  # noqa: F811
    enrol_two(deployment, tmp_path, faces)
    (deployment.home / "gallery" / "CURRENT").unlink()
    resubmit(deployment, tmp_path, faces)
    assert_refused_before_deciding(deployment, database_url, "CURRENT is missing")
    assert not (deployment.home / "gallery" / "CURRENT").exists()  # nothing was created over it
    stats = deployment.run("gallery", "stats", code=4)
    assert "CURRENT is missing" in stats.stdout and "DAMAGED" in stats.stdout
    report = json.loads(deployment.run("gallery", "verify", "--json", code=4).stdout)
    assert [f["problem"] for f in report["findings"] if f["damage"]] == ["current_missing"]
    assert report["findings"][0]["repair"].startswith("point CURRENT at generation")
    fixed = deployment.run("gallery", "verify", "--repair")
    assert "repaired: pointed CURRENT at generation" in fixed.stdout and "OK" in fixed.stdout
    health = deployment.json("gallery", "stats")["health"]
    assert health["ok"] and health["last_verify_ok"] and health["recorded_templates"] == 2
    assert_found_as_duplicates(deployment, database_url)
    assert deployment.json("gallery", "verify")["ok"]  # every decided enrolment is in the gallery once


def test_bit_flipped_index_is_refused_then_rebuilt(deployment: Cli, database_url: str, tmp_path: Path, faces: Path) -> None:  # noqa: F811
    enrol_two(deployment, tmp_path, faces)
    path = shard(deployment) / "index.faiss"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    resubmit(deployment, tmp_path, faces)
    assert_refused_before_deciding(deployment, database_url, "index.faiss fails its SHA-256 check")
    report = json.loads(deployment.run("gallery", "verify", "--json", code=4).stdout)
    assert [f["where"].split("/")[-1] for f in report["findings"] if f["damage"]] == ["index.faiss"]
    fixed = deployment.run("gallery", "verify", "--repair")
    assert "rebuilt shard" in fixed.stdout
    assert_found_as_duplicates(deployment, database_url)


@pytest.mark.parametrize("fname", ["vectors.bin", "rows.parquet"])
def test_damaged_vectors_or_id_map_are_refused_with_no_unsafe_repair(deployment: Cli, database_url: str, tmp_path: Path,
                                                                      faces: Path, fname: str) -> None:  # noqa: F811
    enrol_two(deployment, tmp_path, faces)
    path = shard(deployment) / fname
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x40  # same size: only a checksum can see it
    path.write_bytes(bytes(data))
    resubmit(deployment, tmp_path, faces)
    assert_refused_before_deciding(deployment, database_url, f"{fname} fails its SHA-256 check")
    assert f"{fname} fails its SHA-256" in deployment.run("gallery", "stats", code=4).stdout
    again = deployment.run("gallery", "verify", "--repair", code=4)
    assert "no safe repair" in again.stdout and "repaired:" not in again.stdout
    assert_refused_before_deciding(deployment, database_url, fname)


def test_a_changed_manifest_is_restored_from_the_database(deployment: Cli, database_url: str, tmp_path: Path, faces: Path) -> None:  # noqa: F811
    enrol_two(deployment, tmp_path, faces)
    gen = deployment.home / "gallery" / "generations" / (deployment.home / "gallery" / "CURRENT").read_text().strip()
    gen.write_text(gen.read_text().replace('"next_row_id": 2', '"next_row_id": 1'))
    resubmit(deployment, tmp_path, faces)
    assert_refused_before_deciding(deployment, database_url, "fails its checksum")
    fixed = deployment.run("gallery", "verify", "--repair")
    assert "back from the database's copy" in fixed.stdout
    assert_found_as_duplicates(deployment, database_url)


def test_a_removed_shard_is_refused(deployment: Cli, database_url: str, tmp_path: Path, faces: Path) -> None:  # noqa: F811
    import shutil

    enrol_two(deployment, tmp_path, faces)
    shutil.rmtree(shard(deployment))
    resubmit(deployment, tmp_path, faces)
    assert_refused_before_deciding(deployment, database_url, "is missing")
    assert "shard_missing" in deployment.run("gallery", "verify", "--json", code=4).stdout


# ---------------------------------------------------------------- disk full


@pytest.fixture
def full_gallery_disk(deployment: Cli) -> Iterator[Path]:
    """The deployment's gallery folder on a 1 MiB tmpfs, filled up but for a few pages."""
    mnt = deployment.home / "gallery"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs here ({r.stderr.strip()}): the disk-full tests need a real file "
                    "system that fills up; run the suite as root, as `make test` does")
    filler = mnt / "filler"
    try:
        st = os.statvfs(mnt)
        filler.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 3 * 4096))
        yield filler
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_stops_the_run_cleanly_and_it_resumes(deployment: Cli, database_url: str, tmp_path: Path,
                                                        full_gallery_disk: Path, faces: Path) -> None:  # noqa: F811
    deployment.json("submit", str(batch(tmp_path / "b1", faces, [("A1", "astronaut-1.jpg"), ("G1", "hopper-1.jpg")])),
                    user="c1")
    r = deployment.run("run", "--once", env=ENV, code=10)  # Cli.run also fails on any traceback
    assert "disk full while writing" in r.stderr and "free" in r.stderr, r.stderr
    st = states(database_url)
    assert {v["state"] for v in st.values()} == {"processing"} and uin_count(database_url) == 0  # nothing decided
    assert not [p for p in (deployment.home / "gallery").rglob(".*tmp*")]  # nothing half-written left
    full_gallery_disk.unlink()  # space freed
    out = deployment.json("run", "--once", env=ENV)
    assert (out["accepted"], out["cases"]) == (2, 0)
    assert deployment.json("gallery", "verify")["ok"]


@pytest.mark.parametrize("point", ["gallery.prepared", "gallery.manifest_written", "gallery.switched"])
def test_killed_around_the_switch_the_record_and_files_still_agree(deployment: Cli, database_url: str, tmp_path: Path,
                                                                   faces: Path, point: str) -> None:  # noqa: F811
    """Two phases: killed after the database expects the next generation, after its file is
    written, or after CURRENT names it but before the database says so: the next run
    recognises the state, completes or redoes the add, and every enrolment is in once."""
    import sys

    from dedup.faults import CRASH_EXIT_CODE

    enrol_two(deployment, tmp_path, faces)
    resubmit(deployment, tmp_path, faces)
    env = {**os.environ, **ENV, "DEDUP_HOME": str(deployment.home), "DEDUP_USER": "admin", "DEDUP_CRASH_AT": point}
    r = subprocess.run([sys.executable, "-m", "dedup.cli", "run", "--once", "--json"], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == CRASH_EXIT_CODE, r.stderr
    out = deployment.json("run", "--once", env=ENV)
    assert out["accepted"] == 0 and "Traceback" not in json.dumps(out)
    report = deployment.json("gallery", "verify")
    assert report["ok"] and report["rows"] == 4, report
    health = deployment.json("gallery", "stats")["health"]
    assert health["pending_generation"] is None and health["recorded_templates"] == 4


def test_a_gallery_without_a_record_is_refused_until_adopted(deployment: Cli, database_url: str, tmp_path: Path,
                                                             faces: Path) -> None:  # noqa: F811
    """A gallery made before the database kept records (or whose record was lost) is not used
    blindly, and not replaced: `verify --repair` records it once every check passes."""
    enrol_two(deployment, tmp_path, faces)
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM galleries")
    resubmit(deployment, tmp_path, faces)
    assert_refused_before_deciding(deployment, database_url, "the database has no record of")
    fixed = deployment.run("gallery", "verify", "--repair")
    assert "recorded gallery" in fixed.stdout
    assert deployment.json("gallery", "stats")["health"]["recorded_templates"] == 2
    out = deployment.json("run", "--once", env=ENV)
    assert out["enrolments"] == 2 and not any(f["damage"] for f in deployment.json("gallery", "verify")["findings"])
