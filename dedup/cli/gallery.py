"""``dedup gallery``: gallery index maintenance (stats, verify, compact).

In a deployment (``--home``) the main gallery is opened through ``dedup.index.deployed``:
it must agree with the database's record of it. ``--path`` names any gallery folder; one
inside the deployment is checked against its record too, one outside by its files alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dedup.cli.common import Home, Json, cli_errors, home_dir, print_json

GROUP = "gallery"
app = typer.Typer(help="Gallery index maintenance.", no_args_is_help=True)

GalleryPath = Annotated[Path | None, typer.Option("--path", help="a gallery folder [default: HOME/gallery]")]


def _target(home: Path | None, path: Path | None) -> tuple[Any, Path]:
    """(the deployment, or None outside one; the gallery folder)."""
    from dedup.config import SETTINGS_FILE

    folder = home_dir(home)
    root = (path if path is not None else folder / "gallery").absolute()
    if not (folder / SETTINGS_FILE).exists():
        return None, root
    from dedup.deployment import open_deployment

    dep = open_deployment(folder)
    inside = root.is_relative_to(dep.home.absolute())
    return (dep if inside else None), root


def _open_gallery(home: Path | None, path: Path | None):  # type: ignore[no-untyped-def]
    from dedup.config import load_settings
    from dedup.errors import GalleryError
    from dedup.index import deployed
    from dedup.index.gallery import Gallery

    dep, root = _target(home, path)
    if dep is None:
        return Gallery.open(root, load_settings(home_dir(home)).index)
    gallery = deployed.open_gallery(dep, root)
    if gallery is None:
        raise GalleryError(f"no gallery at {root} yet (`dedup run` creates it)")
    return gallery


def _record_words(dep: Any, root: Path) -> dict[str, Any]:
    """What the database records about the gallery (generation, last verification)."""
    from dedup.index.deployed import gallery_key
    from dedup.store.gallery import get_record

    with dep.database.session() as conn:
        rec = get_record(conn, gallery_key(dep, root))
    if rec is None:
        return {"recorded": False}
    return {"recorded": True, "recorded_generation": rec.generation, "recorded_templates": rec.row_count,
            "pending_generation": rec.pending_generation, "last_verified": rec.verified_at.isoformat() if rec.verified_at else None,
            "last_verify_ok": rec.verify_ok, "last_verify": rec.verify_summary}


@app.command("stats")
@cli_errors
def gallery_stats_command(home: Home = None, path: GalleryPath = None, as_json: Json = False) -> None:
    """Templates, shards, generation, codec, bytes per template, and the gallery's health.

    Health: a quick check of every file against its hash (vectors.bin over
    ``index.verify_on_open_bytes`` by size only) and the database's record. Exit code 4 when
    something is damaged (what, and where, is listed).
    """
    from dedup.errors import GalleryError
    from dedup.index.deployed import verify_gallery

    dep, root = _target(home, path)
    health = verify_gallery(dep, root, None if dep is not None else _settings(home), fix=False, deep=False, record=False)
    stats: dict[str, Any] = {}
    if health.ok:
        stats = _open_gallery(home, path).stats()
    out = {**stats, "health": {**health.summary(), "findings": [f.__dict__ for f in health.findings],
                               **(_record_words(dep, root) if dep is not None else {})}}
    if as_json:
        print_json(out)
    else:
        for key, value in stats.items():
            typer.echo(f"{key:>26}: {value}")
        h = out["health"]
        typer.echo(f"{'health':>26}: {'ok' if health.ok else 'DAMAGED'} ({h['files_checked']} file(s) checked quickly, "
                   f"{h['mismatches']} mismatch(es), {h['warnings']} warning(s))")
        if dep is not None:
            last = h.get("last_verified")
            typer.echo(f"{'last verified':>26}: {last or 'never'}"
                       + ("" if last is None else f" ({'ok' if h.get('last_verify_ok') else 'damaged'})"))
        for line in health.words()[1:]:
            if not line.startswith("OK"):
                typer.echo(f"{'':>26}  {line}")
    if not health.ok:
        raise GalleryError(f"the gallery at {root} is damaged ({health.mismatches} problem(s)); "
                           "details above, and `dedup gallery verify`")


def _settings(home: Path | None) -> Any:
    from dedup.config import load_settings

    return load_settings(home_dir(home)).index


@app.command("verify")
@cli_errors
def gallery_verify_command(
    home: Home = None,
    path: GalleryPath = None,
    repair: Annotated[bool, typer.Option("--repair", help="make the repairs that are safe (see the report), then check again")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="check large vectors.bin files by size only")] = False,
    as_json: Json = False,
) -> None:
    """Check every file against its hash, the generation against the database's record, and
    the gallery's rows against the database's enrolments (each exactly once); report
    orphaned shards and generations. Exit code 4 while anything is damaged."""
    from dedup.errors import GalleryError
    from dedup.index.deployed import verify_gallery

    dep, root = _target(home, path)
    report = verify_gallery(dep, root, None if dep is not None else _settings(home), fix=repair, deep=not quick)
    if as_json:
        print_json(report.as_dict())
    else:
        for line in report.words():
            typer.echo(line)
    if not report.ok:
        hint = "" if repair else "; `dedup gallery verify --repair` repairs what is safe to repair"
        raise GalleryError(f"the gallery at {root} is damaged ({report.mismatches} problem(s)){hint}")


@app.command("compact")
@cli_errors
def gallery_compact_command(
    home: Home = None,
    path: GalleryPath = None,
    retrain: Annotated[bool, typer.Option("--retrain", help="first train a new codec on a sample of the live templates")] = False,
    as_json: Json = False,
) -> None:
    """Merge small shards into full ones and drop removed rows (a new generation)."""
    report = _open_gallery(home, path).compact(retrain=retrain)
    if as_json:
        print_json(report)
    else:
        typer.echo(f"compacted: {report['shards_before']} shard(s) -> {report['shards_after']}, "
                   f"codec {report['codec_version']}")
