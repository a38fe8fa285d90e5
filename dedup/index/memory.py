"""Check the memory and disk budget before hours of work, not after."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from dedup.errors import InsufficientResources

GiB = 1 << 30


@dataclass(frozen=True)
class Budget:
    """Estimated peak RAM and disk of a piece of work, with what they are made of."""

    ram_bytes: int
    disk_bytes: int
    detail: str

    def __add__(self, other: "Budget") -> "Budget":
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


def check_fits(budget: Budget, disk_path: Path, ram_available: int | None = None) -> None:
    """Raise ``InsufficientResources`` when the work will not fit (90% of what is free)."""
    import psutil

    available = psutil.virtual_memory().available if ram_available is None else ram_available
    if budget.ram_bytes > 0.9 * available:
        raise InsufficientResources(
            f"not enough memory: needs about {budget.ram_bytes / GiB:.1f} GiB, "
            f"{available / GiB:.1f} GiB available ({budget.detail}). "
            "Use fewer templates, more shards on more machines, or a smaller PQ code.")
    path = Path(disk_path)
    while not path.exists():
        path = path.parent
    free = shutil.disk_usage(path).free
    if budget.disk_bytes > 0.9 * free:
        raise InsufficientResources(
            f"not enough disk at {disk_path}: needs about {budget.disk_bytes / GiB:.1f} GiB, "
            f"{free / GiB:.1f} GiB free ({budget.detail}).")
