"""``dedup calibrate``: the threshold that holds a target FPIR at a gallery size.

FPIR(N, t) = 1 - (1 - FMR(t)) ** N (see ``tail``), so the threshold for a target FPIR at N is
the threshold whose FMR is ``1 - (1 - FPIR) ** (1 / N)`` ~ FPIR / N: read from the sampled
impostor scores where the sample reaches that far, else from the fitted tail. Its interval is
the template bootstrap's. The expected FNIR at that threshold is the genuine-pair FNMR (a
mated search misses when its mate scores below the threshold; rank does not enter).

Expected adjudication cases per day at R enrolments/day, a fraction d of them duplicates:
``R * (1 - d) * FPIR + R * d * (1 - FNIR)`` (false-positive cases plus caught duplicates).
Reference: Aadhaar (UIDAI) reported FPIR 0.057% with fingerprints and irises fused, about 570
manual reviews a day at 1M enrolments a day.

``--apply`` keeps the fitted model in the deployment's ``calibration.json`` and its own model
card (``dedup.modelcards``); from then on ``dedup.operating_point.threshold_in_force`` evaluates
that tail at the gallery's size for every unit ``dedup run`` decides, so the threshold rises
as the gallery grows. On a live deployment the impostor scores come from the gallery itself
(``sample_deployment_impostors``): pairs of different accepted identities.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from dedup.errors import BadInput, ConfigError, InvalidParameter
from dedup.evaluation.scores import GenuineScores, ImpostorSample, impostor_sample, sample_rows
from dedup.evaluation.stats import wilson_interval
from dedup.evaluation.tail import TailModel, fmr_for_fpir
from dedup.fsutil import atomic_write_text, existing_mode
from dedup.ids import gallery_name
from dedup.modelcards import GenuineSummary, ModelCard, Provenance, load_card, save_deployment_card
from dedup.modelcards.calibration_file import save_calibration
from dedup.operating_point import fpir_at, threshold_for_target


@dataclass
class Calibration:
    """The calibrated threshold and what it implies."""

    model_id: str
    target_fpir: float
    gallery_size: int
    gallery_size_source: str
    fmr_target: float
    threshold: float
    threshold_ci: tuple[float, float]
    threshold_source: str          # "empirical" (sampled scores reach it) or "tail-model"
    fpir_ci: tuple[float, float]   # FPIR at ``threshold`` over the bootstrap replicates
    expected_fnir: float | None
    expected_fnir_ci: tuple[float, float] | None
    genuine_pairs: int
    impostor_pairs: int
    templates_paired: int
    enrolments_per_day: float | None
    duplicate_rate: float
    adjudications_per_day: float | None
    adjudications_per_day_ci: tuple[float, float] | None
    current_threshold: float | None
    current_fpir: float | None
    current_fpir_ci: tuple[float, float] | None
    confidence: float
    model_note: str = ("FPIR(N, t) = 1 - (1 - FMR(t))^N with FMR(t) from sampled impostor pairs, "
                       "a generalized Pareto tail beyond the sample; intervals: percentile bootstrap over templates")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample_impostor_scores_from_gallery(vectors: np.ndarray, identities: np.ndarray, n_pairs: int,
                                        rng: np.random.Generator, groups: np.ndarray | None = None,
                                        group_names: list[str] | None = None) -> ImpostorSample:
    """Impostor scores of a live gallery: pairs of different accepted identities.

    ``vectors`` may be a memory map of the gallery's exact vectors (only the sampled rows are
    read); ``identities`` the identity (UIN) of each row, so that two captures of one person
    never count as impostors. A random subset of rows is taken and all of its pairs scored
    (about ``n_pairs`` of them), which the tail model's bootstrap over templates expects.
    """
    identities = np.asarray(identities)
    if identities.shape[0] != vectors.shape[0]:
        raise InvalidParameter("one identity per gallery row is needed")
    _, codes = np.unique(identities, return_inverse=True)
    if groups is None:
        groups, group_names = np.zeros(vectors.shape[0], dtype=np.int16), ["all"]
    return impostor_sample(vectors, codes, groups, group_names or ["all"], max_pairs=n_pairs, rng=rng)


@dataclass
class DeploymentSample:
    """Impostor scores sampled from a deployment's own gallery."""

    impostor: ImpostorSample
    model_id: str
    gallery_size: int       # every gallery row (synthetic and pending ones too): what a search is up against
    accepted: int           # accepted identities with a UIN that the sample was drawn from
    dim: int = 0


