"""``dedup gallery``: gallery index maintenance (stats, verify, compact, coverage).

In a deployment (``--home``) the main gallery is opened through ``dedup.index.deployed``:
it must agree with the database's record of it. ``--path`` names any gallery folder; one
inside the deployment is checked against its record too, one outside by its files alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dedup.cli.common import Home, Json, User, cli_errors, home_dir, print_json

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


def _open_gallery(home: Path | None, path: Path | None,  # type: ignore[no-untyped-def]
                  target: tuple[Any, Path] | None = None):
    """The gallery (``target``: what ``_target`` already gave for these options)."""
    from dedup.config import load_settings
    from dedup.errors import GalleryError
    from dedup.index import deployed
    from dedup.index.gallery import Gallery

    dep, root = target if target is not None else _target(home, path)
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


@app.command("coverage")
@cli_errors
def gallery_coverage_command(
    templates: Annotated[list[Path] | None, typer.Argument(
        help="labelled templates Parquet files of the gallery's model (as `dedup eval` reads): "
             "every pair of captures of one identity is measured")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="drop the measurement: the configured search.nprobe applies")] = False,
    home: Home = None,
    path: GalleryPath = None,
    user: User = None,
    as_json: Json = False,
) -> None:
    """Measure how far down a probe's IVF lists its mates sit, on labelled pairs found
    without the search, and keep it with the gallery's codec: from then on a search visits
    the fewest lists that hold search.recall_target at the threshold in force. In a
    deployment: an admin, with an audit row."""
    from dedup.config import load_settings
    from dedup.errors import BadInput, GalleryError, ModelMismatch
    from dedup.evaluation.data import load_templates
    from dedup.index.coverage import identity_pairs, measure_coverage
    from dedup.operating_point import threshold_in_force

    target = _target(home, path)
    dep = target[0]
    actor = None
    if dep is not None:  # the list count decides what every search sees: the admin's call, before any template is read
        from dedup.store.users import authenticate, authorize

        with dep.database.session() as conn:
            actor = authenticate(conn, user)
            authorize(actor, "gallery.coverage")
    if clear == bool(templates):
        raise BadInput("give labelled templates to measure, or --clear to drop the measurement (not both)")
    gallery = _open_gallery(home, path, target)
    codec = gallery.codec
    if codec is None:
        raise GalleryError("the gallery has no trained codec yet: there are no lists to measure")
    if clear:
        _keep_coverage(dep, actor, gallery, None, {"cleared": True, "codec_version": codec.version})
        if as_json:
            print_json({"cleared": True, "configured_nprobe": load_settings(home_dir(home)).search.nprobe})
        else:
            typer.echo("list coverage cleared: the configured search.nprobe applies")
        return
    data = load_templates(list(templates or []))
    if data.model_id != gallery.model_id or data.vectors.shape[1] != gallery.dim:
        raise ModelMismatch(f"the labelled templates are of model {data.model_id} ({data.vectors.shape[1]}-d); "
                            f"the gallery holds {gallery.model_id} ({gallery.dim}-d)")
    left, right = identity_pairs(data.identity)
    if left.size == 0:
        raise BadInput("no identity in the labelled templates has two captures: there is no pair to measure")
    counts = data.counts()
    coverage = measure_coverage(codec.trained, codec.version, data.vectors[left], data.vectors[right],
                                f"labelled templates: {counts['templates']:,} of {counts['identities']:,} identities")
    settings = load_settings(home_dir(home))
    in_force = threshold_in_force(gallery.model_id, len(gallery), settings, home_dir(home))
    summary = coverage.summary(in_force.value, settings.search.recall_target)
    _keep_coverage(dep, actor, gallery, coverage, {
        k: summary[k] for k in ("pairs", "pairs_at_threshold", "threshold", "recall_target", "nprobe", "list_gap",
                             "source")})
    summary["configured_nprobe"] = settings.search.nprobe
    if as_json:
        print_json(summary)
        return
    typer.echo(f"measured {coverage.pairs:,} pairs ({coverage.source}) with codec {codec.version}")
    if summary["nprobe"] is None:
        typer.echo(f"at the threshold in force {in_force.value:.4f}: {summary['pairs_at_threshold']:,} pairs, too few to "
                   f"hold recall {settings.search.recall_target} with 95% confidence; the search keeps "
                   f"search.nprobe = {settings.search.nprobe}")
    else:
        typer.echo(f"at the threshold in force {in_force.value:.4f}: {summary['pairs_at_threshold']:,} pairs, mates up to "
                   f"rank {summary['max_rank_at_threshold']}; a probe visits those of its {summary['nprobe']} nearest "
                   f"lists within {summary['list_gap']:.4f} (squared L2) of its nearest one "
                   f"(search.nprobe = {settings.search.nprobe} applies without a measurement)")


def _keep_coverage(dep: Any, actor: Any, gallery: Any, coverage: Any, detail: dict[str, Any]) -> None:
    """Put ``coverage`` (``None``: none) in force; in a deployment with an audit row, which
    commits only once the new generation is written."""
    if dep is None or actor is None:
        gallery.save_coverage(coverage)
        return
    from dedup.store import audit

    with dep.database.session() as conn, conn.transaction():
        audit.record(conn, actor.name, "gallery.coverage", "gallery", gallery.manifest.codec_version, detail)
        gallery.save_coverage(coverage)
