"""Domain errors. Library code raises these; only ``cli.py`` turns them into messages
and exit codes, so a user never sees a traceback for bad input."""

from __future__ import annotations


class DedupError(Exception):
    """Base class: a problem the user can act on. ``str(err)`` is the message shown."""

    exit_code = 1


class ConfigError(DedupError):
    """A setting is unknown, malformed or out of range."""

    exit_code = 2


class InvalidParameter(DedupError):
    """A command or function argument is out of range or inconsistent."""

    exit_code = 2


class InsufficientResources(DedupError):
    """The work would not fit in the memory or disk that is available."""

    exit_code = 3


class GalleryError(DedupError):
    """The gallery on disk is missing, corrupt, or does not match what is asked."""

    exit_code = 4


class ModelMismatch(GalleryError):
    """Templates from one face model were offered to a gallery built for another."""


class BadInput(DedupError):
    """An input file (manifest, template file, job file) cannot be used as given."""

    exit_code = 2
