"""``dedup gallery verify``: check every file of a gallery against its hash, and repair what is safe.

What is checked (each problem is a ``Finding``, in words, with the file it is about):

- ``CURRENT`` exists and names a generation whose sealed manifest passes its checksum; with
  an expected manifest (the database's, ``dedup.index.deployed``) it must be that one;
- every shard of the generation that should be current: its folder, its ``meta.json`` (the
  hash the manifest records, and its own seal), and every file's size and SHA-256
  (``vectors.bin`` too unless ``deep=False``); the live row counts against the manifest;
  every enrolment id exactly once;
- every other generation file (damaged old ones are warnings), generations written but never
  made current, shard folders no generation names, and leftover temporary folders.

Repairs (``repair``), only where nothing can be lost or made up:

- ``CURRENT`` missing or naming the wrong generation: point it at the expected generation
  (the database's, restoring its manifest file from the database's copy when that is gone
  or damaged), or, with no database, at the newest generation whose files all check;
- a shard whose ``index.faiss`` is damaged while its exact vectors and id maps pass their
  hashes: rebuild the index from the vectors and the codec, as a new shard in a new
  generation (``shard.rebuild_index``);
- leftover temporary folders are removed.

A damaged ``vectors.bin``, ``rows.parquet``, id map or ``meta.json``, or a shard folder that
is gone, has no safe repair: the report says so, and the gallery stays refused until it is
restored from a backup.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dedup.config import IndexSettings
from dedup.errors import GalleryError
from dedup.fsutil import atomic_write_text
from dedup.index.coverage import load_recorded, recorded_path
from dedup.index.gallery import Gallery, GalleryRecorder, Manifest
from dedup.index.integrity import bytes_digest, check_file, disk_errors
from dedup.index.shard import SHARD_FILES, ShardMeta, rebuild_index


@dataclass(frozen=True)
class Finding:
    """One problem found: where (relative to the gallery folder), what, and what a repair does."""

    where: str
    problem: str
    detail: str
    damage: bool = True  # False: a warning; searches are still complete and correct
    repair: str = ""     # what ``--repair`` does about it; empty when there is no safe repair


@dataclass
class VerifyReport:
    """The outcome of one verification (and repair)."""

    root: str
    current_generation: int | None = None
    expected_generation: int | None = None
    shards: int = 0
    rows: int | None = None
    files_checked: int = 0
    bytes_checked: int = 0
    findings: list[Finding] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    seconds: float = 0.0
    deep: bool = True

    @property
    def ok(self) -> bool:
        """No damage (warnings allowed)."""
        return not any(f.damage for f in self.findings)

    @property
    def mismatches(self) -> int:
        """Findings that are damage."""
        return sum(1 for f in self.findings if f.damage)

    def add(self, where: str, problem: str, detail: str, damage: bool = True, repair: str = "") -> None:
        self.findings.append(Finding(where, problem, detail, damage, repair))

    def summary(self) -> dict[str, Any]:
        """Counts only (what the database keeps and the supervisor page shows)."""
        return {"ok": self.ok, "generation": self.current_generation, "shards": self.shards, "rows": self.rows,
                "files_checked": self.files_checked, "bytes_checked": self.bytes_checked, "mismatches": self.mismatches,
                "warnings": len(self.findings) - self.mismatches, "repaired": len(self.repaired), "deep": self.deep,
                "problems": sorted({f.problem for f in self.findings if f.damage})}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``)."""
        return {**self.summary(), "root": self.root, "expected_generation": self.expected_generation,
                "seconds": round(self.seconds, 3), "findings": [asdict(f) for f in self.findings],
                "repaired_actions": self.repaired}

    def words(self) -> list[str]:
        """The report in lines a person reads."""
        head = (f"gallery {self.root}: generation {self.current_generation if self.current_generation is not None else '?'}"
                f"{'' if self.expected_generation in (None, self.current_generation) else f' (expected {self.expected_generation})'}"
                f", {self.shards} shard(s), {self.rows if self.rows is not None else '?'} template(s); "
                f"{self.files_checked} file(s) checked ({self.bytes_checked / (1 << 20):.1f} MiB)"
                f"{'' if self.deep else ', vectors.bin over the open limit not hashed (quick)'}")
        lines = [head]
        lines += [f"repaired: {r}" for r in self.repaired]
        for f in self.findings:
            tag = "DAMAGE" if f.damage else "warning"
            fix = f" -> --repair: {f.repair}" if f.repair else (" (no safe repair: restore from a backup)" if f.damage else "")
            lines.append(f"{tag}: {f.where}: {f.detail}{fix}")
        lines.append("OK: every check passed" if self.ok and not self.findings else
                     "OK (with warnings)" if self.ok else f"DAMAGED: {self.mismatches} problem(s); the gallery is refused")
        return lines


