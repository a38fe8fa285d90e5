"""Check the memory and disk budget before hours of work, not after."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from dedup.errors import InsufficientResources
from dedup.index.integrity import human_bytes

GiB = 1 << 30


@dataclass(frozen=True)
class Budget:
    """Estimated peak RAM and disk of a piece of work, with what they are made of."""

    ram_bytes: int
    disk_bytes: int
    detail: str

    def __add__(self, other: Budget) -> Budget:
        return Budget(self.ram_bytes + other.ram_bytes, self.disk_bytes + other.disk_bytes,
                      f"{self.detail}; {other.detail}")


def gallery_budget(n: int, dim: int, code_bytes: int, nlist: int, exact_dtype: str, train_size: int,
                   shard_capacity: int) -> Budget:
    """Building a gallery of ``n`` templates: codes + ids in RAM, exact vectors on disk.

    RAM: PQ codes and 8-byte ids of every row (FAISS keeps them in memory), the coarse
    centroids, the training sample, and one shard's worth of float32 input in flight.
    Disk: codes + ids + exact vectors + row ids + the id map (~24 bytes a row).
    """
    exact = 2 if exact_dtype == "float16" else 4
    ram = n * (code_bytes + 8) + nlist * dim * 4 + min(train_size, n) * dim * 4 + \
        min(shard_capacity, n) * 8 + 256 * (1 << 20)
    disk = n * (code_bytes + 8 + dim * exact + 8 + 24)
    return Budget(ram, disk, f"gallery of {n:,} x {dim}-d: PQ {code_bytes} B + id 8 B per template in RAM, "
                             f"{exact * dim} B exact vector on disk")


# Bytes a gallery row takes in each file a write creates (``shard.py`` lists the files).
_ROW_FILES = {"row_ids.npy": 8, "enrolment_keys.npy": 8, "enrolment_order.npy": 8}
_ROWS_PARQUET_PER_ROW = 40  # row id + enrolment id (e<pk>, synth-<n>) in Parquet, measured 17-25 B; rounded up
_FILE_OVERHEAD = 64 << 10   # headers, Parquet footers, meta.json, the manifest


def write_budget(n_new: int, dim: int, code_bytes: int, nlist: int, exact_dtype: str, merge_rows: int = 0,
                 merge_bytes: int = 0) -> Budget:
    """Disk and RAM one gallery write creates: ``n_new`` new rows into new shards, plus a merge
    that rewrites ``merge_rows`` rows of small shards (``merge_bytes`` on disk now).

    Disk: per row, the PQ code and FAISS's 8-byte id (``index.faiss``), the exact vector
    (``vectors.bin``), the row id, key and order maps and the ``rows.parquet`` id map; per
    index, the trained codec it copies (centroids); the merge writes its rows again, in full.
    RAM: the new index's codes and ids, one shard's row and id lists, and a working margin.
    """
    exact = 2 if exact_dtype == "float16" else 4
    per_row = code_bytes + 8 + dim * exact + sum(_ROW_FILES.values()) + _ROWS_PARQUET_PER_ROW
    rows = n_new + merge_rows
    indexes = 1 + (1 if merge_rows else 0)
    disk = rows * per_row + indexes * (nlist * dim * 4 + _FILE_OVERHEAD) + max(merge_bytes - merge_rows * per_row, 0)
    ram = rows * (code_bytes + 8 + 16 + _ROWS_PARQUET_PER_ROW) + nlist * dim * 4 + 64 * (1 << 20)
    detail = (f"{n_new:,} new row(s) of {per_row} B on disk each (PQ {code_bytes} B + id 8 B in index.faiss, "
              f"{dim * exact} B in vectors.bin, {sum(_ROW_FILES.values()) + _ROWS_PARQUET_PER_ROW} B of id maps)")
    if merge_rows:
        detail += f", and a merge copying {merge_rows:,} row(s) of small shards"
    return Budget(ram, disk, detail)


def check_fits(budget: Budget, disk_path: Path, ram_available: int | None = None, disk_free: int | None = None) -> None:
    """Raise ``InsufficientResources`` when the work will not fit (90% of what is free)."""
    import psutil

    available = psutil.virtual_memory().available if ram_available is None else ram_available
    if budget.ram_bytes > 0.9 * available:
        raise InsufficientResources(
            f"not enough memory: needs about {human_bytes(budget.ram_bytes)}, "
            f"{human_bytes(available)} available ({budget.detail}). "
            "Use fewer templates, more shards on more machines, or a smaller PQ code.")
    path = Path(disk_path)
    while not path.exists():
        path = path.parent
    free = shutil.disk_usage(path).free if disk_free is None else disk_free
    if budget.disk_bytes > 0.9 * free:
        raise InsufficientResources(
            f"not enough disk at {disk_path}: needs about {human_bytes(budget.disk_bytes)}, "
            f"{human_bytes(free)} free ({budget.detail}). Nothing was written; free some space first.")
