"""``dedup abis serve|status``: dedup as the ABIS of MOSIP (see dedup.mosip)."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

import typer

from dedup.cli.common import Home, Json, User, cli_errors, home_dir, print_json, write_json

GROUP = "abis"
app = typer.Typer(help="MOSIP mode: answer MOSIP's ABIS requests from its ActiveMQ queues.", no_args_is_help=True)


def _store_errors(fn: Any) -> Any:
    """A lost database connection becomes a message (StoreError), not a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import psycopg

        from dedup.errors import StoreError

        try:
            return fn(*args, **kwargs)
        except psycopg.Error as exc:
            text = str(exc).strip()
            raise StoreError(f"database error: {text.splitlines()[0] if text else type(exc).__name__}") from None

    return wrapper


@app.command("serve")
@cli_errors
@_store_errors
def serve_command(
    home: Home = None,
    user: User = None,
    max_messages: int | None = typer.Option(None, "--max-messages", min=1, help="stop after answering this many requests"),
    idle_exit: float | None = typer.Option(None, "--idle-exit", min=0.1, help="stop after this many seconds without a request"),
    timings: Path | None = typer.Option(None, "--timings", help="at exit, write the seconds spent per stage to this JSON file"),
) -> None:
    """Consume MOSIP's inbound queue and answer on the outbound one (until Ctrl-C or SIGTERM)."""
    from dedup.deployment import open_deployment
    from dedup.mosip.consumer import Consumer
    from dedup.store.users import authenticate, authorize

    dep = open_deployment(home_dir(home))
    with dep.database.session() as conn:
        authorize(authenticate(conn, user), "pipeline.run")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("faiss", "stomp"):  # their INFO lines say nothing about requests
        logging.getLogger(noisy).setLevel(logging.WARNING)
    consumer = Consumer(dep, say=lambda m: typer.echo(m, err=True))
    signal.signal(signal.SIGTERM, lambda *_: consumer.stop_event.set())
    try:
        n = consumer.run(max_messages=max_messages, idle_exit=idle_exit)
    except KeyboardInterrupt:
        n = consumer.answered
    finally:
        if timings is not None and consumer.timings is not None:
            write_json({"answered": consumer.answered, "stages": consumer.timings.as_dict()}, timings)
    typer.echo(f"stopped after answering {n} request(s)", err=True)


@app.command("status")
@cli_errors
@_store_errors
def status_command(
    home: Home = None,
    as_json: Json = False,
    no_broker: bool = typer.Option(False, "--no-broker", help="do not try to connect to the broker"),
) -> None:
    """The consumer, pending jobs, references stored, answers by operation and the last error."""
    from dedup.deployment import open_deployment
    from dedup.mosip.status import report

    out = report(open_deployment(home_dir(home)), check_broker=not no_broker)
    if as_json:
        print_json(out)
        return
    typer.echo(f"broker {out['broker_url']}: " + ("not checked" if "broker_reachable" not in out else
                                                   "reachable" if out["broker_reachable"] else f"unreachable ({out.get('broker_error')})"))
    c = out["consumer"]
    running = "running" if out["consumer_running"] else "not running"
    typer.echo(f"consumer: {running} (pid {c.get('pid')}, last heartbeat {c.get('heartbeat_at')})")
    depth = out.get("queue_depth")
    typer.echo(f"inbound queue: {'unknown' if depth is None else depth} message(s) waiting in the broker")
    typer.echo(f"pending jobs: {out['pending_jobs']}; references: {out['references']}; answered: {out['requests_answered']}"
               f" (last {out['last_answer_at']}); responses not confirmed sent: {out['unsent_responses']}")
    for r in out["by_operation"]:
        typer.echo(f"  {r['operation']}: returnValue {r['return_value']} x {r['count']}")
    if out["failures"]:
        typer.echo("  failure reasons: " + ", ".join(f"{k} x {v}" for k, v in out["failures"].items()))
    typer.echo(f"last error: {out['last_error'] or 'none'}" + (f" at {out['last_error_at']}" if out["last_error_at"] else ""))
