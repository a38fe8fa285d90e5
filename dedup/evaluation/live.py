"""The deployment measures itself: impostor tail, per-group FMR and live FNIR from its own data.

**Impostor pairs** (``sample_live``): a random subset of the accepted identities (enrolments
with a UIN; synthetic rows and enrolments in adjudication are left out) is mapped to its
gallery rows and all of its pairs are scored (about ``calibration.impostor_pairs``), as
``dedup calibrate --home`` does. Every pair is of two different UINs, so an impostor pair.
The tail model is refitted on them (``fit_tail``).

**Per demographic group** (``group_fmr``): for each of the manifest's optional fields
(``sex``; ``birth_year`` in bands of ``BAND_YEARS``; ``region``; a missing value is the group
``unknown``), FMR at the threshold over the pairs with both templates in the group (the pairs
across groups on their own row), its Wilson interval, and its ratio to the group with the
lowest FMR (Katz log interval). A group has **too few pairs** when it has fewer than
``MIN_GROUP_PAIRS`` pairs or fewer than the ``3 / FMR`` pairs in which the deployment's overall
FMR would show three false matches; it is listed, marked, and gets no ratio. These fields
are read only here (and kept with the enrolment): matching never sees them.

**Genuine pairs** (``genuine_figures``): adjudication is the ground truth. A case decided
*duplicate* gives its probe and the candidate of the identity it was linked to; a control
pair whose known answer is *duplicate* gives one more pair (a control pair made from a
decided case is the same two photos: counted once). Live FNIR at the threshold in force is
the share of these pairs scoring below it, with a Wilson interval and the pair count; under
``MIN_GENUINE_PAIRS`` pairs the figure is reported as *too few to estimate*. Caveat stated with
it: these pairs were found by the search, so a duplicate the search never proposed is not
among them; live FNIR is a lower bound, and it measures what a raised threshold would now
lose among the duplicates caught so far.

**Refresh** (``refresh_if_due``): ``dedup run`` calls it after a unit enters the gallery; when
the gallery has grown by ``calibration.refresh_every`` (2: at every doubling) since the last
refresh, the impostor figures are recomputed and stored in ``accuracy_refreshes`` (statistics
only) with an ``accuracy.refresh`` audit row. A failed refresh is a warning, never a stop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg

from dedup.errors import BadInput, DedupError, InvalidParameter
from dedup.evaluation.scores import EDGES, ImpostorSample, count_ge_edges, impostor_sample, sample_rows
from dedup.evaluation.stats import rate_ratio_interval, wilson_interval
from dedup.evaluation.tail import TailModel, fit_tail, fpir_from_fmr
from dedup.ids import gallery_name
from dedup.store import accuracy as store
from dedup.store import audit

if TYPE_CHECKING:
    from dedup.operating_point import ThresholdInForce

ATTRIBUTES = ("sex", "birth_year", "region")
BAND_YEARS = 10                 # birth years are grouped in decades: 1970-1979, ...
UNKNOWN = "unknown"
CROSS = "cross-group"
MIN_GROUP_PAIRS = 100
MIN_GENUINE_PAIRS = 30
PLOT_BIN = 0.005                # the stored score histograms' bin width (statistics for the plots)
FPIR_SIZES = tuple(int(10 ** e) for e in np.arange(3, 9.01, 0.5))   # 1e3 .. 1e9


@dataclass
class LiveSample:
    """Impostor pairs of a deployment's accepted identities (in memory only: templates inside)."""

    impostor: ImpostorSample
    enrolment_pks: np.ndarray           # the paired identities, index-aligned with the sample's input rows
    vectors: np.ndarray                 # float32 (m, dim) exact gallery vectors of those rows
    demographics: dict[str, list[str]]  # attribute -> group name of each paired row
    model_id: str
    gallery_size: int
    accepted: int