@dataclass
class _Scan:
    """What a check of the files leaves for the repair and the enrolment comparison."""

    target: Manifest | None = None              # the generation that should be current
    restore_manifest: bool = False              # its generation file must be written back
    point_current: bool = False                 # CURRENT must be made to name it
    rebuild: list[str] = field(default_factory=list)  # shards whose index.faiss must be rebuilt
    enrolment_ids: list[str] | None = None      # live rows' enrolment ids (None: unreadable)
    tmp_dirs: list[Path] = field(default_factory=list)


def check(root: Path, settings: IndexSettings | None = None, expected: Manifest | None = None,
          deep: bool = True) -> tuple[VerifyReport, _Scan]:
    """Check a gallery's files (see the module docstring); ``expected``: the manifest the
    database says is current (None: no database, the files judge themselves)."""
    start = time.perf_counter()
    root = Path(root)
    settings = settings or IndexSettings()
    report = VerifyReport(str(root), deep=deep)
    scan = _Scan()
    named = _named_by_current(root)
    gens = _generations(root, report, expected, named)
    current = _current(root, report, named)
    report.current_generation = current.generation if current is not None else None
    if expected is not None:
        report.expected_generation = expected.generation
        scan.target = expected
        on_disk = gens.get(expected.generation)
        if on_disk is None or on_disk.checksum != expected.checksum:
            scan.restore_manifest = True
            report.add(f"generations/{expected.file_name}", "manifest_missing" if on_disk is None else "manifest_changed",
                       f"generation {expected.generation}, the one the database records, is "
                       f"{'missing' if on_disk is None else 'not the one the database records'}",
                       repair="write it back from the database's copy")
        if current is None or current.checksum != expected.checksum:
            scan.point_current = True
            if current is not None:
                report.add("CURRENT", "current_wrong", f"CURRENT names generation {current.generation} "
                           f"({current.rows} templates); the database expects generation {expected.generation} "
                           f"({expected.rows} templates)", repair=f"point CURRENT at generation {expected.generation}")
    elif current is not None:
        scan.target = current
    elif not (root / "CURRENT").exists() and gens and max(gens) == _newest_file(root):
        # No database and no CURRENT: the newest generation, if its file is whole (never an
        # older one past a damaged newest: that would drop rows without a word).
        scan.target, scan.point_current = gens[max(gens)], True
    if scan.target is not None:
        if scan.point_current and report.findings and report.findings[0].where == "CURRENT" and not report.findings[0].repair:
            old = report.findings.pop(0)
            report.findings.insert(0, Finding(old.where, old.problem, old.detail, True,
                                              f"point CURRENT at generation {scan.target.generation}"))
        _check_shards(root, scan.target, report, scan, deep, settings.verify_on_open_bytes)
        _check_coverage(root, scan.target, report)
        report.rows = scan.target.rows
        report.shards = len(scan.target.shards)
        unrepairable = [f for f in report.findings if f.damage and not f.repair]
        if unrepairable and scan.point_current:  # do not point CURRENT at a generation that cannot serve
            scan.point_current = scan.restore_manifest = False
    _orphans(root, gens, scan.target, report, scan)
    report.seconds = time.perf_counter() - start
    return report, scan


def _named_by_current(root: Path) -> str | None:
    try:
        return (root / "CURRENT").read_text(errors="replace").strip()
    except OSError:
        return None


def _newest_file(root: Path) -> int | None:
    names = sorted(p.name for p in (root / "generations").glob("*.json")) if (root / "generations").is_dir() else []
    return int(names[-1][:8]) if names and names[-1][:8].isdigit() else None


