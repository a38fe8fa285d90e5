"""``dedup eval`` and ``dedup calibrate``: accuracy on a labelled set, threshold calibration."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer

from dedup.cli.common import Home, Json, JsonOut, User, cli_errors, given_home, home_dir, progress_bar, report_json

GROUP = None
app = typer.Typer()


def _parse_sizes(text: str | None) -> tuple[int, ...] | None:
    from dedup.errors import InvalidParameter

    if not text:
        return None
    try:
        return tuple(int(float(s)) for s in text.split(",") if s.strip())
    except ValueError:
        raise InvalidParameter(f"--gallery-sizes: expected comma-separated numbers, got {text!r}") from None


@app.command("eval")
@cli_errors
def eval_command(
    inputs: Annotated[list[Path], typer.Argument(
        help="labelled templates Parquet file(s) (identity and group columns), or one folder of photos with a "
             "subfolder per identity")],
    out: Annotated[Path, typer.Option("--out", help="folder for report.md and the PNG curves")] = Path("eval-report"),
    threshold: Annotated[float | None, typer.Option(
        "--threshold",
        help="operating threshold [default: the threshold in force for the set's model at its largest gallery]")] = None,
    gallery_sizes: Annotated[str | None, typer.Option(
        "--gallery-sizes",
        help="one-to-many gallery sizes, comma-separated [default: up to the enrolled pool]")] = None,
    impostor_pairs: Annotated[int | None, typer.Option(
        "--impostor-pairs",
        help="impostor pairs sampled at most [default: calibration.impostor_pairs]")] = None,
    max_searches: Annotated[int, typer.Option("--max-searches", help="mated and non-mated searches, each at most")] = 10_000,
    seed: Annotated[int, typer.Option("--seed", help="seed of the pair sampling, the search split and the bootstrap")] = 0,
    as_json: Json = False,
    json_out: JsonOut = None,
    home: Home = None,
) -> None:
    """Accuracy on a labelled set: DET, FNMR at FMR, FNIR at FPIR by gallery size, rank-1, per-group FMR/FNMR."""
    from dedup.config import load_settings
    from dedup.evaluation.workflows import evaluate_set

    where = given_home(home)
    settings = load_settings(where)
    bar, update = progress_bar(not as_json and sys.stderr.isatty())
    with bar if bar is not None else nullcontext():
        done = evaluate_set(inputs, out, settings, where, threshold=threshold, gallery_sizes=_parse_sizes(gallery_sizes),
                            impostor_pairs=impostor_pairs, max_searches=max_searches, seed=seed, progress=update)
    doc = done.to_dict()
    report_json(doc, as_json, json_out)
    if as_json:
        return
    from rich.console import Console
    from rich.table import Table

    result = done.result
    console = Console()
    c = doc["counts"]
    console.print(f"{c['templates']:,} templates, {c['identities']:,} identities; {c['genuine_pairs']:,} genuine and "
                  f"{c['impostor_pairs']:,} impostor pairs; threshold {result.threshold:.4f} ({result.threshold_source})",
                  soft_wrap=True)
    t = Table("FMR target", "threshold", "from", "FNMR", "FNMR CI", title="verification")
    for p in result.operating_points:
        if p.threshold is None or p.fnmr is None or p.fnmr_ci is None:
            t.add_row(f"{p.fmr_target:g}", "–", p.source, "–", "–")
            continue
        t.add_row(f"{p.fmr_target:g}", f"{p.threshold:.4f}", p.source, f"{p.fnmr:.4g}", f"{p.fnmr_ci[0]:.3g} – {p.fnmr_ci[1]:.3g}")
    console.print(t)
    for p in result.operating_points:       # where each row comes from, unwrapped
        console.print(f"  FMR {p.fmr_target:g}: {p.source}: {p.note}", soft_wrap=True)
    console.print(f"at the threshold: {doc['figure_sources']['at_threshold']}", soft_wrap=True)
    t = Table("gallery", "rank-1", "FPIR @ thr", "FNIR @ thr",
              *[f"FNIR @ FPIR {x:g}" for x in result.options.fpir_targets], title="identification (exact searches)")
    for s in result.identification:
        cells = [(p.note or "–") if p.fnir is None else f"{p.fnir:.4g}" for p in s.fnir_at_fpir]
        t.add_row(f"{s.gallery_size:,}", "–" if s.rank1 is None else f"{s.rank1:.4f}",
                  "–" if s.fpir_at_threshold is None else f"{s.fpir_at_threshold:.4g}",
                  "–" if s.fnir_at_threshold is None else f"{s.fnir_at_threshold:.4g}", *cells)
    console.print(t)
    t = Table("group", "impostor pairs", "FMR", "x best", "genuine pairs", "FNMR", "x best", title=f"per group at {result.threshold:.4f}")
    for g in result.groups:
        t.add_row(g.group, f"{g.impostor_pairs:,}", "–" if g.fmr is None else f"{g.fmr:.3g}",
                  "–" if g.fmr_ratio is None else f"{g.fmr_ratio:.2f}", f"{g.genuine_pairs:,}",
                  "–" if g.fnmr is None else f"{g.fnmr:.3g}", "–" if g.fnmr_ratio is None else f"{g.fnmr_ratio:.2f}")
    console.print(t)
    console.print(f"report: {done.files['report']}")


@app.command("calibrate")
@cli_errors
def calibrate_command(
    target_fpir: Annotated[float | None, typer.Option("--target-fpir", help="FPIR to hold [default: calibration.target_fpir]")] = None,
    gallery_size: Annotated[int | None, typer.Option(
        "--gallery-size",
        help="gallery size to calibrate for [default: the deployment's current gallery]")] = None,
    enrolments_per_day: Annotated[float | None, typer.Option(
        "--enrolments-per-day",
        help="enrolment rate, for the expected adjudication cases per day")] = None,
    duplicate_rate: Annotated[float, typer.Option(
        "--duplicate-rate",
        help="fraction of enrolments that are duplicates (caught ones are cases too)")] = 0.0,
    templates: Annotated[list[Path] | None, typer.Option(
        "--templates",
        help="labelled templates Parquet file(s) whose impostor pairs (and genuine pairs, for FNIR) calibrate "
             "[default: pairs of different accepted identities in the deployment's gallery]")] = None,
    impostor_pairs: Annotated[int | None, typer.Option(
        "--impostor-pairs",
        help="impostor pairs sampled at most [default: calibration.impostor_pairs]")] = None,
    seed: Annotated[int, typer.Option("--seed", help="seed of the pair sampling and the bootstrap")] = 0,
    apply: Annotated[bool, typer.Option(
        "--apply",
        help="make this the deployment's calibration (its calibration file and model card, the target in dedup.toml), "
             "with an audit row (admin); the threshold then follows it at the gallery's size")] = False,
    user: User = None,
    as_json: Json = False,
    json_out: JsonOut = None,
    home: Home = None,
) -> None:
    """The threshold that keeps FPIR at a target for a gallery size, its interval, FNIR and daily adjudication load."""
    from dedup.config import load_settings
    from dedup.evaluation.workflows import calibrate_deployment

    where = home_dir(home)
    # labelled templates alone calibrate without a deployment: its settings only when one is named or needed
    settings = load_settings(where if (given_home(home) or apply or not templates) else None)
    bar, update = progress_bar(not as_json and sys.stderr.isatty() and bool(templates))
    with bar if bar is not None else nullcontext():
        done = calibrate_deployment(where, settings, target_fpir=target_fpir, gallery_size=gallery_size,
                                    enrolments_per_day=enrolments_per_day, duplicate_rate=duplicate_rate,
                                    templates=templates, impostor_pairs=impostor_pairs, seed=seed, apply=apply,
                                    user=user, progress=update)
    doc: dict[str, Any] = done.to_dict()
    report_json(doc, as_json, json_out)
    if as_json:
        return
    from rich.console import Console

    console = Console()
    result = done.calibration
    ci = result.threshold_ci
    sources = doc["sources"]
    console.print(f"threshold [bold]{result.threshold:.4f}[/bold] (CI {ci[0]:.4f} – {ci[1]:.4f}) "
                  f"holds FPIR {result.target_fpir:g} at gallery size {result.gallery_size:,} (per-comparison FMR {result.fmr_target:.2e}; "
                  f"{result.impostor_pairs:,} impostor pairs); from: {sources['threshold']}", soft_wrap=True)
    if result.expected_fnir is not None and result.expected_fnir_ci is not None:
        console.print(f"expected FNIR {result.expected_fnir:.4g} (CI {result.expected_fnir_ci[0]:.3g} – "
                      f"{result.expected_fnir_ci[1]:.3g}, {result.genuine_pairs:,} genuine pairs); from: {sources['expected_fnir']}",
                      soft_wrap=True)
    else:
        console.print(f"expected FNIR: {sources['expected_fnir']}", soft_wrap=True)
    if done.in_force is not None:
        console.print(f"in force before: {done.in_force.words()}", soft_wrap=True)
    elif done.in_force_error:
        console.print(f"in force before: none ({done.in_force_error})", soft_wrap=True)
    if result.adjudications_per_day is not None:
        console.print(f"expected adjudication cases: {result.adjudications_per_day:,.0f} per day at "
                      f"{enrolments_per_day:,.0f} enrolments/day")
    if result.current_threshold is not None and result.current_fpir is not None:
        console.print(f"current threshold {result.current_threshold:.4f} gives FPIR {result.current_fpir:.3g} at this size",
                      soft_wrap=True)
    if doc["applied"]:
        applied = doc["applied"]
        console.print(f"applied: {applied['calibration']} and {applied['model_card']}; target FPIR in {applied['settings']} "
                      f"(previous search.threshold {applied['previous_threshold']}; the threshold now follows this calibration "
                      f"at the gallery's size), audit row by {applied['by']}", soft_wrap=True)
