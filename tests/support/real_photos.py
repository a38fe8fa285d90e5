"""Real photographs of the same people in different captures, for genuine/impostor scores.

Source: the source distribution of ``face_recognition`` 1.3.0 on PyPI (code MIT, (c) 2017
Adam Geitgey). Its ``tests/test_images/`` folder holds photos of two people: Barack Obama
(``obama.jpg``, ``obama2.jpg``, ``obama3.jpg``: three different captures; ``32bit.png`` is
``obama2.jpg`` re-encoded and ``obama_partial_face*.jpg`` are crops of ``obama.jpg``) and Joe
Biden (``biden.jpg``). The package states no licence for the photos; they look like official
White House photographs (US federal works are public domain, but the package does not say
so). They are therefore fetched at set-up time (``make test`` runs ``python -m
tests.support.real_photos``) into a cache, never committed or shipped; tests only read the cache.
The sdist has no ``examples/`` folder (that exists in the GitHub repository only).

Usage (tests, benchmarks, issue 13's threshold work)::

    from tests.support.real_photos import real_photos, genuine_pairs, impostor_pairs
    photos = real_photos()            # name -> RealPhoto (path, person, capture)
    photos = with_other_people(photos)  # + Eileen Collins, Grace Hopper (installed packages)
    genuine_pairs(photos)             # different captures of one person
    impostor_pairs(photos)            # one capture of each of two people

The cache is ``$DEDUP_TEST_PHOTOS`` or ``~/.cache/dedup-test-photos``; ``python -m
tests.support.real_photos`` (set-up, run by ``make test``) runs ``pip download --no-deps
--no-binary :all: face_recognition==1.3.0`` into it (the ordinary client, the package index
only). Nothing is downloaded while tests run: :class:`PhotosUnavailable` is raised when the
cache is empty (pytest run without the set-up step): the test fails with it, naming the
command to run, rather than passing as skipped.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

SDIST = "face_recognition-1.3.0.tar.gz"
SDIST_SHA256 = "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec"
_FOLDER = "face_recognition-1.3.0/tests/test_images/"

# name -> (person, capture). Same capture = the same original photograph.
CATALOGUE: dict[str, tuple[str, str]] = {
    "obama.jpg": ("obama", "obama-a"),
    "obama_partial_face.jpg": ("obama", "obama-a"),
    "obama_partial_face2.jpg": ("obama", "obama-a"),
    "obama2.jpg": ("obama", "obama-b"),
    "32bit.png": ("obama", "obama-b"),
    "obama3.jpg": ("obama", "obama-c"),
    "biden.jpg": ("biden", "biden-a"),
}


class PhotosUnavailable(RuntimeError):
    """The sdist could not be fetched (no registry) or is not the expected file."""


@dataclass(frozen=True)
class RealPhoto:
    """One photo file and who is in it."""

    name: str
    path: Path
    person: str
    capture: str


def cache_dir() -> Path:
    """Where the sdist and the extracted photos live."""
    return Path(os.environ.get("DEDUP_TEST_PHOTOS", Path.home() / ".cache" / "dedup-test-photos"))


def _fetch(cache: Path) -> Path:
    archive = cache / SDIST
    if not archive.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               "face_recognition==1.3.0", "-d", str(cache)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PhotosUnavailable(f"cannot run pip download for face_recognition 1.3.0: {exc}") from None
        if proc.returncode != 0 or not archive.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise PhotosUnavailable(f"pip download face_recognition==1.3.0 failed (package index unreachable?): {tail[0]}")
    return _check(archive)


def _check(archive: Path) -> Path:
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise PhotosUnavailable(f"{archive} has sha256 {digest}, not face_recognition 1.3.0's sdist; delete it to fetch again")
    return archive


def real_photos() -> dict[str, RealPhoto]:
    """Every catalogued photo, extracted into the cache on first use."""
    cache = cache_dir()
    target = cache / _FOLDER
    if not all((target / name).is_file() for name in CATALOGUE):
        archive = cache / SDIST
        if not archive.is_file():
            raise PhotosUnavailable(f"the real test photos are not in {cache}: run `make test`, or "
                                    "`python -m tests.support.real_photos` to fetch them (set-up, once)")
        _check(archive)
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(_FOLDER) and Path(m.name).name in CATALOGUE]
            tar.extractall(cache, members=members, filter="data")
    return {name: RealPhoto(name, target / name, person, capture) for name, (person, capture) in CATALOGUE.items()}


def with_other_people(photos: dict[str, RealPhoto]) -> dict[str, RealPhoto]:
    """``photos`` plus two more people from installed test packages, for more impostor pairs:
    scikit-image's ``astronaut`` (Eileen Collins, NASA, public domain) and matplotlib's
    ``grace_hopper.jpg`` (US Navy photo, public domain)."""
    import matplotlib.cbook
    import skimage.data
    from PIL import Image

    out = dict(photos)
    astronaut = cache_dir() / "astronaut.png"
    if not astronaut.is_file():
        cache_dir().mkdir(parents=True, exist_ok=True)
        Image.fromarray(skimage.data.astronaut()).save(astronaut)
    out["astronaut.png"] = RealPhoto("astronaut.png", astronaut, "collins", "collins-a")
    grace = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    out["grace_hopper.jpg"] = RealPhoto("grace_hopper.jpg", grace, "hopper", "hopper-a")
    return out


def distinct_captures(photos: dict[str, RealPhoto]) -> list[RealPhoto]:
    """One photo per capture (the first catalogued), so pairs compare different photographs."""
    seen: dict[str, RealPhoto] = {}
    for photo in photos.values():
        seen.setdefault(photo.capture, photo)
    return list(seen.values())


def genuine_pairs(photos: dict[str, RealPhoto]) -> list[tuple[RealPhoto, RealPhoto]]:
    """Pairs of different captures of the same person."""
    return [(a, b) for a, b in itertools.combinations(distinct_captures(photos), 2) if a.person == b.person]


def impostor_pairs(photos: dict[str, RealPhoto]) -> list[tuple[RealPhoto, RealPhoto]]:
    """Pairs of captures of two different people."""
    return [(a, b) for a, b in itertools.combinations(distinct_captures(photos), 2) if a.person != b.person]


if __name__ == "__main__":  # set-up step: fetch the sdist into the cache (a no-op when there)
    try:
        _fetch(cache_dir())
        print(f"real test photos: {len(real_photos())} in {cache_dir()}")
    except PhotosUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
