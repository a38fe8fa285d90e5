"""Exact threshold search as torch matrix products, on the CPU or a CUDA GPU.

The gallery is walked in chunks of ``chunk_rows`` rows (streamed from a memory-mapped
array, or kept resident on the device); each chunk is multiplied with a block of probes,
rows whose score reaches the threshold are kept, and a running top-``max_candidates`` per
probe bounds memory by ``chunk_rows x probe_block``, never by the number of matches.

Precision, ties and tolerance (the contract tests check):

- **Decided on float32 scores.** The chunk product may run in float16 on a GPU (tensor
  cores); it only *proposes* rows. Every proposed row is re-scored as a float32 dot product
  of the float32 probe with the stored vector (float16 storage is widened exactly), and the
  threshold, the ranking and the returned scores use that re-score. The proposal keeps every
  row whose low-precision score is within ``margin`` of the threshold, and ``margin`` is
  several times the worst float16 error for unit vectors, so no row is lost to rounding.
- **Equal to exact FAISS** (``IndexFlatIP`` over the same stored vectors widened to
  float32): the same rows, scores within 1e-5. A row whose score is within 1e-5 of the
  threshold may fall on either side (summation order differs between BLAS, FAISS and CUDA).
- **Ties.** Rows are ranked by score descending, then row id ascending; when a probe has
  more than ``max_candidates`` rows at or above the threshold the first ``max_candidates``
  of that order are kept and the probe is marked ``capped``.

Gallery vectors are expected L2-normalised (as every template is); probes are checked.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from dedup.errors import InsufficientResources, InvalidParameter
from dedup.index.probes import check_probes
from dedup.index.results import Candidates

# Proposal margins: how far below the threshold a low-precision score may fall and still be
# re-scored. float16: probe rounding (<= 2^-11 relative) + output rounding (<= 2^-11) +
# possible reduced-precision split-K accumulation; 1/128 is several times that bound.
MARGIN = {"float16": 1.0 / 128, "float32": 1e-4}
# Largest number of (probe, row) pairs re-scored at once (bounds the gather's memory).
_MAX_PAIRS = 1 << 21


@dataclass(frozen=True)
class ExactConfig:
    """How an exact search is cut up and computed.

    ``chunk_rows``: gallery rows multiplied at once; ``probe_block``: probes multiplied at
    once (the score tile is ``probe_block x chunk_rows``); ``compute_dtype``: ``float16``
    (GPU default) or ``float32`` (CPU default), or ``auto``.
    """

    chunk_rows: int = 0
    probe_block: int = 0
    compute_dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.chunk_rows < 0 or self.probe_block < 0:
            raise InvalidParameter("chunk_rows and probe_block must be >= 0 (0 picks a default)")
        if self.compute_dtype not in ("auto", "float16", "float32"):
            raise InvalidParameter(f"compute dtype must be auto, float16 or float32, got {self.compute_dtype!r}")

    def resolved(self, device: Any) -> ExactConfig:
        """Defaults filled in for a torch device."""
        cuda = getattr(device, "type", str(device)) == "cuda"
        return ExactConfig(
            chunk_rows=self.chunk_rows or (262_144 if cuda else 65_536),
            probe_block=self.probe_block or (4096 if cuda else 1024),
            compute_dtype=self.compute_dtype if self.compute_dtype != "auto" else ("float16" if cuda else "float32"),
        )


# --------------------------------------------------------------------------- devices


def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU (False on CPU builds of torch)."""
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(device: str) -> Any:
    """``auto`` (CUDA when torch sees a GPU, else CPU), ``cpu`` or ``cuda`` -> ``torch.device``.

    Asking for ``cuda`` where torch sees no GPU raises ``InsufficientResources`` with the
    reason (a CPU build of torch, or no visible device), never a CUDA traceback.
    """
    import torch

    if device not in ("auto", "cpu", "cuda") and not str(device).startswith("cuda:"):
        raise InvalidParameter(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = "this torch is a CPU build" if torch.version.cuda is None else "no CUDA device is visible"
        raise InsufficientResources(
            f"device {device} was asked for but torch cannot use a GPU ({why}, torch {torch.__version__}); "
            "use --device cpu, or install a CUDA build of torch on a machine with a GPU")
    return torch.device(device)


def device_memory_needed(n_rows: int, dim: int, storage_dtype: str, config: ExactConfig, resident: bool) -> int:
    """Bytes of device memory an exact search needs (the vectors if resident, plus working set).

    Working set: one chunk of vectors in the compute dtype, the score tile, its mask, and
    the re-scoring buffers; resident vectors also keep their int64 row ids.
    """
    store = np.dtype(storage_dtype).itemsize
    comp = np.dtype(config.compute_dtype).itemsize
    tile = config.probe_block * config.chunk_rows
    working = config.chunk_rows * dim * (comp + store) + config.chunk_rows * 8 \
        + tile * (comp + 1) + _MAX_PAIRS * (dim * 8 + 64) + config.probe_block * dim * 8
    held = n_rows * (dim * store + 8) if resident else 0
    return int(held + working)


def check_fits(n_rows: int, dim: int, storage_dtype: str, device: Any, config: ExactConfig,
               resident: bool = True) -> None:
    """Raise ``InsufficientResources`` when an exact search will not fit in the GPU's free memory.

    A no-op on the CPU (the vectors stay memory-mapped there). The message gives the bytes
    needed and free, and what to change.
    """
    if getattr(device, "type", str(device)) != "cuda":
        return
    import torch

    free, total = torch.cuda.mem_get_info(device)
    need = device_memory_needed(n_rows, dim, storage_dtype, config.resolved(device), resident)
    if need > free:
        raise InsufficientResources(
            f"exact GPU search of {n_rows:,} templates ({dim}-d {storage_dtype}) needs about "
            f"{need / 2**30:.1f} GiB of GPU memory, {free / 2**30:.1f} GiB of {total / 2**30:.1f} GiB is free; "
            "split the gallery into smaller shards, lower chunk_rows/probe_block, or use --device cpu")


def fits_on_gpu(n_rows: int, dim: int, storage_dtype: str, config: ExactConfig | None = None) -> bool:
    """Whether a GPU is visible and ``n_rows`` exact vectors fit in its free memory."""
    if not cuda_available():
        return False
    import torch

    device = torch.device("cuda")
    try:
        check_fits(n_rows, dim, storage_dtype, device, config or ExactConfig(), resident=True)
    except InsufficientResources:
        return False
    return True


def choose_device(setting: str, n_rows: int, dim: int, storage_dtype: str) -> str:
    """The search device for a shard: the ``cpu``/``cuda`` setting, or ``auto``: ``cuda`` when
    a GPU is present and the shard's exact vectors fit in its memory, else ``cpu``."""
    if setting == "cpu":
        return "cpu"
    if setting == "cuda":
        resolve_device("cuda")  # clear error when there is none
        return "cuda"
    if setting != "auto":
        raise InvalidParameter(f"device must be auto, cpu or cuda, got {setting!r}")
    return "cuda" if fits_on_gpu(n_rows, dim, storage_dtype) else "cpu"


# --------------------------------------------------------------------------- search


class ExactIndex:
    """Exact vectors (and their row ids) ready for threshold search on one device.

    ``resident=True`` copies the vectors to the device once (a GPU serving many probe
    blocks); ``resident=False`` keeps the host array (e.g. a memory map) and streams it in
    chunks for every search. ``removed`` lists positions that are never returned.
    """

    def __init__(self, vectors: np.ndarray, row_ids: np.ndarray, device: str = "auto",
                 config: ExactConfig | None = None, resident: bool | None = None,
                 removed: np.ndarray | None = None) -> None:
        import torch

        if vectors.ndim != 2:
            raise InvalidParameter(f"vectors must be a 2-d array, got shape {vectors.shape}")
        if np.dtype(vectors.dtype) not in (np.dtype(np.float16), np.dtype(np.float32)):
            raise InvalidParameter(f"vectors must be float16 or float32, got {vectors.dtype}")
        row_ids = np.asarray(row_ids, dtype=np.int64)
        if row_ids.shape != (vectors.shape[0],):
            raise InvalidParameter(f"row_ids has {row_ids.shape[0]} entries for {vectors.shape[0]} vectors")
        self.device = resolve_device(device)
        self.config = (config or ExactConfig()).resolved(self.device)
        self.n, self.dim = int(vectors.shape[0]), int(vectors.shape[1])
        self.storage_dtype = np.dtype(vectors.dtype).name
        self.resident = (self.device.type == "cuda") if resident is None else resident
        check_fits(self.n, self.dim, self.storage_dtype, self.device, self.config, self.resident)
        self._compute = getattr(torch, self.config.compute_dtype)
        self.margin = MARGIN[self.config.compute_dtype]
        self._host_vectors: Any = vectors
        self._host_rows: Any = row_ids
        live = np.ones(self.n, dtype=bool)
        if removed is not None and len(removed):
            live[np.asarray(removed, dtype=np.int64)] = False
        self._host_live = None if live.all() else live
        if self.resident:
            # Keep the storage dtype on the device; the compute dtype is made per chunk if it differs.
            # Copied chunk by chunk, so a memory-mapped gallery never sits whole in host RAM.
            self._vectors = torch.empty((self.n, self.dim), dtype=getattr(torch, self.storage_dtype), device=self.device)
            for lo in range(0, self.n, self.config.chunk_rows):
                hi = min(lo + self.config.chunk_rows, self.n)
                self._vectors[lo:hi].copy_(_tensor(vectors[lo:hi]))
            self._rows = _tensor(row_ids).to(self.device)
            self._live = None if self._host_live is None else _tensor(self._host_live).to(self.device)

    @classmethod
    def from_tensors(cls, vectors: Any, row_ids: Any, config: ExactConfig | None = None) -> ExactIndex:
        """An index over torch tensors already on their device (float16/float32 vectors, int64
        row ids), used as they are: no host copy (e.g. a gallery generated on the GPU)."""
        import torch

        if not isinstance(vectors, torch.Tensor) or not isinstance(row_ids, torch.Tensor):
            raise InvalidParameter("from_tensors needs torch tensors")
        if vectors.ndim != 2 or vectors.dtype not in (torch.float16, torch.float32):
            raise InvalidParameter(f"vectors must be a 2-d float16/float32 tensor, got {tuple(vectors.shape)} {vectors.dtype}")
        if row_ids.shape != (vectors.shape[0],) or row_ids.dtype != torch.int64 or row_ids.device != vectors.device:
            raise InvalidParameter("row_ids must be an int64 tensor with one entry per vector, on the vectors' device")
        self = cls.__new__(cls)
        self.device = vectors.device
        self.config = (config or ExactConfig()).resolved(self.device)
        self.n, self.dim = int(vectors.shape[0]), int(vectors.shape[1])
        self.storage_dtype = str(vectors.dtype).replace("torch.", "")
        self.resident = True
        self._compute = getattr(torch, self.config.compute_dtype)
        self.margin = MARGIN[self.config.compute_dtype]
        self._host_vectors = self._host_rows = self._host_live = None
        self._vectors, self._rows, self._live = vectors, row_ids, None
        return self

    def _chunks(self) -> Iterator[tuple[Any, Any, Any]]:
        """(vectors in the storage dtype, row ids, live mask or None) per chunk, on the device."""

        step = self.config.chunk_rows
        for lo in range(0, self.n, step):
            hi = min(lo + step, self.n)
            if self.resident:
                live = None if self._live is None else self._live[lo:hi]
                yield self._vectors[lo:hi], self._rows[lo:hi], live
            else:
                vec = _tensor(self._host_vectors[lo:hi]).to(self.device)
                rows = _tensor(self._host_rows[lo:hi]).to(self.device)
                live = None if self._host_live is None else _tensor(self._host_live[lo:hi]).to(self.device)
                yield vec, rows, live

    def search(self, probes: np.ndarray, threshold: float, max_candidates: int) -> Candidates:
        """Every row with float32 score ``>= threshold`` per probe, highest first, at most
        ``max_candidates`` (the probe marked ``capped`` when more reached it)."""
        import torch

        probes = check_probes(probes, self.dim)
        if max_candidates < 1:
            raise InvalidParameter(f"max_candidates must be >= 1, got {max_candidates}")
        if not -1.0 <= threshold <= 1.0:
            raise InvalidParameter(f"threshold is a cosine between -1 and 1, got {threshold}")
        m = probes.shape[0]
        if m == 0 or self.n == 0:
            return Candidates.empty(m)
        pb = self.config.probe_block
        blocks = []
        for lo in range(0, m, pb):
            p32 = torch.from_numpy(probes[lo:lo + pb]).to(self.device)
            blocks.append(_BlockState(p32, p32.to(self._compute), max_candidates))
        with torch.inference_mode():
            for vec, rows, live in self._chunks():
                vec_c = vec if vec.dtype == self._compute else vec.to(self._compute)
                for state in blocks:
                    state.scan(vec_c, vec, rows, live, threshold, self.margin)
        parts = [state.result() for state in blocks]
        if len(parts) == 1:
            return parts[0]
        from dedup.index.results import concat

        return concat(parts)


def exact_search(vectors: np.ndarray, row_ids: np.ndarray, probes: np.ndarray, threshold: float,
                 max_candidates: int, device: str = "auto", chunk_rows: int = 0, probe_block: int = 0,
                 dtype: str = "auto", removed: np.ndarray | None = None) -> Candidates:
    """One exact threshold search, streaming ``vectors`` (array or memmap) through the device.

    ``dtype`` is the compute dtype of the chunk products (``auto``: float16 on CUDA, float32
    on CPU); decisions and returned scores are always float32 (see the module docstring).
    """
    index = ExactIndex(vectors, row_ids, device=device, resident=False, removed=removed,
                       config=ExactConfig(chunk_rows=chunk_rows, probe_block=probe_block, compute_dtype=dtype))
    return index.search(probes, threshold, max_candidates)


def _tensor(array: np.ndarray) -> Any:
    """A CPU tensor over ``array`` (copied when read-only, e.g. a memory map, or strided)."""
    import torch

    if not array.flags.writeable or not array.flags.c_contiguous or isinstance(array, np.memmap):
        array = np.array(array, copy=True, order="C")
    return torch.from_numpy(array)


def _row_counts(mask: Any) -> Any:
    """True values per row of a 2-d bool tensor (numpy's count is much faster on the CPU)."""
    import torch

    if mask.device.type == "cpu":
        return torch.from_numpy(np.count_nonzero(mask.contiguous().numpy(), axis=1).astype(np.int64))
    return torch.count_nonzero(mask, dim=1)


def _nonzero_2d(mask: Any) -> tuple[Any, Any]:
    """(row, column) indices of the True values of a 2-d bool tensor, row-major."""
    import torch

    cols = mask.shape[1]
    if mask.device.type == "cpu":
        flat = torch.from_numpy(np.flatnonzero(mask.contiguous().numpy()))
    else:
        flat = mask.reshape(-1).nonzero().squeeze(1)
    return flat // cols, flat % cols


class _BlockState:
    """Running results of one probe block: at most ``k`` (probe, row, score) triples per probe
    (score descending, row ascending) and how many rows reached the threshold in all."""

    def __init__(self, p32: Any, pc: Any, k: int) -> None:
        import torch

        self.p32, self.pc, self.k = p32, pc, k
        dev = p32.device
        self.n = int(p32.shape[0])
        self.total = torch.zeros(self.n, dtype=torch.int64, device=dev)
        self.probe = torch.zeros(0, dtype=torch.int64, device=dev)
        self.rows = torch.zeros(0, dtype=torch.int64, device=dev)
        self.scores = torch.zeros(0, dtype=torch.float32, device=dev)

    def scan(self, vec_c: Any, vec: Any, rows: Any, live: Any, threshold: float,
             margin: float) -> None:
        """Fold one gallery chunk into the running results."""
        import torch

        s = self.pc @ vec_c.T                                   # (pb, cr) proposal scores
        if live is not None:
            s.masked_fill_(~live[None, :], float("-inf"))
        lo = threshold - margin
        hit = s.amax(dim=1) >= lo
        if not bool(hit.any()):                                 # the common case: nothing near
            return
        hp = hit.nonzero().squeeze(1)
        sub = s if hp.shape[0] == s.shape[0] else s.index_select(0, hp)   # (h, cr)
        proposed = sub >= lo
        floor = torch.full((hp.shape[0],), lo, dtype=sub.dtype, device=sub.device)
        counts = _row_counts(proposed)
        over = counts > self.k
        if bool(over.any()):
            # More than k proposals: only rows within 2*margin of the k-th proposal score can
            # be in the exact top k. Rows cut below that floor are still counted (for
            # ``capped``): surely above the threshold when within margin above it, else
            # re-scored (the uncertain band around the threshold).
            kth = sub[over].topk(self.k, dim=1).values[:, -1]
            floor[over] = torch.clamp(kth - 2 * margin, min=lo)
            sure = sub >= (threshold + margin)
            cut = sure & (sub < floor[:, None])
            self.total.index_add_(0, hp, _row_counts(cut))
            proposed = (sub >= floor[:, None]) | (proposed & ~sure)
            counts = _row_counts(proposed)
        # Re-score the proposals in float32, in bounded pieces of probes.
        counts = counts.cpu().numpy()
        start = 0
        while start < hp.shape[0]:
            csum = np.cumsum(counts[start:])
            stop = start + max(1, int(np.searchsorted(csum, _MAX_PAIRS, side="right")))
            pi, ci = _nonzero_2d(proposed[start:stop])
            if pi.numel():
                gp = hp[start:stop][pi]
                exact = (self.p32.index_select(0, gp) * vec.index_select(0, ci).float()).sum(dim=1)
                keep = exact >= threshold
                self._add(gp[keep], rows.index_select(0, ci[keep]), exact[keep])
            start = stop

    def _add(self, probe: Any, rows: Any, scores: Any) -> None:
        import torch

        if probe.numel() == 0:
            return
        self.total.index_add_(0, probe, torch.ones_like(probe))
        probe = torch.cat([self.probe, probe])
        rows = torch.cat([self.rows, rows])
        scores = torch.cat([self.scores, scores])
        # Lexicographic (probe, -score, row) by stable sorts, least significant key first.
        order = torch.sort(rows, stable=True).indices
        probe, rows, scores = probe[order], rows[order], scores[order]
        order = torch.sort(scores, descending=True, stable=True).indices
        probe, rows, scores = probe[order], rows[order], scores[order]
        order = torch.sort(probe, stable=True).indices
        probe, rows, scores = probe[order], rows[order], scores[order]
        per = torch.bincount(probe, minlength=self.n)
        starts = torch.cumsum(per, 0) - per
        rank = torch.arange(probe.shape[0], device=probe.device) - starts[probe]
        keep = rank < self.k
        self.probe, self.rows, self.scores = probe[keep], rows[keep], scores[keep]

    def result(self) -> Candidates:
        total = self.total.cpu().numpy()
        return Candidates.from_pairs(
            self.n, self.probe.cpu().numpy(), self.rows.cpu().numpy(), self.scores.cpu().numpy(),
            self.k, capped=total > self.k,
        )


# --------------------------------------------------------------------------- faiss GPU


def faiss_gpu_count() -> int:
    """GPUs faiss can use: 0 with faiss-cpu (no GPU support built in) or no visible device."""
    import faiss

    getter = getattr(faiss, "get_num_gpus", None)
    if getter is None or not hasattr(faiss, "StandardGpuResources"):
        return 0
    return int(getter())


def faiss_index_to_gpu(index: Any, device: str = "auto", gpu: int = 0) -> tuple[Any, str]:
    """Move a FAISS CPU index to a GPU when one can be used; returns ``(index, "cuda"|"cpu")``.

    ``auto`` keeps the CPU index when faiss has no GPU support or sees no GPU; ``cuda``
    raises ``InsufficientResources`` saying why (faiss-cpu installed: ``pip install .[gpu]``).
    """
    import faiss

    if device not in ("auto", "cpu", "cuda"):
        raise InvalidParameter(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cpu":
        return index, "cpu"
    n = faiss_gpu_count()
    if n == 0:
        if device == "auto":
            return index, "cpu"
        built = hasattr(faiss, "StandardGpuResources")
        why = "faiss sees no GPU" if built else "the installed faiss has no GPU support (faiss-cpu)"
        raise InsufficientResources(f"faiss GPU search was asked for but {why}; "
                                    "install `pip install .[gpu]` on a CUDA machine, or use --device cpu")
    if not 0 <= gpu < n:
        raise InvalidParameter(f"GPU {gpu} asked for, faiss sees {n}")
    resources = faiss.StandardGpuResources()
    options = faiss.GpuClonerOptions()
    options.useFloat16 = True           # PQ look-up tables in float16: large M fits in shared memory
    gpu_index = faiss.index_cpu_to_gpu(resources, gpu, index, options)
    gpu_index.referenced_resources = resources  # keep the resources alive with the index
    return gpu_index, "cuda"


def expected_gpu_templates(gpu_bytes: int, dim: int, dtype: str = "float16", reserve: float = 0.1) -> int:
    """How many templates of ``dim`` x ``dtype`` (plus an int64 row id) fit in ``gpu_bytes``,
    keeping ``reserve`` of it for the working set (the cluster plan uses this)."""
    per = dim * np.dtype(dtype).itemsize + 8
    return int(math.floor(gpu_bytes * (1.0 - reserve) / per))
