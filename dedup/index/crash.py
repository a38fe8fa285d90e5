"""Crash points for tests: ``DEDUP_CRASH_AT=name`` makes the process die at that point.

The death is real (``os._exit``, no cleanup, no ``finally``), like a power cut or a kill -9,
so crash tests run the writer in a subprocess and then check what a fresh reader sees.
"""

from __future__ import annotations

import os

CRASH_EXIT_CODE = 97


def crash_point(name: str) -> None:
    """Die here if ``DEDUP_CRASH_AT`` names this point."""
    if os.environ.get("DEDUP_CRASH_AT") == name:
        os._exit(CRASH_EXIT_CODE)