def sample_deployment_impostors(home: Path, n_pairs: int, rng: np.random.Generator) -> DeploymentSample:
    """Impostor scores of a live deployment: random pairs of different accepted identities.

    The accepted enrolments (state ``accepted``, with a UIN) come from PostgreSQL; a random
    subset large enough for about ``n_pairs`` pairs is mapped to gallery rows by the pipeline's
    enrolment ids (``e<enrolment_pk>``), and only those rows' exact vectors are read. The
    identity of a row is its UIN. Synthetic rows and enrolments in adjudication are not
    sampled (their identity is not known). Templates stay in memory only.
    """
    from dedup.deployment import open_deployment
    from dedup.index.gallery import Gallery
    from dedup.store.gallery_members import accepted_enrolment_pks, uins_of

    home = Path(home)
    if not has_database(home):
        raise BadInput(f"{home} is not a deployment with a database: pass --templates FILE (labelled templates), "
                       "or --home DIR of a deployment to sample its gallery")
    dep = open_deployment(home)
    if not (dep.gallery / "CURRENT").exists():
        raise BadInput(f"{home}: the deployment has no gallery yet (`dedup run` makes it); pass --templates FILE")
    gallery = Gallery.open(dep.gallery, dep.settings.index)
    with dep.database.session() as conn:
        pks = np.array(accepted_enrolment_pks(conn), dtype=np.int64)
        if pks.size < 2:
            raise BadInput(f"{home}: {pks.size} accepted identities; impostor pairs need at least 2 "
                           "(pass --templates FILE until the deployment has more)")
        chosen = pks[sample_rows(int(pks.size), n_pairs, rng)[0]]
        uin_of = uins_of(conn, chosen.tolist())
    rows = gallery.find_enrolments([gallery_name(int(pk)) for pk in chosen])
    present = [int(pk) for pk in chosen if gallery_name(int(pk)) in rows]  # a unit decided but not yet added: skipped
    if len(present) < 2:
        raise BadInput(f"{home}: only {len(present)} accepted identities have a template in the gallery; "
                       "finish `dedup run` first, or pass --templates FILE")
    vectors = gallery.exact_vectors(np.array([rows[gallery_name(pk)] for pk in present], dtype=np.int64))
    identities = np.array([uin_of[pk] for pk in present])
    impostor = sample_impostor_scores_from_gallery(vectors, identities, n_pairs, rng)
    return DeploymentSample(impostor, gallery.model_id, len(gallery), int(pks.size), int(vectors.shape[1]))


def deployment_gallery_size(home: Path) -> int | None:
    """The number of templates in the gallery of the deployment at ``home``; None without one."""
    from dedup.config import SETTINGS_FILE, load_settings
    from dedup.deployment import GALLERY_DIR
    from dedup.index.gallery import Gallery

    root = Path(home) / GALLERY_DIR
    if not (Path(home) / SETTINGS_FILE).exists() or not (root / "CURRENT").exists():
        return None
    return len(Gallery.open(root, load_settings(home).index))


