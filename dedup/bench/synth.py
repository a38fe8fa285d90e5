"""Seeded synthetic templates with known duplicates and demographic groups.

Used by tests, ``dedup bench`` and ``dedup eval``. A template is

    x = normalise( sqrt(w_mean) m + sqrt(w_group) c_g + sqrt(w_cluster) k_c
                   + s_g sqrt(w_id) u  +  q sqrt(w_cap) e )

- ``m``: one unit direction shared by every face: real face embeddings live in a narrow
  cone (dlib's descriptors of two different people score cosine ~0.8-0.9), so the impostor
  mean is far from 0;
- ``c_g``: a unit direction per demographic group (groups cluster in embedding space);
- ``k_c``: one of ``n_clusters`` unit directions ("look-alike" clusters, drawn uniformly per
  identity): two people of the same cluster score higher than two random people, which gives
  the impostor distribution the heavy upper tail real models have (a single Gaussian is far
  too thin there) and gives IVF real clusters to find;
- ``u``: the identity, an anisotropic Gaussian (eigenvalues decaying as ``i**-alpha`` in a
  random basis), so impostor scores spread like a model with few effective dimensions;
  ``s_g`` is the group's spread (``Group.spread``): a group with a smaller spread crowds
  together and shows a higher false-match rate, which is how group differentials are planted;
- ``e``: capture noise (pose, light, age), isotropic; ``q`` is a per-capture log-normal
  factor (sigma ``quality_sigma``), so genuine scores have a realistic spread and a low tail.

Profiles (``PROFILES``) fix these weights; ``benchmarks/profiles/README.md`` says how each
was fitted (face-like: to dlib's ResNet on the real faces that scikit-image and matplotlib
ship; arcface-like: to published ArcFace-class score distributions) and
``benchmarks/profiles/fit_profiles.py`` checks them. A profile with an ``anchor`` is built
around a real model's own template distribution (``anchors/NAME.json``): ``m`` is that
model's mean direction and the identity's largest variances lie along its principal
directions, so real templates of that model score against synthetic ones as the profile's
own impostors do (face-like: dlib, at 128-d). Everything is generated in fixed blocks
of ``BLOCK`` gallery rows from ``numpy.random.default_rng([seed, stream, block])``, so any
block can be regenerated alone, and a 10M gallery streams to Parquet without sitting in RAM.
Planted duplicates always point at an earlier row of the same block.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

from dedup.errors import InvalidParameter
from dedup.fsutil import atomic_path

BLOCK = 65_536  # gallery rows per generation block (fixed: changing it changes the data)
ANCHORS = Path(__file__).parent / "anchors"

# RNG stream identifiers (the middle element of every seed sequence).
_S_PROFILE, _S_IDENTITY, _S_CAPTURE, _S_PROBE_PLAN, _S_PROBE_CAPTURE, _S_NONMATED, _S_RECAPTURE, _S_FRESH = range(8)


@dataclass(frozen=True)
class Group:
    """A demographic group: its share of identities and its identity spread factor.

    ``spread`` scales the identity part of every template of the group: below 1 the group's
    people look more alike to the model (higher false-match rate), above 1 less alike.
    """

    name: str
    share: float
    spread: float = 1.0


@dataclass(frozen=True)
class Profile:
    """A family of synthetic templates, shaped like one kind of face model.

    The weights are relative (only their ratios matter after normalisation); see the module
    docstring for the formula and ``benchmarks/profiles/README.md`` for the fitted values.
    """

    name: str
    dim: int
    w_mean: float           # weight of the direction shared by every face
    w_group: float          # weight of the group's direction
    w_id: float             # weight of the identity
    w_cap: float            # weight of the capture noise
    alpha: float            # decay of the identity covariance spectrum (0 = isotropic)
    quality_sigma: float    # log-normal sigma of the per-capture noise factor
    threshold: float        # documented operating point (cosine) for this profile
    threshold_source: str   # where the operating point comes from
    groups: tuple[Group, ...] = (Group("A", 0.4), Group("B", 0.3), Group("C", 0.2), Group("D", 0.1))
    w_cluster: float = 0.0  # weight of the identity's look-alike cluster direction
    n_clusters: int = 0     # number of look-alike clusters (0: none)
    anchor: str = ""        # a real model's template distribution to build around (``anchors/NAME.json``), at its dim

    def __post_init__(self) -> None:
        bad = []
        if not isinstance(self.dim, (int, np.integer)) or self.dim < 2:
            bad.append(f"dim must be an integer >= 2, got {self.dim!r}")
        weights = (self.w_mean, self.w_group, self.w_id, self.w_cap, self.w_cluster)
        if not all(math.isfinite(w) and w >= 0 for w in weights) or self.w_id + self.w_cap <= 0:
            bad.append("weights must be finite and >= 0 with w_id + w_cap > 0")
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            bad.append(f"alpha must be >= 0, got {self.alpha}")
        if not (math.isfinite(self.quality_sigma) and 0 <= self.quality_sigma <= 3):
            bad.append(f"quality_sigma must be in [0, 3], got {self.quality_sigma}")
        if not -1.0 <= self.threshold <= 1.0:
            bad.append(f"threshold must be a cosine in [-1, 1], got {self.threshold}")
        if self.n_clusters < 0 or (self.w_cluster > 0 and self.n_clusters < 1):
            bad.append("n_clusters must be >= 0, and >= 1 when w_cluster > 0")
        if not self.groups or not all(
            isinstance(g, Group) and math.isfinite(g.share) and g.share > 0
            and math.isfinite(g.spread) and g.spread > 0 for g in self.groups
        ):
            bad.append("needs at least one group, every group with share > 0 and spread > 0")
        elif len({g.name for g in self.groups}) != len(self.groups):
            bad.append("group names must be unique")
        if bad:
            raise InvalidParameter(f"profile {self.name}: " + "; ".join(bad))

    @property
    def model_id(self) -> str:
        """The synthetic model's id; synthetic templates never mix with a real model's."""
        return f"synthetic:{self.name}:d{self.dim}:v1"

    def with_groups(self, groups: tuple[Group, ...] | list[Group]) -> Profile:
        """The same profile with other groups (shares and spreads)."""
        return replace(self, groups=tuple(groups))


# Fitted values: benchmarks/profiles/README.md (method) and benchmarks/profiles/results/ (numbers).
PROFILES: dict[str, Profile] = {
    # Worst case for IVF: no structure at all. Impostors ~N(0, 1/sqrt(d)), genuine ~0.9.
    "uniform": Profile(
        name="uniform", dim=128, w_mean=0.0, w_group=0.0, w_id=1.0, w_cap=0.11, alpha=0.0,
        quality_sigma=0.3, threshold=0.6,
        threshold_source="uniform vectors: impostors ~N(0, 1/sqrt(d)); 0.6 is > 6 sigma at d=128",
        groups=(Group("A", 0.5), Group("B", 0.5)),
    ),
    # dlib ResNet 128-d: built around dlib's own mean and principal directions (anchors/face-like.json),
    # impostors fitted by benchmarks/profiles/fit_face_like.py, genuine scores refitted to real pairs of
    # different photographs by benchmarks/profiles/anchor_face_like.py.
    "face-like": Profile(
        name="face-like", dim=128, w_mean=0.8360, w_group=0.04, w_id=0.1240, w_cap=0.03178, alpha=0.9820,
        quality_sigma=0.3145, threshold=0.908, anchor="face-like",
        threshold_source=("dlib's rule, Euclidean 0.6 on raw descriptors, as a cosine: "
                          "1 - 0.36/(2 r^2) at the measured median norm r = 1.40"),
        groups=(Group("A", 0.4), Group("B", 0.3), Group("C", 0.2), Group("D", 0.1, spread=0.95)),
    ),
    # ArcFace-class 512-d: impostors centred near 0 (sd ~0.06), genuine mostly 0.5-0.8.
    "arcface-like": Profile(
        name="arcface-like", dim=512, w_mean=0.0, w_group=0.03, w_id=0.6285, w_cap=0.4799, alpha=0.7582,
        quality_sigma=0.3004, threshold=0.28, w_cluster=0.3415, n_clusters=256,
        threshold_source="cosine ~0.28 at FAR 0.1% on LFW, published for ArcFace-class models",
        groups=(Group("A", 0.4), Group("B", 0.3), Group("C", 0.2), Group("D", 0.1, spread=0.8)),
    ),
}


# What each profile is fitted to reproduce: statistic -> (target, tolerance). The tolerances
# hold for the check script's sample (4000 gallery rows x 2000 non-mated probes) and the
# tests' (3000 x 1500), with margin across seeds; where each target comes from is in benchmarks/profiles/README.md.
TARGETS: dict[str, dict[str, tuple[float, float]]] = {
    # No structure: impostors ~N(0, 1/sqrt(128)); genuine ~0.9; scores separate completely.
    "uniform": {
        "impostor.mean": (0.0, 0.003), "impostor.sd": (1 / math.sqrt(128), 0.003),
        "genuine.p50": (0.90, 0.02), "fmr_at_threshold.all": (0.0, 1e-6), "fnmr_at_threshold": (0.0, 1e-3),
    },
    # dlib ResNet: LFW-subset impostors with the crowding correction, genuine pairs of real
    # different photographs (mean of the 3 real pairs; p5 the augmented captures' p5 moved down
    # as much), and the false-match rate the corrected impostors show at dlib's rule.
    "face-like": {
        "impostor.mean": (0.818, 0.006), "impostor.sd": (0.0439, 0.004), "impostor.p99": (0.903, 0.006),
        "mean_vector_norm": (0.904, 0.01), "genuine.mean": (0.9636, 0.004), "genuine.p5": (0.9316, 0.01),
        "fmr_at_threshold.all": (0.0073, 0.004),
    },
    # ArcFace-class 512-d: published shape (impostor sd 0.05-0.07, FMR 1e-3 at cosine 0.28).
    "arcface-like": {
        "impostor.mean": (0.0, 0.015), "impostor.sd": (0.06, 0.006), "log10_fmr": (-3.0, 0.2),
        "genuine.p10": (0.52, 0.03), "genuine.p50": (0.65, 0.02), "genuine.p90": (0.78, 0.03),
    },
}


# Real photos embedded by the real model and scored against a gallery of its anchored profile
# see the impostor distribution the profile claims (TARGETS): statistic -> tolerance. Wider
# than TARGETS' own because the real probes are few (6 captures of 4 people: one probe's
# offset along the mean direction moves the pooled mean by ~0.005); measured in
# benchmarks/profiles/results/face-like-anchor.json, checked by tests/test_synth.py.
REAL_PROBE_TOLERANCE: dict[str, float] = {"impostor.mean": 0.02, "impostor.sd": 0.01, "impostor.p99": 0.03}


def get_profile(name: str, dim: int | None = None) -> Profile:
    """A profile by name, optionally at another dimension."""
    if name not in PROFILES:
        raise InvalidParameter(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}")
    profile = PROFILES[name]
    if dim is not None and dim != profile.dim:
        if dim < 2:
            raise InvalidParameter(f"dim must be >= 2, got {dim}")
        profile = replace(profile, dim=dim)
    return profile


@dataclass(frozen=True)
class SynthSpec:
    """What to generate: a gallery with planted duplicates and a set of probes.

    - ``duplicate_rate``: fraction of gallery rows that are a further capture of an identity
      already in the gallery (planted duplicates that enrolment should have caught);
    - ``mated_fraction``: fraction of probes that are a new capture of a gallery identity
      (the rest are people not in the gallery).
    """

    profile: Profile
    gallery_size: int
    queries: int = 1000
    duplicate_rate: float = 0.01
    mated_fraction: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.profile, Profile):
            raise InvalidParameter(f"profile must be a Profile (see get_profile), got {type(self.profile).__name__}")
        for name in ("gallery_size", "queries", "seed"):
            if not isinstance(getattr(self, name), (int, np.integer)) or isinstance(getattr(self, name), bool):
                raise InvalidParameter(f"{name.replace('_', ' ')} must be an integer, got {getattr(self, name)!r}")
        if self.gallery_size < 1:
            raise InvalidParameter(f"gallery size must be >= 1, got {self.gallery_size}")
        if self.queries < 0:
            raise InvalidParameter(f"queries must be >= 0, got {self.queries}")
        if self.seed < 0:
            raise InvalidParameter(f"seed must be >= 0, got {self.seed}")
        if not 0.0 <= self.duplicate_rate < 1.0:
            raise InvalidParameter(f"duplicate rate must be in [0, 1), got {self.duplicate_rate}")
        if not 0.0 <= self.mated_fraction <= 1.0:
            raise InvalidParameter(f"mated fraction must be in [0, 1], got {self.mated_fraction}")


@dataclass
class TemplateBlock:
    """A block of synthetic templates with their labels.

    ``identity`` is the gallery row of the identity's first capture (probes of people not
    in the gallery get identities >= gallery_size). ``duplicate`` marks planted duplicate
    rows (a second or later capture of an identity).
    """

    row_ids: np.ndarray      # int64
    vectors: np.ndarray      # float32 (n, dim), L2-normalised
    identity: np.ndarray     # int64
    group: np.ndarray        # int16 index into profile.groups
    duplicate: np.ndarray    # bool
    quality: np.ndarray      # float32 in (0, 1]


@dataclass
class Probes:
    """Probes with ground truth: each mated probe's gallery rows (every capture of its identity)."""

    vectors: np.ndarray       # float32 (q, dim)
    identity: np.ndarray      # int64
    group: np.ndarray         # int16
    mated: np.ndarray         # bool
    mate_offsets: np.ndarray  # int64 (q + 1): CSR into mate_rows
    mate_rows: np.ndarray     # int64

    def mates(self, probe: int) -> np.ndarray:
        return self.mate_rows[self.mate_offsets[probe]:self.mate_offsets[probe + 1]]


