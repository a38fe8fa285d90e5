"""What an adjudicator sees and what a decision did: the CLI's and the web's views of a case."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

DECISIONS = ("duplicate", "distinct", "recapture")


@dataclass(frozen=True)
class CandidateView:
    """A candidate as an adjudicator sees it on the command line."""

    rank: int
    score: float
    found_in: str
    synthetic: bool
    gallery_row: int | None
    centre_id: str | None = None
    enrolment_id: str | None = None
    state: str | None = None
    uin: str | None = None  # the identity it stands for (its UIN, or the UIN it duplicates)
    photo: str | None = None  # path in the deployment's store


@dataclass(frozen=True)
class CaseDetail:
    """A case with its probe enrolment and candidates (``dedup queue show``)."""

    case_id: int
    status: str
    opened_at: dt.datetime
    claimed_by: str | None
    lease_until: dt.datetime | None
    decision: str | None
    duplicate_of: str | None
    decided_by: str | None
    decided_at: dt.datetime | None
    comment: str | None
    enrolment_pk: int
    centre_id: str
    enrolment_id: str
    captured_at: dt.datetime
    photo: str
    candidates: list[CandidateView] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("opened_at", "lease_until", "decided_at", "captured_at"):
            d[k] = d[k].isoformat() if d[k] is not None else None
        return d


@dataclass(frozen=True)
class DecisionResult:
    """What a decision did."""

    case_id: int
    decision: str
    enrolment_state: str
    uin: str | None
    duplicate_of: str | None
    changed: bool  # False when the same decision had already been made

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Candidate:
    """One candidate as the web page shows it (no UIN, no enrolment id: the photos decide)."""

    rank: int
    score: float
    found_in: str
    synthetic: bool
    has_photo: bool
    identity: str | None  # the UIN a duplicate decision links to (None: pending or synthetic)

    @property
    def number(self) -> int:
        """1-based, as shown and as the keyboard shortcut."""
        return self.rank + 1


@dataclass(frozen=True)
class CaseView:
    """A case as the web app shows it."""

    case_id: int
    control: bool  # never rendered on the case page
    status: str  # open | decided | withdrawn
    holder: str | None
    held_by_me: bool
    lease_until: dt.datetime | None
    decision: str | None
    decided_by: str | None
    decided_at: dt.datetime | None
    comment: str | None
    duplicate_rank: int | None
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def top_score(self) -> float | None:
        return max((c.score for c in self.candidates), default=None)


@dataclass(frozen=True)
class Decided:
    """What a web decision did, for the page shown after it."""

    case_id: int
    decision: str
    candidate: int | None  # rank
    changed: bool