def calibrate(tail: TailModel, genuine: GenuineScores | None, target_fpir: float, gallery_size: int,
              model_id: str, impostor: ImpostorSample | None = None, enrolments_per_day: float | None = None,
              duplicate_rate: float = 0.0, current_threshold: float | None = None,
              gallery_size_source: str = "given") -> Calibration:
    """The threshold for ``target_fpir`` at ``gallery_size`` and what it implies."""
    if enrolments_per_day is not None and enrolments_per_day < 0:
        raise InvalidParameter("enrolments per day must be >= 0")
    if not 0 <= duplicate_rate < 1:
        raise InvalidParameter("duplicate rate must be in [0, 1)")
    f = fmr_for_fpir(target_fpir, gallery_size)
    t = threshold_for_target(tail, target_fpir, gallery_size)
    t_ci = tail.threshold_interval(f)
    source = "empirical" if t <= tail.u else "tail-model"
    fpir_ci = fpir_at(tail, t, gallery_size)[1]
    conf = tail.confidence
    fnir = fnir_ci = None
    n_gen = 0
    if genuine is not None and genuine.n_pairs:
        n_gen = genuine.n_pairs
        miss = genuine.count_lt(t)
        fnir = miss / n_gen
        lo_t = t_ci[0] if math.isfinite(t_ci[0]) else t
        hi_t = t_ci[1] if math.isfinite(t_ci[1]) else t
        lo, _ = wilson_interval(genuine.count_lt(lo_t), n_gen, conf)
        _, hi = wilson_interval(genuine.count_lt(hi_t), n_gen, conf)
        fnir_ci = (float(lo), float(hi))
    adj = adj_ci = None
    if enrolments_per_day is not None:
        r, d = enrolments_per_day, duplicate_rate
        caught = 1.0 - (fnir or 0.0)
        adj = r * (1 - d) * target_fpir + r * d * caught
        caught_lo = 1.0 - (fnir_ci[1] if fnir_ci else 0.0)
        caught_hi = 1.0 - (fnir_ci[0] if fnir_ci else 0.0)
        adj_ci = (r * (1 - d) * fpir_ci[0] + r * d * caught_lo, r * (1 - d) * fpir_ci[1] + r * d * caught_hi) \
            if all(math.isfinite(v) for v in fpir_ci) else None
    cur = cur_ci = None
    if current_threshold is not None:
        cur, cur_ci = fpir_at(tail, current_threshold, gallery_size)
    return Calibration(
        model_id, target_fpir, gallery_size, gallery_size_source, f, t, t_ci, source, fpir_ci, fnir, fnir_ci,
        n_gen, tail.n_pairs, int(impostor.rows.size) if impostor is not None else 0,
        enrolments_per_day, duplicate_rate, adj, adj_ci, current_threshold, cur, cur_ci, conf)


def calibration_sources(c: Calibration) -> dict[str, str]:
    """Where each figure of a calibration comes from, in words (printed and in ``--json``)."""
    pairs = c.impostor_pairs
    if c.threshold_source == "empirical":
        thr = f"empirical: read from {pairs:,} sampled impostor pairs (FMR {c.fmr_target:.1e} is within their reach)"
    else:
        thr = (f"tail model: FMR {c.fmr_target:.1e} is below 1/{pairs:,} pairs, not estimable from the sample itself; "
               "extrapolated by the generalized Pareto tail fitted to its highest pairs")
    if c.expected_fnir is None:
        fnir = "not estimable: no genuine pairs (impostor pairs only)"
    else:
        fnir = f"empirical: share of {c.genuine_pairs:,} genuine pairs scoring below the threshold"
    return {"threshold": thr, "fpir": "model: FPIR(N, t) = 1 - (1 - FMR(t))^N with FMR(t) as for the threshold",
            "expected_fnir": fnir}


# --------------------------------------------------------------------------- the deployment


def deployment_card(calibration: Calibration, tail: TailModel, dim: int, data: str,
                    genuine: GenuineScores | None) -> ModelCard:
    """The deployment's own model card from a calibration (for a plugged model, its only card)."""
    bundled = load_card(calibration.model_id)
    return ModelCard(
        calibration.model_id, dim, calibration.model_id,
        None if bundled is None else bundled.documented_threshold,
        "the bundled card's" if bundled is not None else "no documented operating point known",
        tail, Provenance(data, calibration.impostor_pairs, calibration.templates_paired,
                         datetime.now(UTC).isoformat(timespec="seconds"),
                         "dedup calibrate: " + calibration.model_note, synthetic=False),
        GenuineSummary.of(genuine.scores if genuine is not None else np.zeros(0),
                          "genuine pairs of the calibration templates" if genuine is not None and genuine.n_pairs
                          else "none: impostor pairs only"),
        kind="deployment")


def apply_threshold(home: Path, threshold: float | None, target_fpir: float) -> Path:
    """Write ``[calibration] target_fpir`` and ``[search] threshold`` into ``home/dedup.toml``.

    ``threshold`` None (what ``--apply`` writes): the threshold follows the calibration, so an
    explicit ``search.threshold`` in the file is set back to 0; none is added. Every other
    line (comments included) is kept; the new file is validated by the settings loader before
    it atomically replaces the old one (temporary file + ``os.replace``).
    """
    from dedup.config import SETTINGS_FILE, load_settings

    home = Path(home)
    if not home.is_dir():
        raise InvalidParameter(f"{home}: no such deployment folder")
    path = home / SETTINGS_FILE
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    try:
        before = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    expected = {k: dict(v) if isinstance(v, dict) else v for k, v in before.items()}
    if threshold is not None:
        # Rounded up, never down: a threshold written lower than calibrated would miss the target.
        written = math.ceil(threshold * 1e6) / 1e6
        text = set_toml_value(text, "search", "threshold", repr(written))
        expected.setdefault("search", {})["threshold"] = written
    elif "threshold" in before.get("search", {}):
        text = set_toml_value(text, "search", "threshold", "0.0")
        expected["search"]["threshold"] = 0.0
    text = set_toml_value(text, "calibration", "target_fpir", repr(float(target_fpir)))
    after = tomllib.loads(text)
    expected.setdefault("calibration", {})["target_fpir"] = float(target_fpir)
    if after != expected:
        raise ConfigError(f"{path}: could not update the threshold without changing other settings; edit it by hand")
    atomic_write_text(path, text, existing_mode(path, 0o600))
    load_settings(home, environ={})   # the written file must load
    return path