@dataclass(frozen=True)
class _Structure:
    """What a seed fixes once for the whole data set (drawn from ``[seed, _S_PROFILE]``)."""

    mean_dir: np.ndarray      # float32 (dim,)
    group_dirs: np.ndarray    # float32 (groups, dim)
    cluster_dirs: np.ndarray  # float32 (n_clusters, dim)
    scaled: np.ndarray        # float32 (dim, dim): rows sqrt(l_i) * q_i of the identity covariance
    shares: np.ndarray        # float64 (groups,), summing to 1
    spread: np.ndarray        # float32 (groups,)


@dataclass(frozen=True)
class _Identities:
    """One block's rows before capture noise; ``root`` is each row's identity as a local index."""

    rows: np.ndarray     # int64 gallery row ids
    root: np.ndarray     # int64 local index of the identity's first capture
    group: np.ndarray    # int16 group of each local row as a root
    cluster: np.ndarray  # int32 cluster of each local row as a root
    z: np.ndarray        # float32 (n, dim) identity draws of each local row as a root


@dataclass
class SyntheticData:
    """A seeded synthetic gallery and its probes. Blocks are generated on demand."""

    spec: SynthSpec

    @property
    def profile(self) -> Profile:
        return self.spec.profile

    @property
    def n_blocks(self) -> int:
        return math.ceil(self.spec.gallery_size / BLOCK)

    @cached_property
    def _structure(self) -> _Structure:
        p = self.profile
        rng = np.random.default_rng([self.spec.seed, _S_PROFILE])
        shared = rng.standard_normal((1 + len(p.groups), p.dim))
        anchor = load_anchor(p.anchor, p.dim) if p.anchor else None
        if anchor is not None:
            shared[0] = anchor.mean_direction   # the real model's mean direction (QR keeps the first vector's)
        if shared.shape[0] <= p.dim:
            # Orthonormal mean and group directions: otherwise a group direction's chance
            # overlap with the mean direction (~1/sqrt(dim)) would plant an unintended,
            # seed-dependent differential between groups of the same spread.
            q, r = np.linalg.qr(shared.T)
            shared = (q * np.sign(np.diag(r))[None, :]).T
        mean_dir, group_dirs = _unit(shared[0]), _unit(shared[1:])
        eig = np.arange(1, p.dim + 1, dtype=np.float64) ** (-p.alpha)
        eig /= eig.sum()
        draw = rng.standard_normal((p.dim, p.dim))
        if anchor is not None:
            # The largest identity variances lie along the real model's principal directions, in order.
            k = anchor.principal_directions.shape[0]
            draw[:, :k] = anchor.principal_directions.T
            q, r = np.linalg.qr(draw)
            basis = q * np.sign(np.diag(r))[None, :]
        else:
            basis, _ = np.linalg.qr(draw)
        scaled = (basis * np.sqrt(eig)[None, :]).T.astype(np.float32)
        cluster_dirs = _unit(rng.standard_normal((p.n_clusters, p.dim)))
        shares = np.array([g.share for g in p.groups], dtype=np.float64)
        spread = np.array([g.spread for g in p.groups], dtype=np.float32)
        return _Structure(mean_dir, group_dirs, cluster_dirs, scaled, shares / shares.sum(), spread)

    def _identities(self, block: int) -> _Identities:
        """The identity draws of one block (the same draws however the block is reached)."""
        spec, p = self.spec, self.profile
        lo = block * BLOCK
        n = min(lo + BLOCK, spec.gallery_size) - lo
        rng = np.random.default_rng([spec.seed, _S_IDENTITY, block])
        # A planted duplicate points at an earlier row of the same block (never the first
        # row); chains of duplicates resolve to the first capture by pointer jumping.
        dup = rng.random(n) < spec.duplicate_rate
        dup[0] = False
        earlier = (rng.random(n) * np.arange(n)).astype(np.int64)
        root = np.where(dup, earlier, np.arange(n, dtype=np.int64))
        while True:
            nxt = root[root]
            if np.array_equal(nxt, root):
                break
            root = nxt
        st = self._structure
        group = rng.choice(len(st.shares), size=n, p=st.shares).astype(np.int16)
        cluster = (rng.integers(0, p.n_clusters, size=n) if p.n_clusters else np.zeros(n)).astype(np.int32)
        z = rng.standard_normal((n, p.dim), dtype=np.float32)
        return _Identities(np.arange(lo, lo + n, dtype=np.int64), root, group, cluster, z)

    def _identity_vectors(self, z: np.ndarray, group: np.ndarray, cluster: np.ndarray) -> np.ndarray:
        """Identity vectors (before capture noise, not normalised)."""
        p, st = self.profile, self._structure
        x = (z @ st.scaled) * (math.sqrt(p.w_id) * st.spread[group])[:, None]
        if p.w_mean:
            x += np.float32(math.sqrt(p.w_mean)) * st.mean_dir[None, :]
        if p.w_group:
            x += np.float32(math.sqrt(p.w_group)) * st.group_dirs[group]
        if p.w_cluster:
            x += np.float32(math.sqrt(p.w_cluster)) * st.cluster_dirs[cluster]
        return x

    def _capture(self, base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Add capture noise; returns (unit vectors, quality)."""
        p = self.profile
        n = base.shape[0]
        factor = np.exp(p.quality_sigma * rng.standard_normal(n)).astype(np.float32)
        noise = rng.standard_normal((n, p.dim), dtype=np.float32)
        noise *= (np.float32(math.sqrt(p.w_cap / p.dim)) * factor)[:, None]
        noise += base
        quality = np.minimum(np.float32(2.0) / (np.float32(1.0) + factor), np.float32(1.0))  # factor <= 1 -> 1
        return _unit(noise), quality.astype(np.float32)

    def block(self, block: int) -> TemplateBlock:
        """Gallery rows of one block."""
        if not 0 <= block < self.n_blocks:
            raise InvalidParameter(f"block {block} out of range 0..{self.n_blocks - 1}")
        ids = self._identities(block)
        base = self._identity_vectors(ids.z, ids.group, ids.cluster)[ids.root]
        vectors, quality = self._capture(base, np.random.default_rng([self.spec.seed, _S_CAPTURE, block]))
        identity = ids.rows[ids.root]
        return TemplateBlock(ids.rows, vectors, identity, ids.group[ids.root], identity != ids.rows, quality)

    def blocks(self) -> Iterator[TemplateBlock]:
        """Every gallery block in order."""
        for b in range(self.n_blocks):
            yield self.block(b)

    def gallery(self) -> TemplateBlock:
        """The whole gallery in memory (small galleries only: tests, eval)."""
        parts = list(self.blocks())
        return TemplateBlock(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                               ("row_ids", "vectors", "identity", "group", "duplicate", "quality")))

    def probes(self) -> Probes:
        """The probes with ground truth. Mated probes are new captures of gallery identities.

        A mated probe's target is a uniformly drawn gallery row, so identities with more
        captures are proportionally more often probed; its mates are every gallery row of
        that identity (the first capture and all planted duplicates).
        """
        spec, p = self.spec, self.profile
        q = spec.queries
        plan = np.random.default_rng([spec.seed, _S_PROBE_PLAN])
        mated = plan.random(q) < spec.mated_fraction
        target_rows = plan.integers(0, spec.gallery_size, size=q)
        vectors = np.zeros((q, p.dim), dtype=np.float32)
        identity = np.zeros(q, dtype=np.int64)
        group = np.zeros(q, dtype=np.int16)
        counts = np.zeros(q, dtype=np.int64)
        mates: dict[int, np.ndarray] = {}
        mated_idx = np.flatnonzero(mated)
        blocks_needed = target_rows[mated_idx] // BLOCK
        for b in np.unique(blocks_needed):
            ids = self._identities(int(b))
            sel = mated_idx[blocks_needed == b]
            roots = ids.root[target_rows[sel] - b * BLOCK]
            base = self._identity_vectors(ids.z[roots], ids.group[roots], ids.cluster[roots])
            rng = np.random.default_rng([spec.seed, _S_PROBE_CAPTURE, int(b)])
            vectors[sel], _ = self._capture(base, rng)
            identity[sel] = ids.rows[roots]
            group[sel] = ids.group[roots]
            order = np.argsort(ids.root, kind="stable")  # rows of each identity, ascending
            sorted_root = ids.root[order]
            first = np.searchsorted(sorted_root, roots, side="left")
            last = np.searchsorted(sorted_root, roots, side="right")
            for probe, lo, hi in zip(sel.tolist(), first.tolist(), last.tolist()):
                mates[probe] = ids.rows[order[lo:hi]]
                counts[probe] = hi - lo
        nonmated_idx = np.flatnonzero(~mated)
        if nonmated_idx.size:
            rng = np.random.default_rng([spec.seed, _S_NONMATED])
            st = self._structure
            m = nonmated_idx.size
            grp = rng.choice(len(st.shares), size=m, p=st.shares).astype(np.int16)
            cl = (rng.integers(0, p.n_clusters, size=m) if p.n_clusters else np.zeros(m)).astype(np.int32)
            z = rng.standard_normal((m, p.dim), dtype=np.float32)
            vectors[nonmated_idx], _ = self._capture(self._identity_vectors(z, grp, cl), rng)
            identity[nonmated_idx] = spec.gallery_size + np.arange(m)
            group[nonmated_idx] = grp
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        flat = [mates[i] for i in mated_idx.tolist()]
        rows_flat = np.concatenate(flat).astype(np.int64) if flat else np.zeros(0, dtype=np.int64)
        return Probes(vectors, identity, group, mated, offsets, rows_flat)

    def recaptures(self, row: int, n: int) -> np.ndarray:
        """``n`` further captures (unit float32 vectors) of the identity at gallery ``row``.

        For tests that need an identity with many captures: add these to a gallery built
        from this data set and every one is a true mate of that identity's probes.
        Deterministic per (seed, row).
        """
        if not 0 <= row < self.spec.gallery_size:
            raise InvalidParameter(f"row {row} out of range 0..{self.spec.gallery_size - 1}")
        if n < 0:
            raise InvalidParameter(f"number of captures must be >= 0, got {n}")
        b = row // BLOCK
        ids = self._identities(b)
        r = ids.root[row - b * BLOCK]
        base = self._identity_vectors(ids.z[r:r + 1], ids.group[r:r + 1], ids.cluster[r:r + 1])
        rng = np.random.default_rng([self.spec.seed, _S_RECAPTURE, row])
        vectors, _ = self._capture(np.repeat(base, n, axis=0), rng)
        return vectors

    def fresh_captures(self, block: int, rows: np.ndarray) -> np.ndarray:
        """One further capture (unit float32) of the identity of each gallery row in ``rows``
        (all in ``block``), which neither the gallery nor the probes hold: with its row, a
        mated pair found without any search (``dedup bench`` measures list coverage on them).
        Deterministic per (seed, block, rows)."""
        rows = np.asarray(rows, dtype=np.int64)
        lo = block * BLOCK
        if rows.size and (rows.min() < lo or rows.max() >= min(lo + BLOCK, self.spec.gallery_size)):
            raise InvalidParameter(f"rows must lie in block {block}")
        ids = self._identities(block)
        roots = ids.root[rows - lo]
        base = self._identity_vectors(ids.z[roots], ids.group[roots], ids.cluster[roots])
        vectors, _ = self._capture(base, np.random.default_rng([self.spec.seed, _S_FRESH, block]))
        return vectors


@dataclass(frozen=True)
class Anchor:
    """A real model's template distribution: its mean direction and top principal directions
    (of what is left after the mean direction is projected out), measured on real photos."""

    name: str
    mean_direction: np.ndarray          # float64 (dim,), unit
    principal_directions: np.ndarray    # float64 (k, dim), orthonormal, orthogonal to the mean direction


@lru_cache(maxsize=8)
def load_anchor(name: str, dim: int) -> Anchor | None:
    """``anchors/NAME.json`` (written by benchmarks/profiles/anchor_face_like.py), or None when the
    profile is asked for at another dim (the anchor is the real model's, at its own dim)."""
    path = ANCHORS / f"{name}.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        mean = np.asarray(doc["mean_direction"], dtype=np.float64)
        axes = np.asarray(doc["principal_directions"], dtype=np.float64)
    except (OSError, ValueError, KeyError) as exc:
        raise InvalidParameter(f"profile anchor {name!r}: cannot read {path} ({exc})") from None
    if mean.shape[0] != dim:
        return None
    if axes.ndim != 2 or axes.shape[1] != dim or not 0 < axes.shape[0] < dim:
        raise InvalidParameter(f"profile anchor {name!r}: {path} has principal directions of shape {axes.shape}")
    return Anchor(name, mean / np.linalg.norm(mean), axes)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def write_parquet(data: SyntheticData, out_dir: Path, progress: bool = False) -> dict[str, Path]:
    """Stream the gallery and the probes to ``gallery.parquet`` and ``probes.parquet``.

    Rows use the templates schema (``schemas.templates_schema``) with ``synthetic`` true,
    ``identity`` and ``group`` labels, and ``source`` = ``synth:<profile>:<seed>:<kind><n>``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dedup.schemas import templates_schema

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    p, spec = data.profile, data.spec
    schema = templates_schema(p.dim)
    names = np.array([g.name for g in p.groups], dtype=object)
    prefix = f"synth:{p.name}:{spec.seed}:"

    def table(kind: str, ids: np.ndarray, vectors: np.ndarray, identity: np.ndarray,
              group: np.ndarray, quality: np.ndarray) -> pa.Table:
        n = ids.shape[0]
        emb = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), p.dim)
        return pa.Table.from_arrays(
            [
                pa.array([f"{prefix}{kind}{i}" for i in ids], type=pa.string()),
                pa.array([p.model_id] * n, type=pa.string()),
                emb,
                pa.array(quality, type=pa.float32()),
                pa.array([f"i{i}" for i in identity], type=pa.string()),
                pa.array(names[group].tolist(), type=pa.string()),
                pa.array(np.ones(n, dtype=bool)),
            ],
            schema=schema,
        )

    paths = {"gallery": out_dir / "gallery.parquet", "probes": out_dir / "probes.parquet"}
    with atomic_path(paths["gallery"]) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        blocks: Iterable[TemplateBlock] = data.blocks()
        if progress:
            from rich.progress import track

            blocks = track(blocks, total=data.n_blocks, description="gallery")
        for blk in blocks:
            writer.write_table(table("g", blk.row_ids, blk.vectors, blk.identity, blk.group, blk.quality))
    probes = data.probes()
    quality = np.ones(spec.queries, dtype=np.float32)
    with atomic_path(paths["probes"]) as tmp:
        pq.write_table(table("p", np.arange(spec.queries), probes.vectors, probes.identity, probes.group, quality), tmp)
    return paths
