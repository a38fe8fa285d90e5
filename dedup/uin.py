"""Unique identity numbers: 11 random digits and a Verhoeff check digit (12 in all).

As Aadhaar does: the number says nothing about the person or the order of enrolment (the
digits come from ``secrets``, not a counter), the check digit catches every single-digit
error and every swap of adjacent digits, and the first digit is never 0 (so a UIN keeps
its 12 digits in any spreadsheet). Uniqueness and no-reuse are the database's job: every
UIN ever issued stays in the ``uins`` table, whose primary key refuses a second one.
"""

from __future__ import annotations

import secrets

UIN_LENGTH = 12

# Verhoeff's tables: multiplication in the dihedral group D5, the position permutations,
# and the inverse.
_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
# Position permutations: the first power of Verhoeff's permutation, and its powers up to 7
# (it has order 8), derived rather than typed out so no table row can be mistyped.
_P1 = (1, 5, 7, 6, 2, 8, 3, 0, 9, 4)


def _powers(first: tuple[int, ...], n: int) -> tuple[tuple[int, ...], ...]:
    rows = [tuple(range(10))]
    for _ in range(n - 1):
        rows.append(tuple(first[v] for v in rows[-1]))
    return tuple(rows)


_P = _powers(_P1, 8)
_INV = (0, 4, 3, 2, 1, 5, 6, 7, 8, 9)


def _checksum(digits: str, offset: int) -> int:
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = _D[c][_P[(i + offset) % 8][int(ch)]]
    return c


def check_digit(digits: str) -> str:
    """The Verhoeff check digit to append to ``digits``."""
    if not digits.isdigit():
        raise ValueError("check_digit needs decimal digits")
    return str(_INV[_checksum(digits, 1)])


def is_valid(uin: str) -> bool:
    """True for a well-formed UIN: 12 digits, first not 0, Verhoeff check digit right."""
    return (
        isinstance(uin, str)
        and len(uin) == UIN_LENGTH
        and uin.isdigit()
        and uin[0] != "0"
        and _checksum(uin, 0) == 0
    )


def new_uin() -> str:
    """A fresh random UIN (the caller makes sure it was never issued before)."""
    body = str(secrets.randbelow(9) + 1) + "".join(str(secrets.randbelow(10)) for _ in range(UIN_LENGTH - 2))
    return body + check_digit(body)
