"""``dedup embed``: the face pipeline over photo files, templates and rejects to Parquet."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from dedup.cli.common import Home, Json, cli_errors, home_dir, print_json

GROUP = None
app = typer.Typer()


@app.command("embed")
@cli_errors
def embed_command(
    photos: list[Path] = typer.Argument(..., help="photo files and/or folders (folders are searched recursively for image files)"),
    out: Path = typer.Option(..., "--out", "-o", help="templates Parquet file to write"),
    rejects: Path | None = typer.Option(None, "--rejects", help="rejects Parquet file [default: OUT with .rejects before the suffix]"),
    workers: int | None = typer.Option(None, "--workers", help="processes for decode/detect/align [default: face.workers]"),
    batch_size: int | None = typer.Option(None, "--batch-size", help="crops per torch batch [default: face.batch_size]"),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda [default: face.device]"),
    as_json: Json = False,
    home: Home = None,
) -> None:
    """Face pipeline: templates for the photos that pass, a reject list (with reasons) for the rest."""
    import dataclasses
    import time

    from dedup.config import load_settings
    from dedup.face.embed import embed_photos
    from dedup.face.sources import expand_sources, rejects_path_for
    from dedup.modelcards import load_card

    face = load_settings(home_dir(home)).face
    overrides: dict[str, Any] = {"workers": workers, "batch_size": batch_size, "device": device}
    face = dataclasses.replace(face, **{k: v for k, v in overrides.items() if v is not None})
    sources = expand_sources(photos)
    rejects_path = rejects or rejects_path_for(out)
    started = time.perf_counter()
    if as_json or not sys.stderr.isatty():
        result = embed_photos(sources, face)
    else:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task("embedding photos", total=len(sources))
            result = embed_photos(sources, face, progress=lambda done, total: bar.update(task, completed=done))
    result.write(out, rejects_path)
    card = load_card(result.model_id) if result.model_id else None
    report = {
        "templates": str(out), "rejects": str(rejects_path), "photos": len(result.results),
        "accepted": len(result.accepted), "rejected": len(result.rejected), "reasons": result.reason_counts(),
        # The model card's documented operating point (information only; `dedup run` uses the threshold in force).
        "model_id": result.model_id, "dim": result.dim, "cosine_threshold": None if card is None else card.documented_threshold,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if as_json:
        print_json(report)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"{report['accepted']} of {report['photos']} photos gave a template ({result.model_id}) -> {out}")
    if result.rejected:
        table = Table("photo", "reason", "detail", title=f"{report['rejected']} rejected -> {rejects_path}")
        for r in result.rejected[:50]:
            table.add_row(r.source, r.reason or "", r.detail)
        console.print(table)
        if len(result.rejected) > 50:
            console.print(f"... and {len(result.rejected) - 50} more in {rejects_path}")
