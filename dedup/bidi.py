"""Bidirectional control characters: shown, never obeyed.

A right-to-left override (U+202E) makes "gnp.exe" display as "exe.png"; the embeddings,
isolates and marks below reorder text the same way. Free text (comments, audit details) is
kept as typed and neutralised where it is displayed: each control character becomes a
visible ``[U+202E]``. Ids (enrolment ids, user names, centre ids) are refused when they
carry one (:func:`check_id`). The list is Unicode's Bidi_Control property (UAX #9).
"""

from __future__ import annotations

from typing import Any

from dedup.errors import InvalidParameter

BIDI_CONTROLS = frozenset(
    "\u061c"  # ARABIC LETTER MARK
    "\u200e\u200f"  # LEFT-TO-RIGHT / RIGHT-TO-LEFT MARK
    "\u202a\u202b\u202c\u202d\u202e"  # embeddings, pop, overrides
    "\u2066\u2067\u2068\u2069"  # isolates and their pop
)
_SHOWN = {ord(c): f"[U+{ord(c):04X}]" for c in BIDI_CONTROLS}


def has_bidi(text: str) -> bool:
    """Whether ``text`` carries a bidirectional control character."""
    return any(c in BIDI_CONTROLS for c in text)


def neutralise(text: str) -> str:
    """``text`` with each bidirectional control character written out as ``[U+XXXX]``."""
    return text.translate(_SHOWN)


def for_display(value: Any) -> Any:
    """A template value made safe to show: strings neutralised, anything else as it is.

    Set as the Jinja environment's ``finalize``, it applies to every ``{{ ... }}`` output.
    """
    # type(value) keeps a str subclass (markupsafe's Markup stays Markup: "[U+XXXX]" needs no escaping).
    return type(value)(neutralise(value)) if isinstance(value, str) else value


def check_id(value: str, what: str) -> None:
    """InvalidParameter when an id carries a bidirectional control character."""
    if has_bidi(value):
        first = next(c for c in value if c in BIDI_CONTROLS)
        raise InvalidParameter(f"{what} contains a bidirectional control character (U+{ord(first):04X}); ids are plain text")