@dataclass
class GroupFmr:
    """FMR of one demographic group (or the cross-group pairs) at a threshold."""

    attribute: str
    group: str
    pairs: int
    false_matches: int
    fmr: float | None
    fmr_ci: tuple[float, float] | None
    ratio_to_best: float | None
    ratio_ci: tuple[float, float] | None
    enough_pairs: bool
    note: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def birth_year_band(year: int | None) -> str:
    """The band of a birth year (``1970-1979``), or ``unknown``."""
    if year is None:
        return UNKNOWN
    lo = (int(year) // BAND_YEARS) * BAND_YEARS
    return f"{lo}-{lo + BAND_YEARS - 1}"


def _group_of(attribute: str, row: store.AcceptedIdentity) -> str:
    if attribute == "birth_year":
        return birth_year_band(row.birth_year)
    value = getattr(row, attribute)
    return UNKNOWN if value is None or str(value).strip() == "" else str(value)


# ---------------------------------------------------------------- impostor pairs


def sample_live(conn: psycopg.Connection[Any], gallery: Any, n_pairs: int, rng: np.random.Generator,
                tail_keep: int = 200_000) -> LiveSample:
    """All pairs of a random subset of the accepted identities that have a gallery template."""
    accepted = store.accepted_identities(conn)
    if len(accepted) < 2:
        raise BadInput(f"{len(accepted)} accepted identities; impostor pairs need at least 2")
    chosen = [accepted[i] for i in sample_rows(len(accepted), n_pairs, rng)[0].tolist()]
    rows = gallery.find_enrolments([gallery_name(a.enrolment_pk) for a in chosen])
    present = [a for a in chosen if gallery_name(a.enrolment_pk) in rows]   # decided, not added yet: skipped
    if len(present) < 2:
        raise BadInput(f"only {len(present)} accepted identities have a template in the gallery; "
                       "impostor pairs need at least 2")
    vectors = gallery.exact_vectors(np.array([rows[gallery_name(a.enrolment_pk)] for a in present], dtype=np.int64))
    _, codes = np.unique(np.array([a.uin for a in present]), return_inverse=True)
    sample = impostor_sample(vectors, codes, np.zeros(len(present), dtype=np.int16), ["all"], max_pairs=n_pairs, rng=rng,
                            tail_keep=tail_keep)
    demographics = {attr: [_group_of(attr, a) for a in present] for attr in ATTRIBUTES}
    return LiveSample(sample, np.array([a.enrolment_pk for a in present], dtype=np.int64), vectors, demographics,
                      gallery.model_id, len(gallery), len(accepted))


def _pairs_ge_by_group(sample: LiveSample, codes: np.ndarray, n_groups: int, threshold: float) -> np.ndarray:
    """Impostor pairs scoring >= threshold per group row (within group g; the last row: across)."""
    imp = sample.impostor
    out = np.zeros(n_groups + 1, dtype=np.int64)
    if threshold >= imp.tail_cut:          # every such pair was kept exactly, with its two rows
        keep = imp.tail_scores.astype(np.float64) >= threshold
        gi = codes[imp.rows[imp.tail_i[keep]]]
        gj = codes[imp.rows[imp.tail_j[keep]]]
        np.add.at(out, np.where(gi == gj, gi, n_groups), 1)
        return out
    # Below the kept tail: score the same pairs again, block by block, and count by group.
    x = np.ascontiguousarray(sample.vectors[imp.rows], dtype=np.float32)
    grp, ident = codes[imp.rows], imp.row_identity
    m = x.shape[0]
    step = max(1, 4_000_000 // max(m, 1))
    for a in range(0, m, step):
        b = min(a + step, m)
        block = x[a:b] @ x.T
        bi, bj = np.nonzero(block.astype(np.float64) >= threshold)
        gi_, gj_ = bi + a, bj
        keep = (gj_ > gi_) & (ident[gi_] != ident[gj_])
        gi, gj = grp[gi_[keep]], grp[gj_[keep]]
        np.add.at(out, np.where(gi == gj, gi, n_groups), 1)
    return out


def group_fmr(sample: LiveSample, threshold: float, confidence: float = 0.95) -> dict[str, list[GroupFmr]]:
    """Per attribute, FMR of every group at ``threshold`` (see the module docstring)."""
    imp = sample.impostor
    total = imp.n_pairs
    overall = imp.count_ge(threshold)
    fmr_all = overall / total if total else 0.0
    needed = max(MIN_GROUP_PAIRS, math.ceil(3 / fmr_all)) if fmr_all > 0 else None
    out: dict[str, list[GroupFmr]] = {}
    for attr in ATTRIBUTES:
        names = sorted(set(sample.demographics[attr]))
        index = {n: i for i, n in enumerate(names)}
        codes = np.array([index[v] for v in sample.demographics[attr]], dtype=np.int64)
        members = np.bincount(codes, minlength=len(names)).astype(np.int64)
        within = members * (members - 1) // 2     # accepted identities: every pair is of two different UINs
        pairs = np.append(within, total - within.sum())
        fm = _pairs_ge_by_group(sample, codes, len(names), threshold)
        rows: list[GroupFmr] = []
        for g, name in enumerate([*names, CROSS]):
            n, k = int(pairs[g]), int(fm[g])
            lo, hi = wilson_interval(k, n, confidence)
            enough = needed is not None and n >= needed
            if n == 0:
                note = "no pairs"
            elif needed is None:
                note = (f"too few pairs: no false match at {threshold:.4f} among all {total:,} sampled pairs, "
                        f"so FMR < about {3 / max(total, 1):.1e} overall and no group can be told apart")
            elif not enough:
                note = f"too few pairs: {n:,} (at the overall FMR {fmr_all:.1e}, {needed:,} show about 3 false matches)"
            else:
                note = ""
            rows.append(GroupFmr(attr, name, n, k, k / n if n else None,
                                 (float(lo), float(hi)) if n else None, None, None, enough, note))
        ranked = [r for r in rows if r.enough_pairs and r.group != CROSS]
        if ranked:
            best = min(ranked, key=lambda r: (r.fmr or 0.0, -r.pairs))
            for r in ranked:
                ratio, rlo, rhi = rate_ratio_interval(r.false_matches, r.pairs, best.false_matches, best.pairs, confidence)
                if math.isfinite(ratio):
                    r.ratio_to_best, r.ratio_ci = float(ratio), (float(rlo), float(rhi))
        out[attr] = rows
    return out


def _histogram(counts: np.ndarray, lo: float = -1.0) -> dict[str, Any]:
    """A coarse histogram (``PLOT_BIN`` wide bins) of 1e-4-binned counts, trimmed to where there are any."""
    per = int(round(PLOT_BIN / (EDGES[1] - EDGES[0])))
    n = counts.shape[0] // per * per
    coarse = counts[:n].reshape(-1, per).sum(axis=1)
    nz = np.flatnonzero(coarse)
    if nz.size == 0:
        return {"lo": lo, "width": PLOT_BIN, "counts": []}
    return {"lo": round(lo + int(nz[0]) * PLOT_BIN, 6), "width": PLOT_BIN,
            "counts": coarse[nz[0]: nz[-1] + 1].astype(int).tolist()}


def impostor_figures(sample: LiveSample, threshold: float, settings: Any, rng: np.random.Generator) -> dict[str, Any]:
    """What a refresh stores: pair counts, FMR at the threshold, the refitted tail, groups, plots."""
    cal = settings.calibration
    imp = sample.impostor
    n = imp.n_pairs
    k = imp.count_ge(threshold)
    lo, hi = wilson_interval(k, n, cal.confidence)
    tail: TailModel | None = None
    tail_note = ""
    try:
        tail = fit_tail(imp, cal.tail_fraction, cal.confidence, cal.bootstrap, rng)
    except InvalidParameter as exc:
        tail_note = f"no tail model yet: {exc}"
    ge = count_ge_edges(imp.total)
    start = int(np.flatnonzero(imp.total)[0]) if n else 0
    grid = np.arange(start, ge.size - 1, int(round(PLOT_BIN / (EDGES[1] - EDGES[0]))))
    survival = [[round(float(EDGES[i]), 4), float(ge[i] / n)] for i in grid if ge[i] > 0]
    return {
        "impostor": {
            "pairs": n, "identities": int(imp.rows.size), "exhaustive": bool(imp.exhaustive),
            "false_matches": k, "fmr_at_threshold": k / n if n else None,
            "fmr_ci": [float(lo), float(hi)] if n else None, "threshold": threshold,
            "histogram": _histogram(imp.total), "survival": survival,
        },
        "tail": tail.to_dict() if tail is not None else None,
        "tail_note": tail_note,
        "groups": {a: [r.to_dict() for r in rows] for a, rows in group_fmr(sample, threshold, cal.confidence).items()},
        "confidence": cal.confidence,
    }


# ---------------------------------------------------------------- genuine pairs


def genuine_pairs(conn: psycopg.Connection[Any]) -> list[store.GenuinePair]:
    """Decided duplicates, and the duplicate control pairs not made from one of those cases."""
    decided = store.decided_duplicate_pairs(conn)
    cases = {p.ref for p in decided}
    controls = [p for p in store.duplicate_control_pairs(conn) if p.source_case not in cases]
    return decided + controls


def genuine_figures(conn: psycopg.Connection[Any], threshold: float, confidence: float = 0.95) -> dict[str, Any]:
    """Live FNIR at ``threshold`` from adjudication's genuine pairs (see the module docstring)."""
    pairs = genuine_pairs(conn)
    scores = np.array([p.score for p in pairs], dtype=np.float64)
    n = int(scores.size)
    misses = int(np.count_nonzero(scores < threshold))
    lo, hi = wilson_interval(misses, n, confidence)
    enough = n >= MIN_GENUINE_PAIRS
    from dedup.evaluation.scores import bin_index

    hist = np.bincount(bin_index(scores), minlength=EDGES.size - 1) if n else np.zeros(EDGES.size - 1, dtype=np.int64)
    return {
        "pairs": n, "misses": misses, "threshold": threshold,
        "fnir": misses / n if n else None, "fnir_ci": [float(lo), float(hi)] if n else None,
        "enough_pairs": enough,
        "note": ("" if enough else
                 f"too few to estimate: {n} genuine pair(s) from adjudication, at least {MIN_GENUINE_PAIRS} are needed"),
        "caveat": ("pairs the search found and adjudicators confirmed: a duplicate never proposed is not among them, "
                   "so this is a lower bound on FNIR"),
        "sources": {s: sum(1 for p in pairs if p.source == s) for s in ("decided_duplicate", "control_pair")},
        "histogram": _histogram(hist),
        "confidence": confidence,
    }


# ---------------------------------------------------------------- refresh and report


def refresh(dep: Any, conn: psycopg.Connection[Any], gallery: Any, threshold: float, made_by: str,
            rng: np.random.Generator | None = None) -> tuple[int, LiveSample]:
    """Sample, refit and store the impostor figures now; the refresh id and the sample."""
    rng = np.random.default_rng(len(gallery)) if rng is None else rng
    sample = sample_live(conn, gallery, dep.settings.calibration.impostor_pairs, rng)
    figures = impostor_figures(sample, threshold, dep.settings, rng)
    with conn.transaction():
        rid = store.insert_refresh(conn, made_by, sample.model_id, sample.gallery_size, sample.accepted,
                                   sample.impostor.n_pairs, threshold, figures)
        audit.record(conn, made_by, "accuracy.refresh", "accuracy", rid, {
            "gallery_size": sample.gallery_size, "accepted": sample.accepted, "impostor_pairs": sample.impostor.n_pairs,
            "threshold": threshold, "fmr_at_threshold": figures["impostor"]["fmr_at_threshold"],
            "tail": figures["tail"] is not None})
    return rid, sample


def refresh_due(conn: psycopg.Connection[Any], gallery_size: int, every: float) -> bool:
    """Whether the gallery has grown by the factor ``every`` since the last refresh (always before the first)."""
    if every <= 0:
        return False
    last = store.latest_refresh(conn)
    return last is None or gallery_size >= last.gallery_size * every


def refresh_if_due(dep: Any, conn: psycopg.Connection[Any], gallery: Any, threshold: float, made_by: str,
                   warnings: list[str], progress: Callable[[str], None]) -> int | None:
    """``dedup run``'s hook after a unit enters the gallery: refresh when due; never raises a domain error."""
    try:
        if not refresh_due(conn, len(gallery), dep.settings.calibration.refresh_every):
            return None
        if len(store.accepted_identities(conn)) < 2:
            return None          # nothing to pair yet: try again after the next unit
        rid, sample = refresh(dep, conn, gallery, threshold, made_by)
    except DedupError as exc:
        warnings.append(f"accuracy figures not refreshed: {exc}")
        progress(f"warning: accuracy figures not refreshed: {exc}")
        return None
    progress(f"accuracy: impostor tail refreshed from {sample.impostor.n_pairs:,} pairs of "
             f"{sample.impostor.rows.size:,} accepted identities (gallery {sample.gallery_size:,})")
    return rid


def fpir_curve(tail: TailModel, threshold: float, sizes: list[int]) -> list[dict[str, float | None]]:
    """FPIR against gallery size at ``threshold`` from a tail model, with its bootstrap interval
    (None where the model has too few bootstrap replicates for one)."""
    fmr = float(tail.fmr(threshold))
    lo, hi = tail.fmr_interval(threshold)
    out: list[dict[str, float | None]] = []
    for n in sizes:
        out.append({"n": int(n), "fpir": float(fpir_from_fmr(fmr, n)),
                    "lo": float(fpir_from_fmr(lo, n)) if math.isfinite(lo) else None,
                    "hi": float(fpir_from_fmr(hi, n)) if math.isfinite(hi) else None})
    return out


def accuracy_report(dep: Any, conn: psycopg.Connection[Any], threshold: float, threshold_source: str,
                    gallery_size: int) -> dict[str, Any]:
    """Everything the Accuracy page and ``dedup accuracy --json`` show (statistics only)."""
    cal = dep.settings.calibration
    last = store.latest_refresh(conn)
    report: dict[str, Any] = {
        "gallery_size": gallery_size,
        "threshold": {"value": threshold, "source": threshold_source},
        "target_fpir": cal.target_fpir,
        "refresh_every": cal.refresh_every,
        "genuine": genuine_figures(conn, threshold, cal.confidence),
        "refresh": None, "impostor": None, "tail": None, "groups": None, "fpir": None, "notes": [],
        "history": [{**h, "at": h["at"].isoformat()} for h in store.refresh_history(conn)],
    }
    if last is None:
        report["notes"].append("no impostor figures yet: `dedup run` measures them once the gallery has accepted "
                               "identities (or run `dedup accuracy --refresh`)")
        return report
    fig = last.figures
    report["refresh"] = {"refresh_id": last.refresh_id, "at": last.at.isoformat(), "made_by": last.made_by,
                         "model_id": last.model_id, "gallery_size": last.gallery_size, "accepted": last.accepted,
                         "impostor_pairs": last.impostor_pairs, "threshold": last.threshold,
                         "next_at_gallery_size": math.ceil(last.gallery_size * cal.refresh_every) if cal.refresh_every > 0 else None}
    report["impostor"] = fig["impostor"]
    report["groups"] = fig["groups"]
    if abs(last.threshold - threshold) > 1e-9:
        report["notes"].append(f"impostor and group figures were measured at threshold {last.threshold:.4f} "
                               f"(the threshold then); the threshold in force is now {threshold:.4f}")
    if fig.get("tail"):
        tail = TailModel.from_dict(fig["tail"])
        sizes = sorted(set(FPIR_SIZES) | {max(int(gallery_size), 1)})
        at_n = fpir_curve(tail, threshold, [max(int(gallery_size), 1)])[0]
        report["tail"] = {"u": tail.u, "p_u": tail.p_u, "xi": tail.gpd.xi, "sigma": tail.gpd.sigma,
                          "pairs": tail.n_pairs, "exceedances": tail.n_exceed,
                          "fmr_at_threshold": float(tail.fmr(threshold)),
                          "model": [[round(float(t), 4), float(tail.fmr(t))]
                                    for t in np.arange(tail.u, min(tail.u + 0.2, 1.0), PLOT_BIN)]}
        report["fpir"] = {"at_gallery_size": at_n, "curve": fpir_curve(tail, threshold, sizes)}
    else:
        report["notes"].append(fig.get("tail_note") or "no tail model in the last refresh")
    return report


def in_force_now(dep: Any, conn: psycopg.Connection[Any], model_id: str, gallery_size: int) -> ThresholdInForce:
    """The threshold in force at the gallery's size, as ``dedup run`` judges the next unit: the
    one policy (``dedup.operating_point``), never below the last unit's on the same basis."""
    from dedup.operating_point import ratchet, threshold_in_force
    from dedup.store.runs import last_threshold

    got = threshold_in_force(model_id, gallery_size, dep.settings, home=dep.home)
    last = last_threshold(conn, model_id)
    return ratchet(got, None if last is None else last.value, None if last is None else last.basis)


def threshold_now(dep: Any, conn: psycopg.Connection[Any], model_id: str, gallery_size: int) -> tuple[float, str]:
    """``(value, source)`` of :func:`in_force_now`."""
    got = in_force_now(dep, conn, model_id, gallery_size)
    return float(got.value), str(got.source)


def deployment_report(dep: Any, conn: psycopg.Connection[Any], actor: Any, refresh_now: bool = False) -> dict[str, Any]:
    """The accuracy report of a deployment for ``actor`` (supervisor or admin); with
    ``refresh_now`` (admin) a new refresh is made first."""
    from dedup.face.model import ModelSpec, model_id_for
    from dedup.index.gallery import Gallery
    from dedup.store.users import authorize

    authorize(actor, "supervise.stats")
    gallery = Gallery.open(dep.gallery, dep.settings.index) if (dep.gallery / "CURRENT").exists() else None
    size = len(gallery) if gallery is not None else 0
    model_id = gallery.model_id if gallery is not None else model_id_for(ModelSpec.from_settings(dep.settings.face))
    threshold, source = threshold_now(dep, conn, model_id, size)
    if refresh_now:
        authorize(actor, "threshold.calibrate")
        if gallery is None:
            raise BadInput("the deployment has no gallery yet (`dedup run` makes it); nothing to measure")
        refresh(dep, conn, gallery, threshold, actor.name)
    report = accuracy_report(dep, conn, threshold, source, size)
    report["model_id"] = model_id
    return report
