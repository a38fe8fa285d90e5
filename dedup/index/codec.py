"""The codec: IVF coarse centroids + PQ codebooks, trained once, shared by every shard.

Templates are L2-normalised, so the index uses the L2 metric: for unit vectors
``|q - x|^2 = 2 - 2 cos(q, x)``, so L2 order is cosine order. L2 also makes IVF encode
residuals against the coarse centroid, which centres the narrow cone face embeddings live in
before product quantisation (the "centring" the design asks about comes for free). A learned
rotation (OPQ, ``dedup.index.rotation``) goes in front of the IVF index unless
``index.rotation = "none"``; it is part of the index file, so of the codec's version.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dedup.errors import GalleryError, InvalidParameter
from dedup.fsutil import atomic_path, atomic_write_text
from dedup.index.bounds import SearchBounds, measure_bounds
from dedup.index.rotation import ROTATIONS, ivf_of, learn_rotation, rotated_index, rotation_of

CODEC_FORMAT = 1


@dataclass(frozen=True)
class CodecSpec:
    """Shape of the codec. ``pq_bits`` 4 selects FAISS's fast-scan IVF-PQ."""

    dim: int
    nlist: int
    pq_m: int
    pq_bits: int

    def __post_init__(self) -> None:
        if self.dim < 2:
            raise InvalidParameter(f"dim must be >= 2, got {self.dim}")
        if self.nlist < 1:
            raise InvalidParameter(f"nlist must be >= 1, got {self.nlist}")
        if self.pq_bits not in (4, 8):
            raise InvalidParameter(f"pq_bits must be 4 or 8, got {self.pq_bits}")
        if self.pq_m < 1 or self.dim % self.pq_m:
            raise InvalidParameter(f"pq_m ({self.pq_m}) must divide the dimension ({self.dim})")
        if self.pq_bits == 4 and self.pq_m % 2:
            raise InvalidParameter(f"4-bit fast-scan PQ needs an even pq_m, got {self.pq_m}")

    @property
    def code_bytes(self) -> int:
        """Bytes of PQ code per template."""
        return math.ceil(self.pq_m * self.pq_bits / 8)

    @property
    def min_train(self) -> int:
        """Fewest training vectors for sound k-means (FAISS warns below 39 per centroid)."""
        return max(39 * self.nlist, 39 * (1 << self.pq_bits) if self.pq_bits == 8 else 1000)


def choose_nlist(n_templates: int) -> int:
    """About 2*sqrt(N) coarse lists, as a power of two, between 16 and 65536.

    2*sqrt(N) rather than the usual 4*sqrt(N): with 4-bit fast-scan a longer list costs
    little to scan, while k-means time grows with nlist (measured at 1M face-like, 2 cores:
    nlist 2048 and 4096 gave the same duplicate recall at nprobe 32, and 2048 trains on
    100k templates inside the 60 s train + add budget).
    """
    target = 2.0 * math.sqrt(max(n_templates, 1))
    return int(min(65536, max(16, 2 ** round(math.log2(target)))))


