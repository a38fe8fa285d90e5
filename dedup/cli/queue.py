"""``dedup queue``: the adjudication queue (list, next, show, decide, release)."""

from __future__ import annotations

from typing import Any

import typer

from dedup.cli.common import Home, Json, System, User, cli_errors, print_json, show_table

GROUP = "queue"
app = typer.Typer(help="The adjudication queue: list, next, show, decide, release.", no_args_is_help=True)


@app.command("list")
@cli_errors
def queue_list_command(
    include_decided: bool = typer.Option(False, "--all", help="decided cases too"),
    home: Home = None,
    user: User = None,
    as_json: Json = False,
) -> None:
    """Open cases, oldest first (no photos)."""
    from dedup.adjudication.queue import list_cases

    with System(home, user) as s:
        rows = list_cases(s.conn, s.actor, include_decided)
    if as_json:
        print_json([c.as_dict() for c in rows])
        return
    show_table("adjudication queue", ["case", "centre", "enrolment", "opened", "status", "held by", "candidates", "top score"],
                [[c.case_id, c.centre_id, c.enrolment_id, f"{c.opened_at:%Y-%m-%d %H:%M}", c.decision or c.status, c.claimed_by,
             c.candidates, f"{c.top_score:.4f}" if c.top_score is not None else None] for c in rows])


def _print_case(detail: Any, as_json: bool) -> None:
    if as_json:
        print_json(detail.as_dict())
        return
    typer.echo(f"case {detail.case_id} ({detail.status}{', ' + detail.decision if detail.decision else ''}): "
               f"enrolment {detail.enrolment_id} of centre {detail.centre_id}, captured {detail.captured_at:%Y-%m-%d %H:%M}")
    typer.echo(f"photo: {detail.photo}")
    if detail.claimed_by:
        typer.echo(f"held by {detail.claimed_by} until {detail.lease_until:%Y-%m-%d %H:%M:%S} UTC")
    show_table("candidates", ["rank", "score", "found in", "identity", "centre", "enrolment", "state", "photo"],
                [[c.rank, f"{c.score:.4f}", c.found_in, "SYNTHETIC" if c.synthetic else c.uin, c.centre_id, c.enrolment_id,
             c.state, c.photo] for c in detail.candidates])


@app.command("next")
@cli_errors
def queue_next_command(home: Home = None, user: User = None, as_json: Json = False) -> None:
    """Claim the next case (with a lease; at web.control_rate a control pair, as the web does) and show it."""
    from dedup.adjudication.cases import show_case
    from dedup.adjudication.queue import claim_next
    from dedup.ingest.photos import photo_store

    with System(home, user) as s:
        settings = s.dep.settings
        got = claim_next(s.conn, s.actor, settings.store.lease_seconds, settings.web.control_rate)
        detail = None if got is None else show_case(s.conn, s.actor, got, photo_store(s.dep.store))
    if detail is None:
        if as_json:
            print_json(None)
        else:
            typer.echo("the queue is empty")
        return
    _print_case(detail, as_json)


@app.command("show")
@cli_errors
def queue_show_command(
    case_id: int = typer.Argument(..., help="case number"),
    home: Home = None,
    user: User = None,
    as_json: Json = False,
) -> None:
    """Show a case you hold (supervisors: any case) with its candidates and exact scores."""
    from dedup.adjudication.cases import show_case
    from dedup.ingest.photos import photo_store

    with System(home, user) as s:
        detail = show_case(s.conn, s.actor, case_id, photo_store(s.dep.store))
    _print_case(detail, as_json)


@app.command("decide")
@cli_errors
def queue_decide_command(
    case_id: int = typer.Argument(..., help="case number"),
    duplicate_of: str | None = typer.Option(None, "--duplicate-of", help="the existing UIN this enrolment duplicates"),
    distinct: bool = typer.Option(False, "--distinct", help="a different person: issue a UIN"),
    recapture: bool = typer.Option(False, "--recapture", help="ask the centre for a new photo"),
    comment: str | None = typer.Option(None, "--comment", help="a note kept with the decision (recapture: shown to the centre)"),
    home: Home = None,
    user: User = None,
    as_json: Json = False,
) -> None:
    """Decide a case you hold: --duplicate-of UIN, --distinct or --recapture."""
    from dedup.adjudication.cases import decide
    from dedup.errors import InvalidParameter

    chosen = [name for name, on in (("duplicate", duplicate_of is not None), ("distinct", distinct), ("recapture", recapture)) if on]
    if len(chosen) != 1:
        raise InvalidParameter("give exactly one of --duplicate-of UIN, --distinct, --recapture")
    with System(home, user) as s:
        r = decide(s.conn, s.actor, case_id, chosen[0], duplicate_of, comment)
    if as_json:
        print_json(r.as_dict())
        return
    note = "" if r.changed else " (already decided so; nothing changed)"
    what = {"duplicate": f"duplicate of {r.duplicate_of}", "distinct": f"distinct: UIN {r.uin} issued" if r.uin else "distinct",
            "recapture": "recapture requested from the centre"}[r.decision]
    typer.echo(f"case {r.case_id}: {what}{note}")


@app.command("release")
@cli_errors
def queue_release_command(
    case_id: int = typer.Argument(..., help="case number"),
    home: Home = None,
    user: User = None,
) -> None:
    """Give a held case back to the queue."""
    from dedup.adjudication.queue import release

    with System(home, user) as s:
        release(s.conn, s.actor, case_id)
    typer.echo(f"case {case_id} released")
