"""Interleaved timing of several engines on a shared machine.

One long pass of a slow engine set against one short pass of a fast one, in different
phases of a run, measures the machine's load as much as the engines. Here every engine
runs short timed passes in turn (A B C A B C ...), at least three each, and each pass
records the machine's load while it ran: the 1-minute load average and the share of all
cores that were busy (from ``/proc/stat``), next to the process's own CPU seconds.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Pass:
    """One timed pass of one engine."""

    probes: int
    wall_s: float
    cpu_s: float          # this process's CPU seconds (all threads)
    load1: float          # 1-minute load average at the end of the pass
    machine_busy: float   # share of all cores busy during the pass (every process), 0..1

    @property
    def probes_per_s(self) -> float:
        return self.probes / self.wall_s if self.wall_s > 0 else 0.0


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of all cores since boot, or None where /proc/stat is absent."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def timed_pass(run: Callable[[], Any], probes: int) -> Pass:
    """Run ``run()`` once and measure it."""
    before = _cpu_ticks()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    run()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    after = _cpu_ticks()
    busy = 0.0
    if before and after and after[1] > before[1]:
        busy = (after[0] - before[0]) / (after[1] - before[1])
    return Pass(probes, wall, cpu, os.getloadavg()[0], busy)


def interleave(engines: dict[str, tuple[Callable[[], Any], int]], passes: int = 3) -> dict[str, dict[str, Any]]:
    """Time every engine ``passes`` times in turn; ``engines``: name -> (run, probes per pass).

    Returns per engine the best and median probes/s and every pass."""
    if passes < 1:
        raise ValueError("passes must be >= 1")
    done: dict[str, list[Pass]] = {name: [] for name in engines}
    for _ in range(passes):
        for name, (run, probes) in engines.items():
            done[name].append(timed_pass(run, probes))
    out = {}
    for name, ps in done.items():
        rates = [p.probes_per_s for p in ps]
        out[name] = {
            "probes_per_s": max(rates),
            "probes_per_s_median": statistics.median(rates),
            "probes_per_cpu_s": max(p.probes / p.cpu_s for p in ps if p.cpu_s > 0) if any(p.cpu_s > 0 for p in ps) else 0.0,
            "passes": [{**asdict(p), "probes_per_s": p.probes_per_s} for p in ps],
        }
    return out
