"""Gallery integrity on real galleries on disk: every file hashed before the switch, each kind
of damage (deleted CURRENT, truncated and bit-flipped index, vectors, id map, manifest, a
removed shard) refused with the specific error and named by the check, safe repairs giving
back the same search results, and a real disk-full (a small tmpfs) failing cleanly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dedup.bench.synth import SyntheticData, SynthSpec, get_profile
from dedup.errors import DiskError, GalleryError, InsufficientResources
from dedup.index.gallery import Gallery
from dedup.index.integrity import file_digest, human_bytes
from dedup.index.params import SearchParams
from dedup.index.shard import SHARD_FILES
from dedup.index.verify import check, repair
from tests.support.galleries import SMALL

PARAMS = SearchParams(threshold=0.9, nprobe=64, depth=64, max_depth=4096, max_candidates=100)


@pytest.fixture(scope="module")
def data() -> SyntheticData:
    return SyntheticData(SynthSpec(get_profile("face-like", dim=64), gallery_size=4000, queries=200,
                                   duplicate_rate=0.05, seed=5))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory, data: SyntheticData) -> Path:
    """One gallery of two shards (two adds), never damaged: tests copy it."""
    root = tmp_path_factory.mktemp("pristine") / "g"
    gal = data.gallery()
    half = len(gal.row_ids) // 2
    g = Gallery.create(root, data.profile.model_id, data.profile.dim, SMALL)
    g.train(gal.vectors[:SMALL.train_size], seed=7)
    g.add(gal.vectors[:half], [f"e{r}" for r in gal.row_ids[:half]])
    g.add(gal.vectors[half:], [f"e{r}" for r in gal.row_ids[half:]])
    return root


@pytest.fixture
def gallery_copy(tmp_path: Path, pristine: Path) -> Path:
    dst = tmp_path / "g"
    shutil.copytree(pristine, dst)
    return dst


def results(root: Path, probes: np.ndarray, settings: object = SMALL) -> list[list[tuple[int, float]]]:
    g = Gallery.open(root, settings)  # type: ignore[arg-type]
    c = g.search(probes, PARAMS)
    return [list(zip(c.row_ids[c.offsets[i]:c.offsets[i + 1]].tolist(), np.round(c.scores[c.offsets[i]:c.offsets[i + 1]], 6).tolist()))
            for i in range(len(c.offsets) - 1)]


def shard_dir(root: Path, i: int = 0) -> Path:
    return root / "shards" / Gallery.open(root, SMALL).manifest.shards[i]


def flip(path: Path, at: float = 0.5) -> None:
    """Flip one bit in the middle of a file, same size."""
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x10
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(max(1, path.stat().st_size // 2))


def test_every_file_and_manifest_carries_a_hash(pristine: Path) -> None:
    g = Gallery.open(pristine, SMALL)
    assert len(g.manifest.shards) == 2 and g.manifest.rows == 4000 == len(g)
    for name in g.manifest.shards:
        folder = pristine / "shards" / name
        meta = json.loads((folder / "meta.json").read_text())
        assert set(SHARD_FILES) <= set(meta["files"]) and "checksum" in meta
        for f in SHARD_FILES:
            assert meta["files"][f] == {"bytes": (folder / f).stat().st_size, "sha256": file_digest(folder / f)}
        assert g.manifest.shard_meta[name] == file_digest(folder / "meta.json")
    manifest = json.loads((pristine / "generations" / g.manifest.file_name).read_text())
    assert manifest["checksum"] and manifest["rows"] == 4000
    report, _ = check(pristine, SMALL)
    assert report.ok and not report.findings, report.words()


DAMAGE = {
    "index.faiss truncated": ("index.faiss", truncate, True),
    "index.faiss bit-flipped": ("index.faiss", flip, True),
    "vectors.bin truncated": ("vectors.bin", truncate, False),
    "vectors.bin bit-flipped": ("vectors.bin", flip, False),
    "rows.parquet truncated": ("rows.parquet", truncate, False),
    "rows.parquet bit-flipped": ("rows.parquet", flip, False),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_shard_file_is_refused_named_and_repaired_where_safe(gallery_copy: Path, data: SyntheticData, case: str) -> None:
    fname, damage, repairable = DAMAGE[case]
    probes = data.probes().vectors
    before = results(gallery_copy, probes)
    damage(shard_dir(gallery_copy) / fname)
    with pytest.raises(GalleryError, match=fname.replace(".", r"\.")):
        Gallery.open(gallery_copy, SMALL).search(probes, PARAMS)  # no partial answer from the other shard
    report, scan = check(gallery_copy, SMALL)
    assert not report.ok and any(f.where.endswith(fname) and f.damage for f in report.findings), report.words()
    done = repair(gallery_copy, SMALL, scan, report)
    after, _ = check(gallery_copy, SMALL)
    if repairable:
        assert done and "rebuilt" in done[-1] and after.ok, after.words()
        assert results(gallery_copy, probes) == before
    else:
        assert not after.ok and not done
        with pytest.raises(GalleryError):
            Gallery.open(gallery_copy, SMALL).search(probes, PARAMS)


def test_large_vectors_are_checked_before_the_first_result(gallery_copy: Path, data: SyntheticData) -> None:
    """vectors.bin over the open limit: opening succeeds, the first search refuses."""
    lazy = replace(SMALL, verify_on_open_bytes=0)
    flip(shard_dir(gallery_copy, 1) / "vectors.bin", 0.3)
    g = Gallery.open(gallery_copy, lazy)
    assert len(g) == 4000 and g.stats()["vectors_verified"] == 0
    with pytest.raises(GalleryError, match=r"vectors\.bin fails its SHA-256"):
        g.search(data.probes().vectors, PARAMS)
    with pytest.raises(GalleryError, match=r"vectors\.bin"):
        g.exact_vectors(np.array([0, 3999]))


def test_changed_manifest_is_refused_and_named(gallery_copy: Path) -> None:
    g = Gallery.open(gallery_copy, SMALL)
    path = gallery_copy / "generations" / g.manifest.file_name
    text = path.read_text()
    assert f'"next_row_id": {g.manifest.next_row_id}' in text
    path.write_text(text.replace(f'"next_row_id": {g.manifest.next_row_id}', f'"next_row_id": {g.manifest.next_row_id - 7}'))
    with pytest.raises(GalleryError, match="fails its checksum"):
        Gallery.open(gallery_copy, SMALL)
    report, _ = check(gallery_copy, SMALL)
    assert not report.ok and report.findings[0].where == "CURRENT" and "checksum" in report.findings[0].detail
    truncate(path)
    with pytest.raises(GalleryError, match="unreadable"):
        Gallery.open(gallery_copy, SMALL)


def test_deleted_current_is_damage_never_an_empty_gallery(gallery_copy: Path, data: SyntheticData) -> None:
    probes = data.probes().vectors
    before = results(gallery_copy, probes)
    (gallery_copy / "CURRENT").unlink()
    with pytest.raises(GalleryError, match="CURRENT is missing, but the folder holds"):
        Gallery.open(gallery_copy, SMALL)
    with pytest.raises(GalleryError, match="never created over it"):
        Gallery.create(gallery_copy, data.profile.model_id, data.profile.dim, SMALL)
    report, scan = check(gallery_copy, SMALL)
    assert [f.problem for f in report.findings if f.damage] == ["current_missing"]
    assert repair(gallery_copy, SMALL, scan, report) == [f"pointed CURRENT at generation {scan.target.generation} (4000 templates)"]  # type: ignore[union-attr]
    assert check(gallery_copy, SMALL)[0].ok and results(gallery_copy, probes) == before


def test_removed_shard_folder_is_refused_and_named(gallery_copy: Path, data: SyntheticData) -> None:
    gone = shard_dir(gallery_copy, 1)
    shutil.rmtree(gone)
    with pytest.raises(GalleryError, match="is missing"):
        Gallery.open(gallery_copy, SMALL).search(data.probes().vectors, PARAMS)
    report, scan = check(gallery_copy, SMALL)
    assert any(f.problem == "shard_missing" and gone.name in f.where for f in report.findings)
    assert repair(gallery_copy, SMALL, scan, report) == [] and not check(gallery_copy, SMALL)[0].ok


def test_orphans_and_leftovers_are_reported(gallery_copy: Path) -> None:
    (gallery_copy / "shards" / ".tmp-shard-x").mkdir()
    shutil.copytree(shard_dir(gallery_copy), gallery_copy / "shards" / "shard-orphan")
    report, scan = check(gallery_copy, SMALL)
    assert report.ok and {f.problem for f in report.findings} == {"temporary", "orphan_shard"}
    assert repair(gallery_copy, SMALL, scan, report) == ["removed .tmp-shard-x"]


# ---------------------------------------------------------------- disk full


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs (a real file system that fills up); the suite runs as root, so mounting is allowed."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs here ({r.stderr.strip()}): the disk-full tests need a real file "
                    "system that fills up; run the suite as root, as `make test` does")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_is_a_clear_error_and_leaves_the_previous_generation(small_disk: Path, data: SyntheticData) -> None:
    gal = data.gallery()
    root = small_disk / "g"
    g = Gallery.create(root, data.profile.model_id, data.profile.dim, SMALL)
    g.train(gal.vectors[:SMALL.train_size], seed=7)
    g.add(gal.vectors[:500], [f"e{r}" for r in gal.row_ids[:500]])
    before = results(root, data.probes().vectors)
    # The pre-check counts every file the write makes, in units a person reads.
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    with pytest.raises(InsufficientResources, match=r"needs about \d+\.\d MiB, \d+\.\d (MiB|KiB) free"):
        g.add(np.tile(gal.vectors, (3, 1)), [f"x{i}" for i in range(3 * len(gal.row_ids))])
    # A write past the pre-check (no expected size given) that meets a full disk.
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (free - 200_000))
    with pytest.raises(DiskError, match=r"disk full while writing new gallery shards .* free\); nothing of this write was kept"):
        with g.writer() as w:
            w.add(gal.vectors[500:], [f"e{r}" for r in gal.row_ids[500:]])
    assert DiskError.exit_code not in (0, 1)
    assert not [p for p in (root / "shards").iterdir() if p.name.startswith(".tmp-")]  # nothing half-written
    assert check(root, SMALL)[0].ok and results(root, data.probes().vectors) == before
    filler.unlink()  # space freed: the same write now goes through
    g.add(gal.vectors[500:], [f"e{r}" for r in gal.row_ids[500:]])
    assert len(Gallery.open(root, SMALL)) == len(gal.row_ids) and check(root, SMALL)[0].ok


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1024, 1536 << 10, 5 << 30)] == ["0 B", "1023 B", "1.0 KiB", "1.5 MiB", "5.0 GiB"]
