"""The human-readable evaluation report (Markdown) and its PNG curves.

Statistics only: no template, no identity label, no photo path appears in a report.
matplotlib is imported here only (it is a plotting dependency, not a core one).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from dedup.errors import InsufficientResources
from dedup.evaluation.evaluate import EvalResult
from dedup.evaluation.scores import BIN, EDGES
from dedup.fsutil import atomic_path, atomic_write_text


def write_report(result: EvalResult, out_dir: Path) -> dict[str, Path]:
    """Write ``report.md``, ``scores.png``, ``det.png``, ``fnir_fpir.png`` and ``groups.png``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # matplotlib warns about empty or non-positive data on log axes (a small set has
        # curves with nothing to draw); the report says what is missing, the console stays quiet.
        warnings.simplefilter("ignore", UserWarning)
        paths = write_plots(result, out_dir)
    md = out_dir / "report.md"
    atomic_write_text(md, render_markdown(result, {k: p.name for k, p in paths.items()}))
    return {"report": md, **paths}


def _pyplot():  # type: ignore[no-untyped-def]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InsufficientResources("plots need matplotlib: pip install 'dedup[bench]' (or matplotlib)") from None
    return plt


def write_plots(result: EvalResult, out_dir: Path) -> dict[str, Path]:
    plt = _pyplot()
    paths: dict[str, Path] = {}

    # Score distributions (densities; impostors from the histogram, genuine from exact scores).
    fig, ax = plt.subplots(figsize=(7, 4))
    coarse = 50                                         # 50 fine bins = 0.005 wide
    counts = result.impostor.total
    n_imp = max(int(counts.sum()), 1)
    k = (counts.size // coarse) * coarse
    c = counts[:k].reshape(-1, coarse).sum(axis=1)
    mids = EDGES[:k:coarse] + coarse * BIN / 2
    nz = np.flatnonzero(c)
    if nz.size:
        sl = slice(nz[0], nz[-1] + 1)
        ax.plot(mids[sl], c[sl] / n_imp / (coarse * BIN), label=f"impostor ({n_imp:,} pairs)")
    g = result.genuine.scores
    if g.size:
        hist, edges = np.histogram(g, bins=60)
        ax.plot((edges[:-1] + edges[1:]) / 2, hist / g.size / np.diff(edges), label=f"genuine ({g.size:,} pairs)")
    ax.axvline(result.threshold, color="k", ls="--", lw=1, label=f"threshold {result.threshold:.4f}")
    ax.set_xlabel("cosine score")
    ax.set_ylabel("density")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title(f"Score distributions: {result.model_id}")
    paths["scores"] = _save(fig, out_dir / "scores.png", plt)

    # DET (log-log).
    fig, ax = plt.subplots(figsize=(6, 5))
    det = result.det
    ok = (det.fmr > 0) & (det.fnmr > 0)
    plotted = bool(ok.any())
    ax.plot(det.fmr[ok], det.fnmr[ok], label="empirical")
    if result.tail is not None:
        ts = np.linspace(result.tail.u, min(1.0, result.tail.u + 0.3), 400)
        fm = result.tail.fmr(ts)
        g_sorted = np.sort(g.astype(np.float64))
        fn = np.searchsorted(g_sorted, ts, side="left") / max(g.size, 1)
        keep = (fm > 1e-13) & (fn > 0)                   # down to 1e-12: a billion-row gallery
        plotted = plotted or bool(keep.any())
        ax.plot(fm[keep], fn[keep], ls=":", label="tail model (FMR beyond the sample)")
    for p in result.operating_points:
        if p.fnmr:
            ax.plot([p.fmr_target], [p.fnmr], "o", ms=4)
    _log_axes(ax, plotted)
    ax.set_xlabel("FMR")
    ax.set_ylabel("FNMR")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("DET")
    paths["det"] = _save(fig, out_dir / "det.png", plt)

    # One-to-many: FNIR vs FPIR per gallery size.
    fig, ax = plt.subplots(figsize=(6, 5))
    outcome = result.outcome
    plotted = False
    if outcome is not None:
        for s, size in enumerate(outcome.sizes):
            m = outcome.mated(s)
            nm = np.sort(outcome.nonmate[s][~m].astype(np.float64))
            ms = np.sort(outcome.mate[s][m].astype(np.float64))
            if nm.size == 0 or ms.size == 0:
                continue
            ts = np.unique(nm)
            fpir = 1.0 - np.searchsorted(nm, ts, side="left") / nm.size
            fnir = np.searchsorted(ms, ts, side="left") / ms.size
            keep = (fpir > 0) & (fnir > 0)
            plotted = plotted or bool(keep.any())
            ax.plot(fpir[keep], fnir[keep], label=f"N = {size:,}")
    for target in result.options.fpir_targets:
        ax.axvline(target, color="grey", ls=":", lw=1)
    _log_axes(ax, plotted)
    ax.set_xlabel("FPIR")
    ax.set_ylabel("FNIR")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("One-to-many (exact searches)")
    paths["fnir_fpir"] = _save(fig, out_dir / "fnir_fpir.png", plt)

    # Groups: FMR and FNMR at the threshold with intervals.
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, what in zip(axes, ("fmr", "fnmr")):
        rows = [r for r in result.groups if getattr(r, what) is not None]
        y = np.arange(len(rows))
        vals = np.array([getattr(r, what) for r in rows], dtype=float)
        cis = np.array([getattr(r, what + "_ci") for r in rows], dtype=float).reshape(-1, 2)
        ax.errorbar(vals, y, xerr=[vals - cis[:, 0], cis[:, 1] - vals], fmt="o", capsize=3)
        ax.set_yticks(y, [r.group for r in rows])
        ax.set_xlabel(f"{what.upper()} at {result.threshold:.4f}")
        if vals.size and np.all(vals > 0):
            ax.set_xscale("log")
        ax.grid(True, alpha=0.3)
    fig.suptitle("Per group")
    paths["groups"] = _save(fig, out_dir / "groups.png", plt)
    return paths


def _log_axes(ax, plotted: bool) -> None:  # type: ignore[no-untyped-def]
    """Log-log axes when there is a positive curve to show; else a note (no error is 0 on a log axis)."""
    if plotted:
        ax.set_xscale("log")
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no errors to plot on log axes (too few pairs or searches)", ha="center",
                transform=ax.transAxes, fontsize=9)


