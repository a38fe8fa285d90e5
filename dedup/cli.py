"""The ``dedup`` command: thin typer commands over library calls.

Only this module turns domain errors (``dedup.errors.DedupError``) into a one-line
message on stderr and a non-zero exit code; library code never prints or exits.
Heavy modules are imported inside the commands so ``dedup --help`` stays fast.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import typer

from dedup.errors import DedupError

app = typer.Typer(
    name="dedup",
    help="One-to-many face deduplication for national ID enrolment.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

F = TypeVar("F", bound=Callable[..., Any])


def cli_errors(fn: F) -> F:
    """Turn domain errors into a message and an exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DedupError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except MemoryError:
            typer.echo("error: out of memory; lower the sizes or add RAM (see `dedup bench --help`)", err=True)
            raise typer.Exit(3) from None

    return wrapper  # type: ignore[return-value]


def home_dir(home: Optional[Path]) -> Path:
    """The deployment folder: ``--home``, else ``DEDUP_HOME``, else the current folder."""
    if home is not None:
        return home
    env = os.environ.get("DEDUP_HOME")
    return Path(env) if env else Path.cwd()


def emit_json(payload: Any, target: Optional[str]) -> None:
    """Write a JSON report to ``target`` (a path, or ``-`` for stdout)."""
    text = json.dumps(payload, indent=2, sort_keys=True, default=str)
    if target in (None, "-"):
        typer.echo(text)
    else:
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")


HomeOption = typer.Option(None, "--home", help="deployment folder (default: $DEDUP_HOME, else the current folder)")


# --------------------------------------------------------------------------- config


@app.command("config")
@cli_errors
def config_command(
    home: Optional[Path] = HomeOption,
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    markdown: bool = typer.Option(False, "--markdown", help="the settings table of the README"),
) -> None:
    """Show every setting, its environment variable, default and effective value."""
    from dedup.config import describe, load_settings, markdown_table

    if markdown:
        typer.echo(markdown_table())
        return

    settings = load_settings(home_dir(home))
    rows = []
    for row in describe():
        section, name = row["name"].split(".")
        rows.append({**row, "value": getattr(getattr(settings, section), name)})
    if as_json:
        emit_json(rows, "-")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("setting", "value", "default", "environment", "meaning")
    for row in rows:
        table.add_row(row["name"], str(row["value"]), str(row["default"]), row["env"], row["doc"])
    Console().print(table)


# ----------------------------------------------------------- section: synth / bench (index)


