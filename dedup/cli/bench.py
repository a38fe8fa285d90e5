"""``dedup synth`` and ``dedup bench``: synthetic labelled sets and the scale test."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from dedup.cli.common import Home, Json, JsonOut, cli_errors, given_home, print_json, report_json

GROUP = None
app = typer.Typer()


@app.command("synth")
@cli_errors
def synth_command(
    out: Annotated[Path, typer.Option("--out", help="folder for gallery.parquet and probes.parquet")],
    gallery_size: Annotated[int, typer.Option("--gallery-size", "-n", help="gallery templates")] = 10_000,
    queries: Annotated[int, typer.Option("--queries", "-q", help="probes (half of them new captures of gallery people)")] = 1_000,
    profile: Annotated[str, typer.Option("--profile", help="uniform, face-like or arcface-like")] = "face-like",
    dim: Annotated[int | None, typer.Option("--dim", help="template dimension [default: the profile's]")] = None,
    duplicate_rate: Annotated[float, typer.Option("--duplicate-rate", help="share of gallery rows that are planted duplicates")] = 0.01,
    seed: Annotated[int, typer.Option("--seed", help="random seed")] = 0,
    as_json: Json = False,
) -> None:
    """Write a labelled synthetic set (templates schema, identity and group labels) to Parquet."""
    from dedup.bench.synth import SyntheticData, SynthSpec, get_profile, write_parquet

    spec = SynthSpec(get_profile(profile, dim), gallery_size, queries, duplicate_rate, 0.5, seed)
    paths = write_parquet(SyntheticData(spec), out, progress=not as_json and sys.stderr.isatty())
    result = {"profile": spec.profile.name, "dim": spec.profile.dim, "model_id": spec.profile.model_id,
              "gallery_size": gallery_size, "queries": queries, "seed": seed,
              "files": {k: str(v) for k, v in paths.items()}}
    if as_json:
        print_json(result)
    else:
        typer.echo(f"wrote {gallery_size:,} gallery and {queries:,} probe templates ({spec.profile.name}, "
                   f"{spec.profile.dim}-d, synthetic) to {paths['gallery']} and {paths['probes']}")


@app.command("bench")
@cli_errors
def bench_command(
    job: Annotated[Path | None, typer.Option(
        "--job",
        help="a job file (jobs/NAME.toml) with a [bench] table; options given here override it")] = None,
    gallery_size: Annotated[int | None, typer.Option(
        "--gallery-size", "-n",
        help="templates in the synthetic gallery [default: 100000]")] = None,
    queries: Annotated[int | None, typer.Option("--queries", "-q", help="probes to search (half of them mated) [default: 2000]")] = None,
    dim: Annotated[int | None, typer.Option("--dim", help="template dimension [default: the profile's]")] = None,
    profile: Annotated[str | None, typer.Option("--profile", help="uniform, face-like or arcface-like [default: face-like]")] = None,
    threshold: Annotated[float | None, typer.Option(
        "--threshold",
        help="cosine threshold, an explicit setting [default: the threshold in force for the profile's model at "
             "this gallery size: its model card's tail at calibration.target_fpir]")] = None,
    shards: Annotated[int | None, typer.Option("--shards", help="shards to split the gallery into [default: 1]")] = None,
    compare: Annotated[str | None, typer.Option(
        "--compare",
        help="comparison engines, comma-separated: exact (alias flat), faiss-refine, hnsw [default: exact]")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="random seed of the synthetic data [default: 0]")] = None,
    nprobe: Annotated[int | None, typer.Option("--nprobe", help="IVF lists visited per probe [default: search.nprobe]")] = None,
    depth: Annotated[int | None, typer.Option("--depth", help="rows re-ranked exactly per probe [default: search.depth]")] = None,
    nlist: Annotated[int | None, typer.Option("--nlist", help="IVF lists [default: index.nlist, 0 = automatic]")] = None,
    workdir: Annotated[Path | None, typer.Option("--workdir", help="keep the built gallery here instead of a temporary folder")] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers",
        help="also search on Dask with 1, 2, ... WORKERS workers and report probes/s side by side")] = None,
    scheduler: Annotated[str | None, typer.Option(
        "--scheduler",
        help="Dask scheduler address (tcp://HOST:8786) for --workers [default: runtime.scheduler, else a "
             "LocalCluster]")] = None,
    device: Annotated[str | None, typer.Option(
        "--device",
        help="auto, cpu or cuda: adds an exact torch search row on that device and picks the workers' search "
             "(cuda: exact on GPU workers)")] = None,
    as_json: Json = False,
    json_out: JsonOut = None,
    home: Home = None,
) -> None:
    """Scale test: build a synthetic gallery, search it, compare with exact search (and hnswlib)."""
    import dataclasses

    from dedup.bench.gallery import BenchSpec, load_job, run_bench, summary_rows
    from dedup.config import load_settings

    spec = load_job(job) if job else BenchSpec()
    overrides: dict[str, Any] = {
        "gallery_size": gallery_size, "queries": queries, "dim": dim, "profile": profile, "threshold": threshold,
        "shards": shards, "seed": seed, "nprobe": nprobe, "depth": depth, "nlist": nlist,
        "workdir": str(workdir) if workdir else None,
        "workers": workers, "scheduler": scheduler, "device": device,
    }
    if compare is not None:
        overrides["compare"] = tuple(c.strip() for c in compare.split(",") if c.strip())
    spec = dataclasses.replace(spec, **{k: v for k, v in overrides.items() if v is not None})
    settings = load_settings(given_home(home))
    if spec.workers and (spec.scheduler or settings.runtime.scheduler):
        from dedup.cluster import check_scheduler

        check_scheduler(spec.scheduler or settings.runtime.scheduler)
    report = run_bench(spec, settings, progress=not as_json and sys.stderr.isatty())
    for warning in report.get("warnings", []):
        typer.echo(f"warning: {warning}", err=True)
    report_json(report, as_json, json_out)
    if as_json:
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
    exact = report["baselines"].get("exact")
    versus = "; ".join(f"{b['speedup_of_dedup']:.1f}x {name}" for name, b in report["baselines"].items()
                       if b.get("speedup_of_dedup"))
    console.print(f"dedup is {versus} (best of {len(report['passes'])} interleaved passes"
                  + (f"; exact: {exact['method']}, timed on {exact['probes']:,} probes" if exact else "")
                  + f"); capped probes: {report['capped_probes']}; "
                  f"train {report['train_s']:.1f} s, add {report['add_s']:.1f} s; machine: {report['machine']['cpu']}, "
                  f"{report['machine']['cores']} cores")
    tif = report["threshold_in_force"]
    fpir = ("–" if report.get("fpir") is None
            else f"{report['fpir']:.2e} ({report['false_positive_probes']} of {report['nonmated_probes']:,})")
    console.print(f"threshold {tif['value']:.4f} from {tif['source']} ({tif['description']}); FPIR on non-mated probes "
                  f"{fpir}, target {tif['target_fpir']:g}")
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
