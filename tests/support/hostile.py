"""Hostile inputs and the memory they cost: Parquet bombs built in a child process (so their
memory is never the measured process's), and the peak resident memory of a process while
something runs (psutil, sampled every 5 ms). Used by tests/web and benchmarks/security."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

_BOMB = """
import datetime as dt, sys
import pyarrow as pa, pyarrow.parquet as pq
path, rows, size, group, dictionary = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
when = dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc)
if dictionary:
    photo = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array([bytes(size)], pa.binary()))
else:
    photo = pa.array([bytes(size)] * rows, pa.binary())
table = pa.table({"enrolment_id": [f"BOMB-{group}-{i}" for i in range(rows)], "centre_id": ["C1"] * rows,
                  "captured_at": pa.array([when] * rows, pa.timestamp("us", tz="UTC")), "photo": photo})
pq.write_table(table, path, compression="zstd", compression_level=19, row_group_size=group, use_dictionary=dictionary)
"""


def write_bomb(path: Path, rows: int, photo_bytes: int, row_group: int, dictionary: bool = False) -> Path:
    """A manifest of centre C1 whose every row holds ``photo_bytes`` zero bytes as its photo,
    zstd level 19, ``row_group`` rows per row group; with ``dictionary`` the photo is stated once
    in a Parquet dictionary that every row points to."""
    subprocess.run([sys.executable, "-c", _BOMB, str(path), str(rows), str(photo_bytes), str(row_group), "1" if dictionary else "0"],
                   check=True, timeout=600)
    return path


class PeakRss:
    """How far a process's resident memory rose above its level at entry (this process by default)."""

    def __init__(self, pid: int | None = None) -> None:
        self.proc = psutil.Process(pid)
        self.base = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self.base = self.peak = self.proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def rise(self) -> int:
        """Peak minus the level at entry, in bytes."""
        return self.peak - self.base