@app.command("synth")
@cli_errors
def synth_command(
    out: Path = typer.Option(..., "--out", help="folder for gallery.parquet and probes.parquet"),
    gallery_size: int = typer.Option(10_000, "--gallery-size", "-n", help="gallery templates"),
    queries: int = typer.Option(1_000, "--queries", "-q", help="probes (half of them new captures of gallery people)"),
    profile: str = typer.Option("face-like", "--profile", help="uniform, face-like or arcface-like"),
    dim: Optional[int] = typer.Option(None, "--dim", help="template dimension [default: the profile's]"),
    duplicate_rate: float = typer.Option(0.01, "--duplicate-rate", help="share of gallery rows that are planted duplicates"),
    seed: int = typer.Option(0, "--seed", help="random seed"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Write a labelled synthetic set (templates schema, identity and group labels) to Parquet."""
    from dedup.synth import SynthSpec, SyntheticData, get_profile, write_parquet

    spec = SynthSpec(get_profile(profile, dim), gallery_size, queries, duplicate_rate, 0.5, seed)
    paths = write_parquet(SyntheticData(spec), out, progress=not as_json and sys.stderr.isatty())
    result = {"profile": spec.profile.name, "dim": spec.profile.dim, "model_id": spec.profile.model_id,
              "gallery_size": gallery_size, "queries": queries, "seed": seed,
              "files": {k: str(v) for k, v in paths.items()}}
    if as_json:
        emit_json(result, "-")
    else:
        typer.echo(f"wrote {gallery_size:,} gallery and {queries:,} probe templates ({spec.profile.name}, "
                   f"{spec.profile.dim}-d, synthetic) to {paths['gallery']} and {paths['probes']}")


gallery_app = typer.Typer(help="Gallery index maintenance.", no_args_is_help=True)
app.add_typer(gallery_app, name="gallery")


def _gallery_root(home: Optional[Path], path: Optional[Path]) -> Path:
    return path if path is not None else home_dir(home) / "gallery"


@gallery_app.command("stats")
@cli_errors
def gallery_stats_command(
    home: Optional[Path] = HomeOption,
    path: Optional[Path] = typer.Option(None, "--path", help="a gallery folder [default: HOME/gallery]"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Templates, shards, generation, codec and bytes per template of the gallery."""
    from dedup.config import load_settings
    from dedup.index.gallery import Gallery

    settings = load_settings(home_dir(home))
    stats = Gallery.open(_gallery_root(home, path), settings.index).stats()
    if as_json:
        emit_json(stats, "-")
        return
    for key, value in stats.items():
        typer.echo(f"{key:>26}: {value}")


@gallery_app.command("compact")
@cli_errors
def gallery_compact_command(
    home: Optional[Path] = HomeOption,
    path: Optional[Path] = typer.Option(None, "--path", help="a gallery folder [default: HOME/gallery]"),
    retrain: bool = typer.Option(False, "--retrain", help="first train a new codec on a sample of the live templates"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Merge small shards into full ones and drop removed rows (a new generation)."""
    from dedup.config import load_settings
    from dedup.index.gallery import Gallery

    settings = load_settings(home_dir(home))
    report = Gallery.open(_gallery_root(home, path), settings.index).compact(retrain=retrain)
    if as_json:
        emit_json(report, "-")
    else:
        typer.echo(f"compacted: {report['shards_before']} shard(s) -> {report['shards_after']}, "
                   f"codec {report['codec_version']}")


@app.command("bench")
@cli_errors
def bench_command(
    job: Optional[Path] = typer.Option(None, "--job", help="a job file (jobs/NAME.toml) with a [bench] table; options given here override it"),
    gallery_size: Optional[int] = typer.Option(None, "--gallery-size", "-n", help="templates in the synthetic gallery [default: 100000]"),
    queries: Optional[int] = typer.Option(None, "--queries", "-q", help="probes to search (half of them mated) [default: 2000]"),
    dim: Optional[int] = typer.Option(None, "--dim", help="template dimension [default: the profile's]"),
    profile: Optional[str] = typer.Option(None, "--profile", help="uniform, face-like or arcface-like [default: face-like]"),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="cosine threshold [default: the profile's operating point]"),
    shards: Optional[int] = typer.Option(None, "--shards", help="shards to split the gallery into [default: 1]"),
    compare: Optional[str] = typer.Option(None, "--compare", help="comparison engines, comma-separated: flat (always run), hnsw"),
    seed: Optional[int] = typer.Option(None, "--seed", help="random seed of the synthetic data [default: 0]"),
    nprobe: Optional[int] = typer.Option(None, "--nprobe", help="IVF lists visited per probe [default: search.nprobe]"),
    depth: Optional[int] = typer.Option(None, "--depth", help="rows re-ranked exactly per probe [default: search.depth]"),
    nlist: Optional[int] = typer.Option(None, "--nlist", help="IVF lists [default: index.nlist, 0 = automatic]"),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="keep the built gallery here instead of a temporary folder"),
    workers: Optional[int] = typer.Option(None, "--workers", help="also search on Dask with 1, 2, ... WORKERS workers and report probes/s side by side"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Dask scheduler address (tcp://HOST:8786) for --workers [default: runtime.scheduler, else a LocalCluster]"),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda: adds an exact torch search row on that device and picks the workers' search (cuda: exact on GPU workers)"),
    json_out: Optional[str] = typer.Option(None, "--json", help="write the report as JSON to FILE ('-' for stdout)"),
    home: Optional[Path] = HomeOption,
) -> None:
    """Scale test: build a synthetic gallery, search it, compare with exact search (and hnswlib)."""
    import dataclasses

    from dedup.bench import BenchSpec, load_job, run_bench, summary_rows
    from dedup.config import load_settings

    spec = load_job(job) if job else BenchSpec()
    overrides = {
        "gallery_size": gallery_size, "queries": queries, "dim": dim, "profile": profile, "threshold": threshold,
        "shards": shards, "seed": seed, "nprobe": nprobe, "depth": depth, "nlist": nlist,
        "workdir": str(workdir) if workdir else None,
        "workers": workers, "scheduler": scheduler, "device": device,
    }
    if compare is not None:
        overrides["compare"] = tuple(c.strip() for c in compare.split(",") if c.strip())
    spec = dataclasses.replace(spec, **{k: v for k, v in overrides.items() if v is not None})
    settings = load_settings(home_dir(home) if (home or os.environ.get("DEDUP_HOME")) else None)
    if spec.workers and (spec.scheduler or settings.runtime.scheduler):
        from dedup.cluster import check_scheduler

        check_scheduler(spec.scheduler or settings.runtime.scheduler)
    quiet = json_out == "-"
    report = run_bench(spec, settings, progress=not quiet and sys.stderr.isatty())
    if json_out:
        emit_json(report, json_out)
    if quiet:
        return
    from rich.console import Console
    from rich.table import Table

    title = (f"{report['gallery_size']:,} x {report['dim']}-d {report['profile']} templates, "
             f"{report['queries']:,} probes, threshold {report['threshold']:.3f}, {report['shards']} shard(s)")
    table = Table("engine", "probes/s", "duplicate recall", "false cand./probe", "RAM B/template", "build s", title=title)
    for row in summary_rows(report):
        table.add_row(*row)
    console = Console()
    console.print(table)
    flat = report["baselines"]["flat"]
    console.print(f"dedup is {report['probes_per_s'] / flat['probes_per_s']:.1f}x exact flat "
                  f"(flat timed on {flat['probes']:,} probes); capped probes: {report['capped_probes']}; "
                  f"train {report['train_s']:.1f} s, add {report['add_s']:.1f} s; machine: {report['machine']['cpu']}, "
                  f"{report['machine']['cores']} cores")
    if "scaling" in report:
        sc = report["scaling"]
        scale = Table("workers", "threads/worker", "probes/s", "speedup", "duplicate recall", "capped probes",
                      "shard load s", title=f"Dask: {sc['scheduler']}, {sc['method']} on {sc['device']}, "
                                              f"{sc['cores']} cores here")
        for p in sc["points"]:
            scale.add_row(str(p["workers"]), str(p["threads_per_worker"]), f"{p['probes_per_s']:,.0f}",
                          f"{p['speedup_vs_1_worker']:.2f}x", f"{p['duplicate_recall']:.4f}", str(p["capped_probes"]),
                          f"{p['load_seconds']:.2f}")
        console.print(scale)


# --------------------------------------------------------------------------- section: face


@app.command("embed")
@cli_errors
def embed_command(
    photos: list[Path] = typer.Argument(..., help="photo files and/or folders (folders are searched recursively for image files)"),
    out: Path = typer.Option(..., "--out", "-o", help="templates Parquet file to write"),
    rejects: Optional[Path] = typer.Option(None, "--rejects", help="rejects Parquet file [default: OUT with .rejects before the suffix]"),
    workers: Optional[int] = typer.Option(None, "--workers", help="processes for decode/detect/align [default: face.workers]"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="crops per torch batch [default: face.batch_size]"),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda [default: face.device]"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable summary on stdout"),
    home: Optional[Path] = HomeOption,
) -> None:
    """Face pipeline: templates for the photos that pass, a reject list (with reasons) for the rest."""
    import dataclasses
    import time

    from dedup.config import load_settings
    from dedup.face.embed import embed_photos
    from dedup.face.sources import expand_sources, rejects_path_for
    from dedup.face.threshold import DEFAULT_COSINE_THRESHOLD

    face = load_settings(home_dir(home)).face
    overrides = {"workers": workers, "batch_size": batch_size, "device": device}
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
    report = {
        "templates": str(out), "rejects": str(rejects_path), "photos": len(result.results),
        "accepted": len(result.accepted), "rejected": len(result.rejected), "reasons": result.reason_counts(),
        "model_id": result.model_id, "dim": result.dim, "cosine_threshold": DEFAULT_COSINE_THRESHOLD if face.model == "dlib" else None,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if as_json:
        emit_json(report, "-")
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


# --------------------------------------------------------------------------- section: system
# Deployment, centres, users, submission, outcomes, adjudication queue (PostgreSQL).

UserOption = typer.Option(None, "--user", envvar="DEDUP_USER", help="act as this user (default: $DEDUP_USER)")
JsonOption = typer.Option(False, "--json", help="machine-readable output")

centre_app = typer.Typer(help="Enrolment centres (admin).", no_args_is_help=True)
user_app = typer.Typer(help="User accounts and roles.", no_args_is_help=True)
queue_app = typer.Typer(help="The adjudication queue: list, next, show, decide, release.", no_args_is_help=True)
app.add_typer(centre_app, name="centre")
app.add_typer(user_app, name="user")
app.add_typer(queue_app, name="queue")


class _System:
    """An opened deployment, a database connection and the acting user, for one command."""

    def __init__(self, home: Optional[Path], user: Optional[str]) -> None:
        from dedup.deployment import open_deployment
        from dedup.store.users import authenticate

        self.dep = open_deployment(home_dir(home))
        self.conn = self.dep.database.connect()
        try:
            self.actor = authenticate(self.conn, user)
        except BaseException:
            self.conn.close()
            raise

    def __enter__(self) -> "_System":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.conn.close()
        import psycopg

        if isinstance(exc, psycopg.Error):  # lost connection, server stopped: a message, not a traceback
            from dedup.errors import StoreError

            raise StoreError(f"database error: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns, title=title)
    for r in rows:
        table.add_row(*["" if v is None else str(v) for v in r])
    Console().print(table)


@app.command("init")
@cli_errors
def init_command(
    directory: Path = typer.Argument(..., help="deployment folder to create (or bring up to date)"),
    database_url: Optional[str] = typer.Option(None, "--database-url", help="an existing PostgreSQL (default: an embedded server in DIR/pg)"),
    admin: str = typer.Option("admin", "--admin", help="name of the first admin user"),
    as_json: bool = JsonOption,
) -> None:
    """Create a deployment: settings file, store folder, database and first admin."""
    from dedup.deployment import init_deployment

    r = init_deployment(directory, database_url, admin)
    out = {"home": str(r.home), "database": "embedded" if r.embedded else "external", "created": r.created,
           "migrations_applied": r.migrations_applied, "admin": r.admin, "admin_created": r.admin_created}
    if as_json:
        emit_json(out, "-")
        return
    what = "created" if r.created else "already there; brought up to date"
    typer.echo(f"deployment {r.home}: {what} ({out['database']} PostgreSQL; {len(r.migrations_applied)} migration(s) applied)")
    if r.admin_created:
        typer.echo(f"first admin user: {r.admin}  (export DEDUP_HOME={r.home} DEDUP_USER={r.admin})")


@centre_app.command("add")
@cli_errors
def centre_add_command(
    centre_id: str = typer.Argument(..., help="centre id as it appears in manifests"),
    name: str = typer.Option("", "--name", help="display name"),
    home: Optional[Path] = HomeOption,
    user: Optional[str] = UserOption,
    as_json: bool = JsonOption,
) -> None:
    """Register an enrolment centre (admin)."""
    from dedup.store.centres import add_centre

    with _System(home, user) as s:
        c = add_centre(s.conn, s.actor, centre_id, name)
    if as_json:
        emit_json({"centre_id": c.centre_id, "name": c.name}, "-")
    else:
        typer.echo(f"centre {c.centre_id} added")


@centre_app.command("list")
@cli_errors
def centre_list_command(home: Optional[Path] = HomeOption, user: Optional[str] = UserOption, as_json: bool = JsonOption) -> None:
    """List the registered centres."""
    from dedup.store.centres import list_centres

    with _System(home, user) as s:
        rows = list_centres(s.conn, s.actor)
    if as_json:
        emit_json([{"centre_id": c.centre_id, "name": c.name, "created_at": c.created_at.isoformat()} for c in rows], "-")
    else:
        _table("centres", ["centre", "name", "created"], [[c.centre_id, c.name, f"{c.created_at:%Y-%m-%d}"] for c in rows])


@user_app.command("add")
@cli_errors
def user_add_command(
    name: str = typer.Argument(..., help="user name"),
    role: str = typer.Option(..., "--role", help="centre, adjudicator, supervisor or admin"),
    centre: Optional[str] = typer.Option(None, "--centre", help="the centre of a centre user"),
    home: Optional[Path] = HomeOption,
    user: Optional[str] = UserOption,
    as_json: bool = JsonOption,
) -> None:
    """Add a user with a role (admin)."""
    from dedup.store.users import add_user

    with _System(home, user) as s:
        u = add_user(s.conn, s.actor, name, role, centre)
    if as_json:
        emit_json({"name": u.name, "role": u.role, "centre_id": u.centre_id}, "-")
    else:
        typer.echo(f"user {u.name} added as {u.role}" + (f" of centre {u.centre_id}" if u.centre_id else ""))


@user_app.command("list")
@cli_errors
def user_list_command(home: Optional[Path] = HomeOption, user: Optional[str] = UserOption, as_json: bool = JsonOption) -> None:
    """List users and roles (admin, supervisor)."""
    from dedup.store.users import list_users

    with _System(home, user) as s:
        rows = list_users(s.conn, s.actor)
    if as_json:
        emit_json([{"name": u.name, "role": u.role, "centre_id": u.centre_id, "active": u.active} for u in rows], "-")
    else:
        _table("users", ["user", "role", "centre", "active"], [[u.name, u.role, u.centre_id, u.active] for u in rows])


@user_app.command("disable")
@cli_errors
def user_disable_command(
    name: str = typer.Argument(..., help="user to disable"),
    home: Optional[Path] = HomeOption,
    user: Optional[str] = UserOption,
) -> None:
    """Disable a user (admin); cases they hold return to the queue."""
    from dedup.store.users import disable_user

    with _System(home, user) as s:
        disable_user(s.conn, s.actor, name)
    typer.echo(f"user {name} disabled")


@app.command("submit")
@cli_errors
def submit_command(
    batch: Path = typer.Argument(..., help="the batch manifest (Parquet); photo paths are relative to its folder"),
    home: Optional[Path] = HomeOption,
    user: Optional[str] = UserOption,
    as_json: bool = JsonOption,
) -> None:
    """Submit a centre's batch; print the receipt (every row accepted or rejected with a reason)."""
    from dedup.ingest.submit import submit_batch

    with _System(home, user) as s:
        receipt, new = submit_batch(s.dep, s.conn, s.actor, batch)
    if not new:
        typer.echo(f"batch {receipt.batch_id} was already received at {receipt.submitted_at:%Y-%m-%d %H:%M:%S} UTC; nothing changed", err=True)
    if as_json:
        emit_json(receipt.as_dict(), "-")
        return
    _table(f"receipt for batch {receipt.batch_id} ({receipt.accepted} accepted, {receipt.rejected} rejected)",
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


@app.command("status")
@cli_errors
def status_command(
    enrolment_id: str = typer.Argument(..., help="the enrolment id as submitted"),
    centre: Optional[str] = typer.Option(None, "--centre", help="the centre, when several centres used the same id"),
    home: Optional[Path] = HomeOption,
    user: Optional[str] = UserOption,
    as_json: bool = JsonOption,
) -> None:
    """Show an enrolment's state: received, rejected, processing, accepted, adjudication, duplicate, recapture."""
    from dedup.store.batches import enrolment_status

    with _System(home, user) as s:
        states = enrolment_status(s.conn, s.actor, enrolment_id, centre)
    if as_json:
        emit_json([st.as_dict() for st in states], "-")
        return
    _table(f"enrolment {enrolment_id}", ["centre", "batch", "row", "state", "detail"],
           [[st.centre_id, st.batch_id, st.row, _state_label(st), st.detail] for st in states])


@app.command("report")
@cli_errors
def report_command(
    batch_id: str = typer.Argument(..., help="the batch id from the receipt"),
    out: Optional[Path] = typer.Option(None, "--out", help="also write the report to FILE.parquet or FILE.csv"),
    home: Optional[Path] = HomeOption,
    user: Optional[str] = UserOption,
    as_json: bool = JsonOption,
) -> None:
    """Every enrolment of a batch with its current state."""
    from dedup.store.batches import batch_report

    if out is not None and out.suffix not in (".parquet", ".csv"):
        from dedup.errors import InvalidParameter

        raise InvalidParameter("--out must end in .parquet or .csv")
    with _System(home, user) as s:
        states = batch_report(s.conn, s.actor, batch_id)
    if out is not None:
        from dedup.ingest.report import write_report

        write_report(states, out)
    if as_json:
        emit_json({"batch_id": batch_id, "rows": [st.as_dict() for st in states]}, "-")
        return
    _table(f"batch {batch_id}", ["row", "centre", "enrolment", "state", "detail"],
           [[st.row, st.centre_id, st.enrolment_id, _state_label(st), st.detail] for st in states])


@queue_app.command("list")
@cli_errors
def queue_list_command(
    include_decided: bool = typer.Option(False, "--all", help="decided cases too"),
    home: Optional[Path] = HomeOption,
    user: Optional[str] = UserOption,
    as_json: bool = JsonOption,
) -> None:
    """Open cases, oldest first (no photos)."""
    from dedup.queue.cases import list_cases

    with _System(home, user) as s:
        rows = list_cases(s.conn, s.actor, include_decided)
    if as_json:
        emit_json([c.as_dict() for c in rows], "-")
        return
    _table("adjudication queue", ["case", "centre", "enrolment", "opened", "status", "held by", "candidates", "top score"],
           [[c.case_id, c.centre_id, c.enrolment_id, f"{c.opened_at:%Y-%m-%d %H:%M}", c.decision or c.status, c.claimed_by,
             c.candidates, f"{c.top_score:.4f}" if c.top_score is not None else None] for c in rows])


def _print_case(detail: Any, as_json: bool) -> None:
    if as_json:
        emit_json(detail.as_dict(), "-")
        return
    typer.echo(f"case {detail.case_id} ({detail.status}{', ' + detail.decision if detail.decision else ''}): "
               f"enrolment {detail.enrolment_id} of centre {detail.centre_id}, captured {detail.captured_at:%Y-%m-%d %H:%M}")
    typer.echo(f"photo: {detail.photo}")
    if detail.claimed_by:
        typer.echo(f"held by {detail.claimed_by} until {detail.lease_until:%Y-%m-%d %H:%M:%S} UTC")
    _table("candidates", ["rank", "score", "found in", "identity", "centre", "enrolment", "state", "photo"],
           [[c.rank, f"{c.score:.4f}", c.found_in, "SYNTHETIC" if c.synthetic else c.uin, c.centre_id, c.enrolment_id,
             c.state, c.photo] for c in detail.candidates])


@queue_app.command("next")
@cli_errors
def queue_next_command(home: Optional[Path] = HomeOption, user: Optional[str] = UserOption, as_json: bool = JsonOption) -> None:
    """Claim the oldest open case (with a lease) and show it."""
    from dedup.queue.cases import claim_next, show_case

    with _System(home, user) as s:
        got = claim_next(s.conn, s.actor, s.dep.settings.store.lease_seconds)
        detail = None if got is None else show_case(s.conn, s.actor, got[0], str(s.dep.store / "photos"))
    if detail is None:
        if as_json:
            emit_json(None, "-")
        else:
            typer.echo("the queue is empty")
        return
    _print_case(detail, as_json)


@queue_app.command("show")
@cli_errors
def queue_show_command(
    case_id: int = typer.Argument(..., help="case number"),
    home: Optional[Path] = HomeOption,
    user: Optional[str] = UserOption,
    as_json: bool = JsonOption,
) -> None:
    """Show a case you hold (supervisors: any case) with its candidates and exact scores."""
    from dedup.queue.cases import show_case

    with _System(home, user) as s:
        detail = show_case(s.conn, s.actor, case_id, str(s.dep.store / "photos"))
    _print_case(detail, as_json)


@queue_app.command("decide")
@cli_errors
def queue_decide_command(
    case_id: int = typer.Argument(..., help="case number"),
    duplicate_of: Optional[str] = typer.Option(None, "--duplicate-of", help="the existing UIN this enrolment duplicates"),
    distinct: bool = typer.Option(False, "--distinct", help="a different person: issue a UIN"),
    recapture: bool = typer.Option(False, "--recapture", help="ask the centre for a new photo"),
    comment: Optional[str] = typer.Option(None, "--comment", help="a note kept with the decision (recapture: shown to the centre)"),
    home: Optional[Path] = HomeOption,
    user: Optional[str] = UserOption,
    as_json: bool = JsonOption,
) -> None:
    """Decide a case you hold: --duplicate-of UIN, --distinct or --recapture."""
    from dedup.errors import InvalidParameter
    from dedup.queue.cases import decide

    chosen = [name for name, on in (("duplicate", duplicate_of is not None), ("distinct", distinct), ("recapture", recapture)) if on]
    if len(chosen) != 1:
        raise InvalidParameter("give exactly one of --duplicate-of UIN, --distinct, --recapture")
    with _System(home, user) as s:
        r = decide(s.conn, s.actor, case_id, chosen[0], duplicate_of, comment)
    if as_json:
        emit_json(r.as_dict(), "-")
        return
    note = "" if r.changed else " (already decided so; nothing changed)"
    what = {"duplicate": f"duplicate of {r.duplicate_of}", "distinct": f"distinct: UIN {r.uin} issued",
            "recapture": "recapture requested from the centre"}[r.decision]
    typer.echo(f"case {r.case_id}: {what}{note}")


@queue_app.command("release")
@cli_errors
def queue_release_command(
    case_id: int = typer.Argument(..., help="case number"),
    home: Optional[Path] = HomeOption,
    user: Optional[str] = UserOption,
) -> None:
    """Give a held case back to the queue."""
    from dedup.queue.cases import release

    with _System(home, user) as s:
        release(s.conn, s.actor, case_id)
    typer.echo(f"case {case_id} released")


@app.command("run")
@cli_errors
def run_command(
    once: bool = typer.Option(False, "--once", help="process what has been received, then exit (default: keep polling)"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Dask scheduler address for the gallery search (default: in this process)"),
    home: Optional[Path] = HomeOption,
    user: Optional[str] = UserOption,
    as_json: bool = JsonOption,
) -> None:
    """Deduplicate received enrolments: embed, search, then accept (UIN) or open a case."""
    from dedup.pipeline import Runner

    with _System(home, user) as s:
        runner = Runner(s.dep, s.actor, scheduler, progress=None if as_json else (lambda m: typer.echo(m, err=True)))
        report = runner.run(once=once)
    if as_json:
        for warning in report.warnings:  # without --json, the progress lines said it already
            typer.echo(f"warning: {warning}", err=True)
        emit_json(report.as_dict(), "-")
        return
    typer.echo(f"{report.enrolments} enrolments in {report.units} unit(s): {report.accepted} accepted, {report.cases} to adjudication, "
               f"{report.rejected} rejected {report.rejected_reasons or ''}; {report.per_second:.1f} enrolments/s"
               + (f"; {report.capped_probes} probe(s) hit max_candidates" if report.capped_probes else ""))


@app.command("demo")
@cli_errors
def demo_command(
    gallery_size: int = typer.Option(0, "--gallery-size", min=0, help="first fill the gallery with N synthetic face-like templates"),
    directory: Optional[Path] = typer.Option(None, "--dir", help="build the deployment here and keep it (default: a temporary folder, deleted)"),
    keep: bool = typer.Option(False, "--keep", help="keep the temporary deployment"),
    as_json: bool = JsonOption,
) -> None:
    """Demonstrate the system on the embedded PostgreSQL: submit real photos, run, show queue and receipts."""
    from dedup.demo import run_demo

    result = run_demo(gallery_size, directory, keep, say=(lambda m: typer.echo(m, err=True)))
    if as_json:
        emit_json(result.as_dict(), "-")
        return
    r = result.receipt
    _table(f"receipt for batch {r['batch_id']}", ["row", "enrolment", "status", "reason", "detail"],
           [[i["row"], i["enrolment_id"], i["status"], i["reason"], i["detail"]] for i in r["items"]])
    run = result.run
    typer.echo(f"dedup run: {run['enrolments']} enrolments, {run['accepted']} accepted, {run['cases']} to adjudication, "
               f"{run['rejected']} rejected {run['rejected_reasons'] or ''} ({run['enrolments_per_second']} enrolments/s; "
               f"gallery had {result.gallery_size} synthetic templates)")
    _table("adjudication queue", ["case", "enrolment", "candidates", "top score"],
           [[c["case_id"], c["enrolment_id"], c["candidates"], f"{c['top_score']:.4f}"] for c in result.queue])
    labels = {"accepted": "accepted ({uin})", "rejected": "rejected ({reason})", "adjudication": "in adjudication (case {case_id})",
              "duplicate": "duplicate-of ({duplicate_of})", "recapture": "recapture requested"}
    _table("report (what the centre sees)", ["row", "enrolment", "state", "detail"],
           [[s["row"], s["enrolment_id"], labels.get(s["state"], s["state"]).format(**s), s["detail"]] for s in result.report])
    if result.kept:
        typer.echo(f"deployment kept in {result.home}: try `dedup queue next --home {result.home} --user adjudicator1`")


@app.command("audit")
@cli_errors
def audit_command(
    case_id: Optional[int] = typer.Option(None, "--case", help="only this case's entries"),
    limit: int = typer.Option(1000, "--limit", min=1, help="at most this many entries"),
    home: Optional[Path] = HomeOption,
    user: Optional[str] = UserOption,
    as_json: bool = JsonOption,
) -> None:
    """The audit log: who did what, when (supervisor, admin)."""
    from dedup.store.audit import entries
    from dedup.store.users import authorize

    with _System(home, user) as s:
        authorize(s.actor, "audit.read")
        rows = entries(s.conn, "case" if case_id is not None else None, case_id, limit)
    if as_json:
        emit_json([{"audit_id": r.audit_id, "at": r.at.isoformat(), "actor": r.actor, "action": r.action,
                    "object_type": r.object_type, "object_id": r.object_id, "detail": r.detail} for r in rows], "-")
        return
    _table("audit", ["#", "when (UTC)", "who", "what", "object", "detail"],
           [[r.audit_id, f"{r.at:%Y-%m-%d %H:%M:%S}", r.actor, r.action, f"{r.object_type} {r.object_id}", json.dumps(r.detail)]
            for r in rows])


# --------------------------------------------------------------------------- section: eval
# Accuracy (DET, FNIR at FPIR, per-group error rates) and threshold calibration.


def _eval_progress(enabled: bool) -> tuple[Any, Any]:
    """A rich progress bar on stderr and the callback that drives it (no-ops when disabled)."""
    if not enabled:
        return None, None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                   TimeRemainingColumn(), console=Console(stderr=True), transient=True)
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    return bar, update


def _parse_sizes(text: Optional[str]) -> Optional[tuple[int, ...]]:
    from dedup.errors import InvalidParameter

    if not text:
        return None
    try:
        return tuple(int(float(s)) for s in text.split(",") if s.strip())
    except ValueError:
        raise InvalidParameter(f"--gallery-sizes: expected comma-separated numbers, got {text!r}") from None


def _labelled_set(inputs: list[Path], home: Optional[Path]) -> Any:
    """Templates Parquet files, or one folder of photos (a subfolder per identity)."""
    from dedup.evaluation.data import load_templates

    if len(inputs) == 1 and inputs[0].is_dir():
        from dedup.evaluation.data import load_photo_folder

        return load_photo_folder(inputs[0], home_dir(home) if home or os.environ.get("DEDUP_HOME") else None)
    return load_templates(inputs)


@app.command("eval")
@cli_errors
def eval_command(
    inputs: list[Path] = typer.Argument(..., help="labelled templates Parquet file(s) (identity and group columns), or one folder of photos with a subfolder per identity"),
    out: Path = typer.Option(Path("eval-report"), "--out", help="folder for report.md and the PNG curves"),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="operating threshold [default: the model's documented operating point, else FMR 1e-4]"),
    gallery_sizes: Optional[str] = typer.Option(None, "--gallery-sizes", help="one-to-many gallery sizes, comma-separated [default: up to the enrolled pool]"),
    impostor_pairs: Optional[int] = typer.Option(None, "--impostor-pairs", help="impostor pairs sampled at most [default: calibration.impostor_pairs]"),
    max_searches: int = typer.Option(10_000, "--max-searches", help="mated and non-mated searches, each at most"),
    seed: int = typer.Option(0, "--seed", help="seed of the pair sampling, the search split and the bootstrap"),
    json_out: Optional[str] = typer.Option(None, "--json", help="write the report as JSON to FILE ('-' for stdout)"),
    home: Optional[Path] = HomeOption,
) -> None:
    """Accuracy on a labelled set: DET, FNMR at FMR, FNIR at FPIR by gallery size, rank-1, per-group FMR/FNMR."""
    from dedup.config import load_settings
    from dedup.evaluation.evaluate import EvalOptions, evaluate
    from dedup.evaluation.report import write_report

    settings = load_settings(home_dir(home) if (home or os.environ.get("DEDUP_HOME")) else None)
    cal = settings.calibration
    options = EvalOptions(
        threshold=threshold, gallery_sizes=_parse_sizes(gallery_sizes),
        max_impostor_pairs=impostor_pairs or cal.impostor_pairs, max_searches=max_searches,
        confidence=cal.confidence, bootstrap=cal.bootstrap, tail_fraction=cal.tail_fraction, seed=seed)
    data = _labelled_set(inputs, home)
    quiet = json_out == "-"
    bar, update = _eval_progress(not quiet and sys.stderr.isatty())
    if bar is not None:
        with bar:
            result = evaluate(data, options, progress=update, keep_outcome=True)
    else:
        result = evaluate(data, options, keep_outcome=True)
    paths = write_report(result, out)
    doc = {**result.to_dict(), "files": {k: str(v) for k, v in paths.items()}}
    if json_out:
        emit_json(doc, json_out)
    if quiet:
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    c = doc["counts"]
    console.print(f"{c['templates']:,} templates, {c['identities']:,} identities; {c['genuine_pairs']:,} genuine and "
                  f"{c['impostor_pairs']:,} impostor pairs; threshold {result.threshold:.4f} ({result.threshold_source})")
    t = Table("FMR target", "threshold", "from", "FNMR", "FNMR CI", title="verification")
    for p in result.operating_points:
        t.add_row(f"{p.fmr_target:g}", f"{p.threshold:.4f}", p.source, f"{p.fnmr:.4g}", f"{p.fnmr_ci[0]:.3g} – {p.fnmr_ci[1]:.3g}")
    console.print(t)
    t = Table("gallery", "rank-1", "FPIR @ thr", "FNIR @ thr",
              *[f"FNIR @ FPIR {x:g}" for x in options.fpir_targets], title="identification (exact searches)")
    for s in result.identification:
        cells = ["–" if p.fnir is None else f"{p.fnir:.4g}" for p in s.fnir_at_fpir]
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
    console.print(f"report: {paths['report']}")


@app.command("calibrate")
@cli_errors
def calibrate_command(
    target_fpir: Optional[float] = typer.Option(None, "--target-fpir", help="FPIR to hold [default: calibration.target_fpir]"),
    gallery_size: Optional[int] = typer.Option(None, "--gallery-size", help="gallery size to calibrate for [default: the deployment's current gallery]"),
    enrolments_per_day: Optional[float] = typer.Option(None, "--enrolments-per-day", help="enrolment rate, for the expected adjudication cases per day"),
    duplicate_rate: float = typer.Option(0.0, "--duplicate-rate", help="fraction of enrolments that are duplicates (caught ones are cases too)"),
    templates: Optional[list[Path]] = typer.Option(None, "--templates", help="labelled templates Parquet file(s) whose impostor pairs (and genuine pairs, for FNIR) calibrate [default: pairs of different accepted identities in the deployment's gallery]"),
    impostor_pairs: Optional[int] = typer.Option(None, "--impostor-pairs", help="impostor pairs sampled at most [default: calibration.impostor_pairs]"),
    seed: int = typer.Option(0, "--seed", help="seed of the pair sampling and the bootstrap"),
    apply: bool = typer.Option(False, "--apply", help="write the threshold to the deployment's dedup.toml, with an audit row (admin)"),
    user: Optional[str] = typer.Option(None, "--user", envvar="DEDUP_USER", help="act as this user for --apply (default: $DEDUP_USER)"),
    json_out: Optional[str] = typer.Option(None, "--json", help="write the result as JSON to FILE ('-' for stdout)"),
    home: Optional[Path] = HomeOption,
) -> None:
    """The threshold that keeps FPIR at a target for a gallery size, its interval, FNIR and daily adjudication load."""
    import numpy as np

    from dedup.config import load_settings
    from dedup.errors import BadInput
    from dedup.evaluation.calibrate import apply_calibration, calibrate, deployment_gallery_size, sample_deployment_impostors
    from dedup.evaluation.data import load_templates
    from dedup.evaluation.evaluate import operating_threshold
    from dedup.evaluation.scores import genuine_scores, impostor_sample
    from dedup.evaluation.tail import fit_tail

    where = home_dir(home)
    settings = load_settings(where if (home or os.environ.get("DEDUP_HOME") or apply or not templates) else None)
    cal = settings.calibration
    target = cal.target_fpir if target_fpir is None else target_fpir
    size_source = "given"
    if gallery_size is None:
        gallery_size = deployment_gallery_size(where)
        if gallery_size is None:
            raise BadInput(f"pass --gallery-size N ({where} is not a deployment with a gallery to read its size from)")
        size_source = "deployment gallery"
    rng = np.random.default_rng(seed)
    quiet = json_out == "-"
    gen = None
    if templates:
        data = load_templates(list(templates))
        model_id = data.model_id
        bar, update = _eval_progress(not quiet and sys.stderr.isatty())
        if bar is not None:
            with bar:
                imp = impostor_sample(data.vectors, data.identity, data.group, data.group_names,
                                      max_pairs=impostor_pairs or cal.impostor_pairs, rng=rng, progress=update)
        else:
            imp = impostor_sample(data.vectors, data.identity, data.group, data.group_names,
                                  max_pairs=impostor_pairs or cal.impostor_pairs, rng=rng)
        gen = genuine_scores(data.vectors, data.identity, data.group, rng=rng)
    else:  # the live gallery: pairs of different accepted identities (no genuine pairs, so no FNIR)
        live = sample_deployment_impostors(where, impostor_pairs or cal.impostor_pairs, rng)
        imp, model_id = live.impostor, live.model_id
    tail = fit_tail(imp, cal.tail_fraction, cal.confidence, cal.bootstrap, rng)
    current = settings.search.threshold or operating_threshold(model_id)
    result = calibrate(tail, gen, target, gallery_size, model_id, imp, enrolments_per_day, duplicate_rate,
                       current, size_source)
    doc: dict[str, Any] = {**result.to_dict(), "impostor_source": "templates" if templates else "deployment gallery",
                           "applied": None}
    if apply:
        done = apply_calibration(where, user, result, tail)
        doc["applied"] = {"settings": str(done.settings_path), "calibration": str(done.calibration_path),
                          "previous_threshold": done.previous_threshold, "by": done.audited_by}
    if json_out:
        emit_json(doc, json_out)
    if quiet:
        return
    from rich.console import Console

    console = Console()
    ci = result.threshold_ci
    console.print(f"threshold [bold]{result.threshold:.4f}[/bold] (CI {ci[0]:.4f} – {ci[1]:.4f}, {result.threshold_source}) "
                  f"holds FPIR {target:g} at gallery size {gallery_size:,} (per-comparison FMR {result.fmr_target:.2e}; "
                  f"{result.impostor_pairs:,} impostor pairs)")
    if result.expected_fnir is not None and result.expected_fnir_ci is not None:
        console.print(f"expected FNIR {result.expected_fnir:.4g} (CI {result.expected_fnir_ci[0]:.3g} – "
                      f"{result.expected_fnir_ci[1]:.3g}, {result.genuine_pairs:,} genuine pairs)")
    if result.adjudications_per_day is not None:
        console.print(f"expected adjudication cases: {result.adjudications_per_day:,.0f} per day at "
                      f"{enrolments_per_day:,.0f} enrolments/day")
    if result.current_threshold is not None and result.current_fpir is not None:
        console.print(f"current threshold {result.current_threshold:.4f} gives FPIR {result.current_fpir:.3g} at this size")
    if doc["applied"]:
        console.print(f"applied: {doc['applied']['settings']} (previous threshold {doc['applied']['previous_threshold']}), audit row by {doc['applied']['by']}")


# --------------------------------------------------------------------------- section: web
# The adjudicators' web app and the centres' HTTP API: serve, web passwords, API tokens.

token_app = typer.Typer(help="Centres' API tokens (admin).", no_args_is_help=True)
app.add_typer(token_app, name="token")


@app.command("serve")
@cli_errors
def serve_command(
    host: Optional[str] = typer.Option(None, "--host", help="address to listen on [default: web.host, 127.0.0.1]"),
    port: Optional[int] = typer.Option(None, "--port", min=0, max=65535, help="TCP port [default: web.port, 8000]"),
    home: Optional[Path] = HomeOption,
) -> None:
    """The adjudicators' web app and the centres' HTTP API (until Ctrl-C)."""
    from dedup.deployment import open_deployment
    from dedup.web.serve import serve

    dep = open_deployment(home_dir(home))
    web = dep.settings.web
    serve(dep, host or web.host, web.port if port is None else port, say=lambda m: typer.echo(m, err=True))


@user_app.command("passwd")
@cli_errors
def user_passwd_command(
    name: str = typer.Argument(..., help="the user whose web password is set"),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="read the password from the first line of stdin"),
    home: Optional[Path] = HomeOption,
    user: Optional[str] = UserOption,
) -> None:
    """Set a web password (admin for anyone; a user for themselves); their web sessions end."""
    from dedup.web.auth import set_password

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt(f"new web password for {name}", hide_input=True, confirmation_prompt=True)
    with _System(home, user) as s:
        set_password(s.conn, s.actor, name, password)
    typer.echo(f"web password of {name} set")


@token_app.command("create")
@cli_errors
def token_create_command(
    centre: str = typer.Argument(..., help="the centre the token submits for and reads"),
    user_name: Optional[str] = typer.Option(None, "--user-name", help="the centre user it acts as [default: the centre's only centre user]"),
    label: str = typer.Option("", "--label", help="a note: which system holds the token"),
    home: Optional[Path] = HomeOption,
    user: Optional[str] = UserOption,
    as_json: bool = JsonOption,
) -> None:
    """Create a centre's API token (admin); it is printed once and stored only hashed."""
    from dedup.web.auth import create_token

    with _System(home, user) as s:
        t = create_token(s.conn, s.actor, centre, user_name, label)
    if as_json:
        emit_json({"token_id": t.token_id, "centre_id": t.centre_id, "user": t.user_name, "token": t.text}, "-")
        return
    typer.echo(f"API token {t.token_id} for centre {t.centre_id} (acts as {t.user_name}); shown once, keep it secret:")
    typer.echo(t.text)


@token_app.command("revoke")
@cli_errors
def token_revoke_command(
    token_id: str = typer.Argument(..., help="the token's id (the 12 hex digits after dk_)"),
    home: Optional[Path] = HomeOption,
    user: Optional[str] = UserOption,
) -> None:
    """Revoke an API token (admin)."""
    from dedup.web.auth import revoke_token

    with _System(home, user) as s:
        revoke_token(s.conn, s.actor, token_id)
    typer.echo(f"token {token_id} revoked")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
