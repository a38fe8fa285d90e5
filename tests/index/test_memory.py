"""The memory and disk check that runs before a build."""

from __future__ import annotations

from pathlib import Path

import pytest

from dedup.errors import InsufficientResources
from dedup.index.memory import check_fits, gallery_budget


def test_budget_grows_with_the_gallery_and_counts_exact_vectors_on_disk() -> None:
    small = gallery_budget(1_000_000, 128, 16, 4096, "float16", 200_000, 4_000_000)
    big = gallery_budget(10_000_000, 128, 16, 4096, "float16", 200_000, 4_000_000)
    assert big.ram_bytes > small.ram_bytes and big.disk_bytes > 9 * small.disk_bytes
    # 16 B of code + 8 B of id per template in RAM; 256 B of float16 vector on disk.
    assert 24 * 10_000_000 < big.ram_bytes < 24 * 10_000_000 + (1 << 30)
    assert big.disk_bytes >= 10_000_000 * (256 + 24)
    wide = gallery_budget(10_000_000, 128, 16, 4096, "float32", 200_000, 4_000_000)
    assert wide.disk_bytes - big.disk_bytes == 10_000_000 * 128 * 2


def test_refuses_with_the_numbers(tmp_path: Path) -> None:
    budget = gallery_budget(1_000_000_000, 512, 64, 65536, "float16", 200_000, 4_000_000)
    with pytest.raises(InsufficientResources, match=r"not enough memory: needs about \d+\.\d GiB, 1\.0 GiB available"):
        check_fits(budget, tmp_path, ram_available=1 << 30)
    with pytest.raises(InsufficientResources, match="not enough disk"):
        check_fits(budget, tmp_path / "not" / "yet" / "made", ram_available=1 << 50)
    check_fits(gallery_budget(1000, 64, 8, 16, "float16", 1000, 1000), tmp_path)  # small work fits
