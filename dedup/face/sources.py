"""Turn command-line arguments (photos and folders) into the list of photos to embed."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from dedup.errors import BadInput

# Files taken from a folder; a file named on the command line is taken whatever its name.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pnm", ".mpo"})


def expand_sources(args: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Photos named, plus the image files under each folder named (recursively, sorted).

    Paths are kept as given (a folder's files as ``folder/relative/path``). A path that
    does not exist is kept too: it becomes a ``not_found`` reject, not an error that loses
    the rest. Each photo is listed once, in the order first met.
    """
    out: list[str] = []
    seen: set[str] = set()
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            names = [os.fspath(p) for p in found]
        else:
            names = [os.fspath(arg)]
        for name in names:
            if name not in seen:
                seen.add(name)
                out.append(name)
    if not out:
        raise BadInput("no photos found in " + ", ".join(os.fspath(a) for a in args))
    return out


def rejects_path_for(out: Path) -> Path:
    """Default rejects file beside ``--out``: ``templates.parquet`` -> ``templates.rejects.parquet``."""
    return out.with_name(out.stem + ".rejects" + (out.suffix or ".parquet"))
