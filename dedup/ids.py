"""The ids under which templates are kept in the gallery.

A real enrolment's template is ``e<enrolment_pk>``; synthetic rows (``dedup demo``, tests,
calibration fills) are ``synth-<n>`` and never stand for an enrolment. MOSIP mode keeps its
references in a gallery of their own as ``mosip-<referenceId>``.
"""

from __future__ import annotations

REAL_PREFIX = "e"
SYNTHETIC_PREFIX = "synth"
MOSIP_PREFIX = "mosip-"


def gallery_name(enrolment_pk: int) -> str:
    """The id under which an enrolment's template is kept in the gallery."""
    return f"{REAL_PREFIX}{enrolment_pk}"


def enrolment_pk_of(name: str) -> int | None:
    """The enrolment pk of a real gallery id (``e<pk>``); None for any other id."""
    rest = name[len(REAL_PREFIX):]
    return int(rest) if name.startswith(REAL_PREFIX) and rest.isdigit() else None


def is_synthetic(name: str) -> bool:
    """Whether a gallery id is a synthetic row."""
    return name.startswith(SYNTHETIC_PREFIX)


def mosip_gallery_name(reference_id: str) -> str:
    """The id under which a MOSIP referenceId's template is kept in the MOSIP gallery."""
    return f"{MOSIP_PREFIX}{reference_id}"