def _save(fig, path: Path, plt) -> Path:  # type: ignore[no-untyped-def]
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def _f(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}" if abs(x) >= 1e-3 else f"{x:.{digits - 1}e}"


def _ci(ci: tuple[float, float] | None) -> str:
    return "–" if ci is None else f"{_f(ci[0])} – {_f(ci[1])}"


def render_markdown(r: EvalResult, images: dict[str, str]) -> str:
    c = r.counts
    imp, gen = r.impostor, r.genuine
    conf = f"{r.options.confidence:.0%}"
    lines = [
        f"# Accuracy report: `{r.model_id}`",
        "",
        f"{c['templates']:,} templates of {c['identities']:,} identities ({c['identities_with_pairs']:,} with two or more"
        f" captures){' — synthetic data' if r.synthetic else ''}. Genuine pairs: {gen.n_pairs:,}. Impostor pairs:"
        f" {imp.n_pairs:,} ({'every pair' if imp.exhaustive else f'all pairs of {imp.rows.size:,} randomly chosen templates'}).",
        "",
        f"Intervals: {conf} Wilson score intervals for error rates (binomial counts; impostor pairs that share a "
        "template are not independent, so FMR intervals are optimistic), Katz log intervals for ratios, and a "
        "percentile bootstrap over templates for the tail model.",
        "",
        f"Operating threshold: **{r.threshold:.4f}** ({r.threshold_source}).",
        "",
        "## Score distributions",
        "",
        f"![scores]({images['scores']})",
        "",
        "## Verification (one-to-one)",
        "",
        f"![DET]({images['det']})",
        "",
        f"At the threshold: FMR {_f(r.overall_fmr)} ({_ci(r.overall_fmr_ci)}), FNMR {_f(r.overall_fnmr)} "
        f"({_ci(r.overall_fnmr_ci)}).",
        "",
        "| FMR target | threshold | from | FNMR | FNMR CI | false non-matches / genuine pairs |",
        "|---:|---:|---|---:|---|---:|",
    ]
    for p in r.operating_points:
        if p.threshold is None:
            lines.append(f"| {p.fmr_target:g} | – | {p.note} | – | – | – |")
            continue
        lines.append(f"| {p.fmr_target:g} | {p.threshold:.4f} | {p.source}: {p.note} | {_f(p.fnmr)} | {_ci(p.fnmr_ci)} | "
                     f"{p.false_non_matches:,} / {p.genuine_pairs:,} |")
    lines += ["", "A target is read from the sampled impostor pairs when at least 10 of them lie above its threshold; "
              "beyond, from the tail model; with neither, it is not estimable from the pairs there are."]
    if r.tail is not None:
        t = r.tail
        lines += ["", f"Tail model: generalized Pareto above u = {t.u:.4f} (FMR(u) = {_f(t.p_u)}, {t.n_exceed:,} "
                  f"exceedances): xi = {t.gpd.xi:.3f}, sigma = {t.gpd.sigma:.4g}"
                  + (f", upper end {t.u + t.gpd.upper_end:.4f}" if t.gpd.xi < 0 else "") + "."]
    elif r.tail_note:
        lines += ["", r.tail_note]
    lines += ["", "## Identification (one-to-many, exact searches)", "",
              f"![FNIR vs FPIR]({images['fnir_fpir']})", "",
              "Galleries are nested: one capture of each identity enrolled in random order; searches are a second "
              "capture (mated) or a person not enrolled (non-mated). FNIR counts a mated search as missed when its "
              "mate scores below the threshold.", "",
              "| gallery | mated / non-mated searches | rank-1 | FPIR at threshold (measured) | FPIR (tail model) "
              "| FNIR at threshold | " + " | ".join(f"FNIR @ FPIR {t:g}" for t in r.options.fpir_targets) + " |",
              "|---:|---:|---:|---:|---:|---:|" + "---:|" * len(r.options.fpir_targets)]
    for s in r.identification:
        cells = []
        for ip in s.fnir_at_fpir:
            cells.append((ip.note or "–") if ip.fnir is None or ip.threshold is None
                         else f"{_f(ip.fnir)} ({_ci(ip.fnir_ci)}) at {ip.threshold:.4f}")
        lines.append(f"| {s.gallery_size:,} | {s.mated_searches:,} / {s.nonmated_searches:,} | {_f(s.rank1)} | "
                     f"{_f(s.fpir_at_threshold)} ({_ci(s.fpir_at_threshold_ci)}) | {_f(s.fpir_model_at_threshold)} | "
                     f"{_f(s.fnir_at_threshold)} ({_ci(s.fnir_at_threshold_ci)}) | " + " | ".join(cells) + " |")
    lines += ["", "FPIR (tail model) is 1 − (1 − FMR(t))^N: a model that assumes the N comparisons of a search "
              "independent; it is accurate when FPIR is small and overstates FPIR when it is large.",
              "", f"## Per group at threshold {r.threshold:.4f}", "", f"![groups]({images['groups']})", "",
              "FMR counts impostor pairs whose two templates are both in the group; cross-group pairs have their own "
              "row. Ratios are to the group with the lowest rate.", "",
              "| group | impostor pairs | FMR | FMR CI | FMR ratio (CI) | genuine pairs | FNMR | FNMR CI | FNMR ratio (CI) |",
              "|---|---:|---:|---|---|---:|---:|---|---|"]
    for g in r.groups:
        ratio_fmr = "–" if g.fmr_ratio is None else f"{g.fmr_ratio:.2f} ({_ci(g.fmr_ratio_ci)})"
        ratio_fnmr = "–" if g.fnmr_ratio is None else f"{g.fnmr_ratio:.2f} ({_ci(g.fnmr_ratio_ci)})"
        lines.append(f"| {g.group} | {g.impostor_pairs:,} | {_f(g.fmr)} | {_ci(g.fmr_ci)} | {ratio_fmr} | "
                     f"{g.genuine_pairs:,} | {_f(g.fnmr)} | {_ci(g.fnmr_ci)} | {ratio_fnmr} |")
    lines.append("")
    return "\n".join(lines)