def _generations(root: Path, report: VerifyReport, expected: Manifest | None, named: str | None) -> dict[int, Manifest]:
    out: dict[int, Manifest] = {}
    folder = root / "generations"
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            m = Manifest.from_json(path.read_bytes(), f"generations/{path.name}")
        except GalleryError as exc:
            if expected is not None and path.name == expected.file_name:
                continue  # reported (and restored from the database) with the target
            if path.name == named:
                continue  # reported as CURRENT's problem
            report.add(f"generations/{path.name}", "old_manifest_damaged", f"{exc}; no reader can use this generation",
                       damage=expected is None and not (root / "CURRENT").exists())
            continue
        report.files_checked += 1
        report.bytes_checked += path.stat().st_size
        out[m.generation] = m
    return out


def _current(root: Path, report: VerifyReport, named: str | None) -> Manifest | None:
    from dedup.index.gallery import read_current

    try:
        manifest = read_current(root)
    except GalleryError as exc:
        missing = not (root / "CURRENT").exists()
        report.add("CURRENT", "current_missing" if missing else "manifest_damaged",
                   "CURRENT is missing: the gallery cannot be opened (it is not empty: it is damaged)" if missing else
                   f"CURRENT names generations/{named}: {str(exc).split(': ', 1)[-1]}")
        return None
    return manifest


def _check_coverage(root: Path, target: Manifest, report: VerifyReport) -> None:
    """The list coverage the generation records, when it records one (missing or changed, it
    stops every search: ``Gallery.coverage``)."""
    if not target.coverage_sha256 or not target.codec_version:
        return
    path = recorded_path(root / "codec", target.codec_version, target.coverage_sha256)
    where = f"codec/{path.name}"
    fix = "; searches refuse to run until it is measured again (`dedup gallery coverage`) or cleared (`--clear`)"
    try:
        load_recorded(path, target.coverage_sha256, target.codec_version, where)
    except FileNotFoundError:
        report.add(where, "coverage_missing", f"the list coverage generation {target.generation} records is gone{fix}")
        return
    except GalleryError as exc:
        report.add(where, "coverage_damaged", f"{exc}{fix}")
        return
    report.files_checked += 1
    report.bytes_checked += path.stat().st_size


def _check_shards(root: Path, target: Manifest, report: VerifyReport, scan: _Scan, deep: bool, quick_limit: int) -> None:
    live_total = 0
    ids: list[str] | None = []
    for name in target.shards:
        folder = root / "shards" / name
        where = f"shards/{name}"
        if not folder.is_dir():
            report.add(where, "shard_missing", f"shard {name} of generation {target.generation} is gone (its folder was removed)")
            ids = None
            continue
        try:
            meta_bytes = (folder / "meta.json").read_bytes()
        except FileNotFoundError:
            report.add(f"{where}/meta.json", "meta_missing", "meta.json is missing")
            ids = None
            continue
        if bytes_digest(meta_bytes) != target.shard_meta.get(name):
            report.add(f"{where}/meta.json", "meta_changed", "meta.json is not the one the generation manifest records")
            ids = None
            continue
        meta = ShardMeta.from_json(meta_bytes, folder)
        report.files_checked += 1
        report.bytes_checked += len(meta_bytes)
        live_total += meta.live
        bad: list[str] = []
        for fname in [*SHARD_FILES, *(["removed.npy"] if "removed.npy" in meta.files else [])]:
            record = meta.files.get(fname)
            if record is None:
                report.add(f"{where}/{fname}", "no_checksum", f"meta.json records no checksum for {fname}")
                bad.append(fname)
                continue
            if fname == "vectors.bin" and not deep and record["bytes"] > 0 and \
                    record["bytes"] > quick_limit and (folder / fname).exists() and \
                    (folder / fname).stat().st_size == record["bytes"]:
                continue  # quick check: the size only; the hash is checked before its first search
            try:
                check_file(folder / fname, record, f"shard {name}")
            except GalleryError as exc:
                bad.append(fname)
                can_rebuild = fname == "index.faiss"
                report.add(f"{where}/{fname}", f"{fname.split('.')[0]}_damaged",
                           str(exc).replace(f"shard {name}: ", ""),
                           repair="rebuild the FAISS index from the exact vectors and the codec" if can_rebuild else "")
                continue
            report.files_checked += 1
            report.bytes_checked += int(record["bytes"])
        if bad == ["index.faiss"]:
            scan.rebuild.append(name)
        elif "index.faiss" in bad:  # the rebuild needs every other file intact
            report.findings[:] = [f if f.where != f"{where}/index.faiss" else Finding(f.where, f.problem, f.detail, True, "")
                                  for f in report.findings]
        if ids is not None and "rows.parquet" not in bad and "removed.npy" not in bad:
            ids.extend(_live_ids(folder, meta))
        else:
            ids = None
    if live_total != target.rows and not any(f.damage for f in report.findings if f.where.startswith("shards/")):
        report.add(f"generations/{target.file_name}", "row_count", f"the shards hold {live_total} live rows, "
                   f"the manifest records {target.rows}")
    if ids is not None:
        twice = [e for e, n in Counter(ids).items() if n > 1]
        if twice:
            report.add("shards", "duplicate_rows", f"{len(twice)} enrolment id(s) are in the gallery more than once")
    scan.enrolment_ids = ids


