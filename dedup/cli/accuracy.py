"""``dedup accuracy``: the figures the deployment measures on itself (impostor tail, FPIR at
the gallery size, per-group FMR, live FNIR from adjudication); the same as the web app's
Accuracy page."""

from __future__ import annotations

import math
from typing import Annotated, Any

import typer

from dedup.cli.common import Home, Json, System, User, cli_errors, print_json, show_table

GROUP = None
app = typer.Typer()


def _rate(value: Any, ci: Any = None) -> str:
    if value is None:
        return "–"
    text = f"{value:.2e}"
    if ci and all(isinstance(v, (int, float)) and math.isfinite(v) for v in ci):  # None: no interval
        text += f" ({ci[0]:.1e}–{ci[1]:.1e})"
    return text


@app.command("accuracy")
@cli_errors
def accuracy_command(
    home: Home = None,
    user: User = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="sample the gallery's impostor pairs and refit the tail now (admin)")] = False,
    as_json: Json = False,
) -> None:
    """What the deployment measures on itself: impostor tail, FPIR at N, per-group FMR, live FNIR."""
    from dedup.evaluation.live import deployment_report

    with System(home, user) as s:
        report = deployment_report(s.dep, s.conn, s.actor, refresh_now=refresh)
    if as_json:
        print_json(report)
        return
    t = report["threshold"]
    typer.echo(f"gallery {report['gallery_size']:,} templates; threshold in force {t['value']:.4f} ({t['source']})")
    g = report["genuine"]
    typer.echo(f"live FNIR: {_rate(g['fnir'], g['fnir_ci'])} from {g['pairs']} genuine pair(s) "
               f"({g['sources']['decided_duplicate']} decided duplicates, {g['sources']['control_pair']} control pairs)"
               + (f"; {g['note']}" if g["note"] else ""))
    if report["refresh"] is not None:
        r, imp = report["refresh"], report["impostor"]
        typer.echo(f"impostor pairs: {imp['pairs']:,} of {imp['identities']:,} accepted identities (refresh {r['refresh_id']}, "
                   f"gallery {r['gallery_size']:,}); FMR at {imp['threshold']:.4f}: {_rate(imp['fmr_at_threshold'], imp['fmr_ci'])}")
        if report["fpir"] is not None:
            f = report["fpir"]["at_gallery_size"]
            typer.echo(f"FPIR at {f['n']:,}: {_rate(f['fpir'], (f['lo'], f['hi']))} (tail model)")
        for attribute, rows in report["groups"].items():
            show_table(f"FMR by {attribute}", ["group", "pairs", "false matches", "FMR (CI)", "ratio to best", "note"],
                       [[r["group"], r["pairs"], r["false_matches"], _rate(r["fmr"], r["fmr_ci"]),
                         f"{r['ratio_to_best']:.2f}" if r["ratio_to_best"] is not None else "–", r["note"]] for r in rows])
    for note in report["notes"]:
        typer.echo(f"note: {note}")
