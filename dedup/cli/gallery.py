"""``dedup gallery``: gallery index maintenance (stats, compact)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dedup.cli.common import Home, Json, cli_errors, home_dir, print_json

GROUP = "gallery"
app = typer.Typer(help="Gallery index maintenance.", no_args_is_help=True)

GalleryPath = Annotated[Path | None, typer.Option("--path", help="a gallery folder [default: HOME/gallery]")]


def _open_gallery(home: Path | None, path: Path | None):  # type: ignore[no-untyped-def]
    from dedup.config import load_settings
    from dedup.index.gallery import Gallery

    settings = load_settings(home_dir(home))
    return Gallery.open(path if path is not None else home_dir(home) / "gallery", settings.index)


@app.command("stats")
@cli_errors
def gallery_stats_command(home: Home = None, path: GalleryPath = None, as_json: Json = False) -> None:
    """Templates, shards, generation, codec and bytes per template of the gallery."""
    stats = _open_gallery(home, path).stats()
    if as_json:
        print_json(stats)
        return
    for key, value in stats.items():
        typer.echo(f"{key:>26}: {value}")


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