def _live_ids(folder: Path, meta: ShardMeta) -> list[str]:
    import pyarrow.parquet as pq

    ids = pq.read_table(folder / "rows.parquet")["enrolment_id"].to_pylist()
    if "removed.npy" in meta.files:
        removed = set(np.load(folder / "removed.npy").tolist())
        ids = [e for i, e in enumerate(ids) if i not in removed]
    return ids


def _orphans(root: Path, gens: dict[int, Manifest], target: Manifest | None, report: VerifyReport, scan: _Scan) -> None:
    referenced = {n for m in gens.values() for n in m.shards} | (set(target.shards) if target else set())
    folder = root / "shards"
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        if p.name.startswith(".tmp-"):
            scan.tmp_dirs.append(p)
            report.add(f"shards/{p.name}", "temporary", "a half-written shard left by an interrupted write",
                       damage=False, repair="remove it")
        elif p.name not in referenced:
            report.add(f"shards/{p.name}", "orphan_shard", "a shard no generation names (the next write's clean-up removes it)",
                       damage=False)
    if target is not None:
        for gen in sorted(g for g in gens if g > target.generation):
            report.add(f"generations/{gens[gen].file_name}", "orphan_generation",
                       f"generation {gen} was written but never made current (an interrupted write)", damage=False)


def repair(root: Path, settings: IndexSettings, scan: _Scan, report: VerifyReport,
           recorder: GalleryRecorder | None = None) -> list[str]:
    """Make the safe repairs ``check`` found (see the module docstring); returns what was done."""
    root = Path(root)
    done: list[str] = []
    target = scan.target
    unrepairable = [f for f in report.findings if f.damage and not f.repair]
    with disk_errors(root, "a gallery repair", intact="The gallery is as it was before the repair."):
        for tmp in scan.tmp_dirs:
            shutil.rmtree(tmp, ignore_errors=True)
            done.append(f"removed {tmp.name}")
        if target is None or unrepairable:
            return done
        if scan.restore_manifest:
            (root / "generations").mkdir(parents=True, exist_ok=True)
            atomic_write_text(root / "generations" / target.file_name, target.to_json())
            done.append(f"wrote generation {target.generation}'s manifest back from the database's copy")
        if scan.point_current:
            atomic_write_text(root / "CURRENT", target.file_name)
            done.append(f"pointed CURRENT at generation {target.generation} ({target.rows} templates)")
            if recorder is not None:
                recorder.commit(target)
        if scan.rebuild:
            gallery = Gallery.open(root, settings, recorder=recorder)
            codec = gallery.codec
            if codec is None:
                raise GalleryError(f"{root}: the gallery has no codec to rebuild its shards' indexes with")
            swaps = {name: rebuild_index(root / "shards" / name, codec, root / "shards").name for name in scan.rebuild}
            gallery.replace_shards(swaps)
            done += [f"rebuilt shard {old}'s FAISS index from its exact vectors as {new} "
                     f"(generation {gallery.generation})" for old, new in swaps.items()]
    return done
