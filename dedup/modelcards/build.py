"""Fitting model cards on generated templates, and regenerating the bundled ones.

    python -m dedup.modelcards.build [--only face-like]   # rewrites dedup/modelcards/cards/*.json (minutes on 2 cores)

Every card's tail is ``dedup.evaluation.tail.fit_tail`` (generalized Pareto above the top
1e-4 of the sampled impostor pairs, template bootstrap) on all pairs of a random subset of a
seeded synthetic gallery's templates, and its genuine summary is the planted duplicates' of
the same gallery.

The built-in dlib model's card is fitted on the ``face-like`` profile, not on dlib's own
templates: the real photos installed packages ship give a few thousand impostor pairs at most
(the 100 LFW-subset faces: 4,950), far too few for the tail at FMR 1e-9 that a gallery of 1M
needs, while ``face-like`` was fitted to dlib's measured scores (benchmarks/profiles/README.md).
The card's provenance says so. Refit it whenever that profile is refitted.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from dedup.bench.synth import PROFILES, Profile, SyntheticData, SynthSpec
from dedup.evaluation.scores import genuine_scores, impostor_sample
from dedup.evaluation.tail import fit_tail
from dedup.modelcards.card import CARDS_DIR, GenuineSummary, ModelCard, Provenance, card_file_name, card_json

BUNDLED_PAIRS = 400_000_000   # FMR read from the sample down to ~2.5e-9, the GPD beyond
RUNTIME_PAIRS = 20_000_000    # a card fitted in-process for a synthetic profile at another dim
METHOD = ("all pairs of a random subset of templates, counted in 1e-4 bins; FMR from the sample below u, "
          "generalized Pareto (Grimshaw) above u = the top 1e-4 of pairs; percentile bootstrap over templates")


def synthetic_card(profile: Profile, pairs: int | None = None, seed: int = 1, runtime: bool = False,
                   model_id: str | None = None, name: str | None = None, data_note: str | None = None,
                   documented: tuple[float | None, str] | None = None) -> ModelCard:
    """A card fitted on ``profile``'s own generated impostor pairs (see the module docstring)."""
    pairs = pairs or (RUNTIME_PAIRS if runtime else BUNDLED_PAIRS)
    templates = int(np.ceil(np.sqrt(2.0 * pairs))) + 1
    population = int(templates / 0.95) + 1000       # duplicates are 5% of rows: enough distinct identities
    data = SyntheticData(SynthSpec(profile, population, queries=0, duplicate_rate=0.05, seed=seed))
    gal = data.gallery()
    rng = np.random.default_rng(seed)
    imp = impostor_sample(gal.vectors, gal.identity, gal.group, [g.name for g in profile.groups], max_pairs=pairs, rng=rng)
    gen = genuine_scores(gal.vectors, gal.identity, gal.group)
    tail = fit_tail(imp, 1e-4, 0.95, 100 if runtime else 200, rng)
    when = "fitted in this process" if runtime else "bundled"
    data_text = data_note or (f"synthetic '{profile.name}' profile at {profile.dim}-d (seed {seed}), its own generated "
                              f"templates ({when})")
    doc_t, doc_src = documented if documented is not None else (profile.threshold, profile.threshold_source)
    return ModelCard(
        model_id or profile.model_id, profile.dim, name or f"synthetic {profile.name} ({profile.dim}-d)", doc_t, doc_src, tail,
        Provenance(data_text, imp.n_pairs, int(imp.rows.size), datetime.now(UTC).isoformat(timespec="seconds"),
                   METHOD, synthetic=True),
        GenuineSummary.of(gen.scores, f"planted duplicates of the same synthetic gallery ({profile.name})"),
        kind="generated" if runtime else "bundled")


def dlib_card(face_like: ModelCard, detector: str = "hog") -> ModelCard:
    """The built-in dlib ResNet's card: the face-like profile's fit (see the module docstring).

    ``detector`` retinaface: the same network and weights aligned on RetinaFace's landmarks
    (another model id); the same fit stands for it, as real pairs score alike with either
    detector (benchmarks/face/results-models-cpu.json: 12 impostor pairs 0.80-0.88 with both).
    """
    from dedup.config import FaceSettings
    from dedup.face.model import ModelSpec, model_id_for
    from dedup.face.threshold import DEFAULT_COSINE_THRESHOLD

    note = (f"synthetic 'face-like' profile ({face_like.provenance.data}), which is built around dlib's own "
            "templates and fitted to its measured scores (benchmarks/profiles/README.md); not dlib's own templates: "
            "the real photos on hand give too few impostor pairs (the 100 LFW-subset faces: 4,950) for the tail a "
            "large gallery needs")
    if detector != "hog":
        note += f"; the same fit for dlib aligned on {detector} landmarks"
    return replace(
        face_like, model_id=model_id_for(ModelSpec.from_settings(FaceSettings(detector=detector))),
        name=f"dlib ResNet v1 (face-recognition-models), {detector} detector",
        documented_threshold=DEFAULT_COSINE_THRESHOLD,
        documented_source=("dlib's rule: Euclidean 0.6 on raw descriptors, as a cosine at the measured descriptor "
                           "norm 1.40 (an LFW verification point)"),
        provenance=replace(face_like.provenance, data=note))


def write_bundled(out: Path = CARDS_DIR, pairs: int | None = None, only: tuple[str, ...] | None = None) -> list[Path]:
    """Fit and write the bundled cards: one per synthetic profile (``only``: these), and the dlib
    model's (with face-like's fit)."""
    out.mkdir(parents=True, exist_ok=True)
    cards = []
    for name, profile in PROFILES.items():
        if only is None or name in only:
            cards.append(synthetic_card(profile, pairs))
            if name == "face-like":
                cards += [dlib_card(cards[-1]), dlib_card(cards[-1], "retinaface")]
    written = []
    for card in cards:
        path = out / card_file_name(card.model_id)
        path.write_text(card_json(card), encoding="utf-8")
        written.append(path)
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description="Regenerate the bundled model cards.")
    ap.add_argument("--out", type=Path, default=CARDS_DIR)
    ap.add_argument("--pairs", type=float, default=BUNDLED_PAIRS)
    ap.add_argument("--only", help="comma-separated profiles to refit (default: all)")
    args = ap.parse_args()
    only = tuple(args.only.split(",")) if args.only else None
    for path in write_bundled(args.out, int(args.pairs), only):
        print(path)


if __name__ == "__main__":
    main()
