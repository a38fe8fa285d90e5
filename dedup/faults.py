"""Crash points for tests: ``DEDUP_CRASH_AT=name`` makes the process die at that point.

The death is real (``os._exit``, no cleanup, no ``finally``), like a power cut or a kill -9,
so crash tests run the writer in a subprocess and then check what a fresh reader sees. With
``DEDUP_CRASH_ONCE=<file>`` as well, only the first process to create that file dies (a Dask
worker that is restarted must not die again on the retried task).
"""

from __future__ import annotations

import os

from dedup.config import env_value

CRASH_EXIT_CODE = 97


def crash_point(name: str) -> None:
    """Die here if ``DEDUP_CRASH_AT`` names this point (once, with ``DEDUP_CRASH_ONCE``)."""
    if env_value("DEDUP_CRASH_AT") != name:
        return
    once = env_value("DEDUP_CRASH_ONCE")
    if once:
        try:
            fd = os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
    os._exit(CRASH_EXIT_CODE)
