"""``dedup demo``: the whole system on the embedded PostgreSQL with real photos."""

from __future__ import annotations

from pathlib import Path

import typer

from dedup.cli.common import Json, cli_errors, print_json, show_table

GROUP = None
app = typer.Typer()


@app.command("demo")
@cli_errors
def demo_command(
    gallery_size: int = typer.Option(0, "--gallery-size", min=0, help="first fill the gallery with N synthetic face-like templates"),
    directory: Path | None = typer.Option(
        None, "--dir", help="build the deployment here and keep it (default: a temporary folder, deleted)"),
    keep: bool = typer.Option(False, "--keep", help="keep the temporary deployment"),
    as_json: Json = False,
) -> None:
    """Demonstrate the system on the embedded PostgreSQL: submit real photos, run, show queue and receipts."""
    from dedup.bench.demo import run_demo

    result = run_demo(gallery_size, directory, keep, say=(lambda m: typer.echo(m, err=True)))
    if as_json:
        print_json(result.as_dict())
        return
    r = result.receipt
    show_table(f"receipt for batch {r['batch_id']}", ["row", "enrolment", "status", "reason", "detail"],
                [[i["row"], i["enrolment_id"], i["status"], i["reason"], i["detail"]] for i in r["items"]])
    run = result.run
    typer.echo(f"dedup run: {run['enrolments']} enrolments, {run['accepted']} accepted, {run['cases']} to adjudication, "
               f"{run['rejected']} rejected {run['rejected_reasons'] or ''} ({run['enrolments_per_second']} enrolments/s; "
               f"gallery had {result.gallery_size} synthetic templates)")
    show_table("adjudication queue", ["case", "enrolment", "candidates", "top score"],
                [[c["case_id"], c["enrolment_id"], c["candidates"], f"{c['top_score']:.4f}"] for c in result.queue])
    labels = {"accepted": "accepted ({uin})", "rejected": "rejected ({reason})", "adjudication": "in adjudication (case {case_id})",
              "duplicate": "duplicate-of ({duplicate_of})", "recapture": "recapture requested"}
    show_table("report (what the centre sees)", ["row", "enrolment", "state", "detail"],
                [[s["row"], s["enrolment_id"], labels.get(s["state"], s["state"]).format(**s), s["detail"]] for s in result.report])
    if result.kept:
        typer.echo(f"deployment kept in {result.home}: try `dedup queue next --home {result.home} --user adjudicator1`")