def set_toml_value(text: str, section: str, key: str, literal: str) -> str:
    """Set ``key = literal`` in ``[section]`` of a TOML text, keeping every other line."""
    lines = text.splitlines()
    header = re.compile(r"^\s*\[\s*" + re.escape(section) + r"\s*\]\s*(#.*)?$")
    any_header = re.compile(r"^\s*\[")
    assign = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
    start = next((i for i, line in enumerate(lines) if header.match(line)), None)
    if start is None:
        if lines and lines[-1].strip():
            lines.append("")
        lines += [f"[{section}]", f"{key} = {literal}"]
        return "\n".join(lines) + "\n"
    end = next((i for i in range(start + 1, len(lines)) if any_header.match(lines[i])), len(lines))
    for i in range(start + 1, end):
        if assign.match(lines[i]):
            lines[i] = f"{key} = {literal}"
            return "\n".join(lines) + "\n"
    last = start
    for i in range(start + 1, end):
        if lines[i].strip() and not lines[i].lstrip().startswith("#"):
            last = i
    lines.insert(last + 1, f"{key} = {literal}")
    return "\n".join(lines) + "\n"


@dataclass
class Applied:
    """What ``apply_calibration`` wrote."""

    settings_path: Path
    calibration_path: Path
    card_path: Path
    previous_threshold: float
    audited_by: str


def has_database(home: Path) -> bool:
    """Whether ``home`` is a deployment with a database (embedded or by URL)."""
    from dedup.config import load_settings

    home = Path(home)
    if not (home / "dedup.toml").exists():
        return False
    settings = load_settings(home, environ={})
    url = getattr(getattr(settings, "store", None), "database_url", "")
    return bool(url) or (home / "pg" / "PG_VERSION").exists()


def apply_calibration(home: Path, user: str | None, calibration: Calibration, tail: TailModel, card: ModelCard) -> Applied:
    """``--apply``: the target into ``dedup.toml`` (an explicit ``search.threshold`` back to 0, so the
    threshold follows the calibration), the model into ``calibration.json`` and the deployment's
    model card, and a ``threshold.calibrate`` audit row, by an admin.

    The audit row is inserted in a transaction that commits only after the settings file was
    replaced, so a failed write leaves no audit row and a refused user changes nothing.
    """
    from dedup.config import load_settings
    from dedup.deployment import open_deployment
    from dedup.store import audit
    from dedup.store.users import authenticate, authorize

    home = Path(home)
    if not has_database(home):
        raise BadInput(f"{home} is not a deployment with a database; --apply records an audit row there "
                       "(create one with `dedup init DIR`, or pass --home)")
    previous = load_settings(home).search.threshold
    dep = open_deployment(home)
    with dep.database.session() as conn:
        actor = authenticate(conn, user)
        authorize(actor, "threshold.calibrate")
        with conn.transaction():
            audit.record(conn, actor.name, "threshold.calibrate", "settings", "search.threshold", {
                "previous": previous, "threshold": calibration.threshold,
                "threshold_ci": list(calibration.threshold_ci), "target_fpir": calibration.target_fpir,
                "gallery_size": calibration.gallery_size, "model_id": calibration.model_id,
                "impostor_pairs": calibration.impostor_pairs, "expected_fnir": calibration.expected_fnir,
                "follows": "calibration: the threshold in force is this tail at the gallery's size, for every unit",
            })
            settings_path = apply_threshold(home, None, calibration.target_fpir)
            calibration_path = save_calibration(home, calibration.to_dict(), tail)
            card_path = save_deployment_card(home, card)
    return Applied(settings_path, calibration_path, card_path, previous, actor.name)
