"""The deployment commands: init, submit, status, report, run, audit (PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from dedup.cli.common import Home, Json, System, User, cli_errors, print_json, show_table

GROUP = None
app = typer.Typer()


@app.command("init")
@cli_errors
def init_command(
    directory: Path = typer.Argument(..., help="deployment folder to create (or bring up to date)"),
    database_url: str | None = typer.Option(None, "--database-url", help="an existing PostgreSQL (default: an embedded server in DIR/pg)"),
    admin: str = typer.Option("admin", "--admin", help="name of the first admin user"),
    as_json: Json = False,
) -> None:
    """Create a deployment: settings file, store folder, database and first admin."""
    from dedup.deployment import init_deployment

    r = init_deployment(directory, database_url, admin)
    out = {"home": str(r.home), "database": "embedded" if r.embedded else "external", "created": r.created,
           "migrations_applied": r.migrations_applied, "admin": r.admin, "admin_created": r.admin_created}
    if as_json:
        print_json(out)
        return
    what = "created" if r.created else "already there; brought up to date"
    typer.echo(f"deployment {r.home}: {what} ({out['database']} PostgreSQL; {len(r.migrations_applied)} migration(s) applied)")
    if r.admin_created:
        typer.echo(f"first admin user: {r.admin}  (export DEDUP_HOME={r.home} DEDUP_USER={r.admin})")


@app.command("submit")
@cli_errors
def submit_command(
    batch: Path = typer.Argument(..., help="the batch manifest (Parquet); photo paths are relative to its folder"),
    home: Home = None,
    user: User = None,
    as_json: Json = False,
) -> None:
    """Submit a centre's batch; print the receipt (every row accepted or rejected with a reason)."""
    from dedup.ingest.submit import submit_batch

    with System(home, user) as s:
        receipt, new = submit_batch(s.dep, s.conn, s.actor, batch)
    if not new:
        typer.echo(f"batch {receipt.batch_id} was already received at {receipt.submitted_at:%Y-%m-%d %H:%M:%S} UTC; "
                   "nothing changed", err=True)
    if as_json:
        print_json(receipt.as_dict())
        return
    show_table(f"receipt for batch {receipt.batch_id} ({receipt.accepted} accepted, {receipt.rejected} rejected)",
                ["row", "centre", "enrolment", "status", "reason", "detail"],
                [[i.row, i.centre_id, i.enrolment_id, i.status, i.reason, i.detail] for i in receipt.items])


def _state_label(st: Any) -> str:
    if st.state == "accepted":
        return f"accepted ({st.uin})"
    if st.state == "rejected":
        return f"rejected ({st.reason})"
    if st.state == "duplicate":
        return f"duplicate-of ({st.duplicate_of})"
    if st.state == "adjudication":
        return f"in adjudication (case {st.case_id})"
    if st.state == "recapture":
        return "recapture requested"
    return str(st.state)


def _judged(st: Any) -> str:
    """The threshold the enrolment was decided at (empty until `dedup run` decided it)."""
    return "" if st.judged_threshold is None else f"{st.judged_threshold:.4f}"


@app.command("status")
@cli_errors
def status_command(
    enrolment_id: str = typer.Argument(..., help="the enrolment id as submitted"),
    centre: str | None = typer.Option(None, "--centre", help="the centre, when several centres used the same id"),
    home: Home = None,
    user: User = None,
    as_json: Json = False,
) -> None:
    """Show an enrolment's state: received, rejected, processing, accepted, adjudication, duplicate, recapture."""
    from dedup.store.batches import enrolment_status

    with System(home, user) as s:
        states = enrolment_status(s.conn, s.actor, enrolment_id, centre)
    if as_json:
        print_json([st.as_dict() for st in states])
        return
    show_table(f"enrolment {enrolment_id}", ["centre", "batch", "row", "state", "detail", "threshold"],
                [[st.centre_id, st.batch_id, st.row, _state_label(st), st.detail, _judged(st)] for st in states])


@app.command("report")
@cli_errors
def report_command(
    batch_id: str = typer.Argument(..., help="the batch id from the receipt"),
    out: Path | None = typer.Option(None, "--out", help="also write the report to FILE.parquet or FILE.csv"),
    home: Home = None,
    user: User = None,
    as_json: Json = False,
) -> None:
    """Every enrolment of a batch with its current state."""
    from dedup.store.batches import batch_report

    if out is not None and out.suffix not in (".parquet", ".csv"):
        from dedup.errors import InvalidParameter

        raise InvalidParameter("--out must end in .parquet or .csv")
    with System(home, user) as s:
        states = batch_report(s.conn, s.actor, batch_id)
    if out is not None:
        from dedup.ingest.report import write_report

        write_report(states, out)
    if as_json:
        print_json({"batch_id": batch_id, "rows": [st.as_dict() for st in states]})
        return
    show_table(f"batch {batch_id}", ["row", "centre", "enrolment", "state", "detail", "threshold"],
                [[st.row, st.centre_id, st.enrolment_id, _state_label(st), st.detail, _judged(st)] for st in states])


@app.command("run")
@cli_errors
def run_command(
    once: bool = typer.Option(False, "--once", help="process what has been received, then exit (default: keep polling)"),
    scheduler: str | None = typer.Option(
        None, "--scheduler", help="Dask scheduler address for the gallery search (default: in this process)"),
    home: Home = None,
    user: User = None,
    as_json: Json = False,
) -> None:
    """Deduplicate received enrolments: embed, search, then accept (UIN) or open a case."""
    from dedup.pipeline import Runner

    with System(home, user) as s:
        runner = Runner(s.dep, s.actor, scheduler, progress=None if as_json else (lambda m: typer.echo(m, err=True)))
        report = runner.run(once=once)
    if as_json:
        for warning in report.warnings:  # without --json, the progress lines said it already
            typer.echo(f"warning: {warning}", err=True)
        print_json(report.as_dict())
        return
    typer.echo(f"{report.enrolments} enrolments in {report.units} unit(s): {report.accepted} accepted, {report.cases} to adjudication, "
               f"{report.rejected} rejected {report.rejected_reasons or ''}; {report.per_second:.1f} enrolments/s"
               + (f"; {report.capped_probes} probe(s) hit max_candidates" if report.capped_probes else ""))


@app.command("audit")
@cli_errors
def audit_command(
    case_id: int | None = typer.Option(None, "--case", help="only this case's entries"),
    limit: int = typer.Option(1000, "--limit", min=1, help="at most this many entries"),
    home: Home = None,
    user: User = None,
    as_json: Json = False,
) -> None:
    """The audit log: who did what, when (supervisor, admin)."""
    from dedup.store.audit import entries
    from dedup.store.users import authorize

    with System(home, user) as s:
        authorize(s.actor, "audit.read")
        rows = entries(s.conn, "case" if case_id is not None else None, case_id, limit)
    if as_json:
        print_json([{"audit_id": r.audit_id, "at": r.at.isoformat(), "actor": r.actor, "action": r.action,
                     "object_type": r.object_type, "object_id": r.object_id, "detail": r.detail} for r in rows])
        return
    show_table("audit", ["#", "when (UTC)", "who", "what", "object", "detail"],
                [[r.audit_id, f"{r.at:%Y-%m-%d %H:%M:%S}", r.actor, r.action, f"{r.object_type} {r.object_id}", json.dumps(r.detail)]
                 for r in rows])