def choose_pq_m(dim: int, configured: int) -> int:
    """PQ sub-quantisers: the configured number, or (0) about dim/4 (128-d: 32, 512-d: 128).

    Scaling with the dimension keeps 4 dimensions per 4-bit code; 32 codes for a 512-d
    template (16 dimensions each) rank its neighbours too coarsely for threshold search.
    """
    if configured:
        return configured
    target = max(2, dim // 4)
    divisors = [d for d in range(2, dim + 1, 2) if dim % d == 0] or [1]
    return min(divisors, key=lambda d: (abs(d - target), d))


def fit_nlist(spec_nlist: int, n_templates: int, n_train: int) -> int:
    """The configured nlist, or the automatic one, reduced so training has 39 points per list."""
    nlist = spec_nlist or choose_nlist(n_templates)
    limit = max(1, n_train // 39)
    while nlist > limit and nlist > 1:
        nlist //= 2
    return nlist


OUTGROWN_FACTOR = 4  # a codec is outgrown when a fresh one would have this many times its lists


def outgrown(nlist: int, n_templates: int, train_size: int) -> str | None:
    """A warning when a gallery of ``n_templates`` has outgrown a codec of ``nlist`` lists, or ``None``.

    A new deployment's codec is trained on a small bootstrap sample (a few hundred lists);
    as the gallery grows its lists grow with it and every search scans more rows than a codec
    trained for the size would. Decisions still use exact scores; the cost is speed (at 10M on
    a 512-list codec the gallery search was 18% of ``dedup run``, ``benchmarks/system``).
    """
    if nlist < 1 or n_templates < 1:
        return None
    wanted = fit_nlist(0, n_templates, min(train_size, n_templates))
    if wanted < OUTGROWN_FACTOR * nlist:
        return None
    return (f"the gallery has outgrown its codec: {nlist:,} IVF lists for {n_templates:,} templates (about "
            f"{n_templates // nlist:,} rows a list), where a codec trained for this size would have {wanted:,}; "
            "every search scans several times the rows it needs. Run `dedup gallery compact --retrain`")


class Codec:
    """A trained, empty IVF-PQ index plus its spec and a content version."""

    def __init__(self, spec: CodecSpec, index: Any, version: str, bounds: SearchBounds | None = None) -> None:
        self.spec = spec
        self._index = index
        self.version = version
        self.bounds = bounds  # measured at train time (dedup.index.bounds); None for older codecs

    @staticmethod
    def train(sample: np.ndarray, spec: CodecSpec, seed: int = 1234, rotation: str = "opq") -> Codec:
        """Train the rotation (``"opq"``, or ``"none"``), coarse centroids and PQ codebooks on
        ``sample`` (unit vectors, float32)."""
        import faiss

        if rotation not in ROTATIONS:
            raise InvalidParameter(f"rotation must be one of {', '.join(ROTATIONS)}, got {rotation!r}")
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        if sample.ndim != 2 or sample.shape[1] != spec.dim:
            raise InvalidParameter(f"training sample must be (n, {spec.dim}), got {sample.shape}")
        if sample.shape[0] < spec.nlist:
            raise InvalidParameter(
                f"training needs at least nlist={spec.nlist} vectors, got {sample.shape[0]}; "
                "lower index.nlist or add templates first")
        quantizer = faiss.IndexFlatL2(spec.dim)
        if spec.pq_bits == 4:
            index = faiss.IndexIVFPQFastScan(quantizer, spec.dim, spec.nlist, spec.pq_m, 4, faiss.METRIC_L2)
        else:
            index = faiss.IndexIVFPQ(quantizer, spec.dim, spec.nlist, spec.pq_m, 8, faiss.METRIC_L2)
        index.own_fields = True
        quantizer.this.disown()
        index.cp.seed = seed
        index.cp.max_points_per_centroid = 256  # bounds k-means time; FAISS subsamples beyond
        if rotation == "opq":
            matrix = learn_rotation(sample, spec.pq_m, spec.pq_bits, seed)
            index.train(np.ascontiguousarray(sample @ matrix.T))
            index = rotated_index(index, matrix)
        else:
            index.train(sample)
        return Codec(spec, index, _version_of(index, spec), measure_bounds(index, sample, seed))

    @property
    def rotation(self) -> str:
        """``"opq"`` when the codec rotates templates before quantising them, else ``"none"``."""
        return "opq" if rotation_of(self._index) is not None else "none"

    @property
    def nlist(self) -> int:
        """Coarse lists of the IVF index (inside the rotation, if any)."""
        return int(ivf_of(self._index).nlist)

    @property
    def trained(self) -> Any:
        """The trained, empty index itself, for read-only use (its coarse centroids)."""
        return self._index

    def empty_index(self) -> Any:
        """A fresh copy of the trained, empty index (one per shard)."""
        import faiss

        return faiss.clone_index(self._index)

    def save(self, path: Path) -> None:
        """Write the codec atomically (``path`` and ``path.json``)."""
        import faiss

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            faiss.write_index(self._index, str(tmp))
        meta = {"format": CODEC_FORMAT, "version": self.version, **asdict(self.spec), "rotation": self.rotation}
        if self.bounds is not None:
            meta["search_bounds"] = self.bounds.to_dict()
        atomic_write_text(path.with_name(path.name + ".json"), json.dumps(meta, indent=2))

    @staticmethod
    def load(path: Path) -> Codec:
        """Read a codec written by ``save``; the version is checked against the content."""
        import faiss

        path = Path(path)
        meta_path = path.with_name(path.name + ".json")
        if not path.exists() or not meta_path.exists():
            raise GalleryError(f"codec missing at {path}")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != CODEC_FORMAT:
            raise GalleryError(f"{path}: codec format {meta.get('format')} is not supported (expected {CODEC_FORMAT})")
        spec = CodecSpec(meta["dim"], meta["nlist"], meta["pq_m"], meta["pq_bits"])
        index = faiss.read_index(str(path))
        version = _version_of(index, spec)
        if version != meta["version"]:
            raise GalleryError(f"{path}: codec content does not match its recorded version (corrupt file?)")
        return Codec(spec, index, version, SearchBounds.from_dict(meta.get("search_bounds"), str(path)))


def _version_of(index: Any, spec: CodecSpec) -> str:
    import faiss

    blob = faiss.serialize_index(index)
    h = hashlib.sha256(np.asarray(blob).tobytes())
    h.update(json.dumps(asdict(spec), sort_keys=True).encode())
    return h.hexdigest()[:16]
