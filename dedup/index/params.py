"""Search parameters: what a threshold search needs, separate from where it runs."""

from __future__ import annotations

from dataclasses import dataclass

from dedup.config import SearchSettings
from dedup.errors import InvalidParameter
from dedup.index.bounds import SearchBounds


@dataclass(frozen=True)
class SearchParams:
    """How one threshold search runs.

    Every gallery row whose exact cosine with the probe is ``>= threshold`` is wanted.
    IVF-PQ proposes the ``depth`` best rows by approximate score from ``nprobe`` lists;
    they are re-ranked exactly. While the exact score of a probe's last proposed row is
    still within ``deepen_margin`` of the threshold, or at least half its proposals are above
    it, more rows may be above it, so the probe is searched again four times deeper (and
    twice as wide), up to ``max_depth``. At most ``max_candidates``
    rows (the highest) are kept; a probe that hits either limit is marked ``capped``.

    With ``early_exit`` and the codec's measured ``bounds`` (``dedup.index.bounds``), each
    probe visits only those of its ``nprobe`` nearest lists that can hold a row above the
    threshold, and only rows whose PQ estimate could reach it are re-ranked
    (``dedup.index.search``). Without bounds (an older codec, or a threshold below their
    grid) the search is the fixed one above. Off by default (``search.early_exit``): the
    bounds hold only for templates like the codec's training sample, and a probe from
    elsewhere (real templates against a codec bootstrapped on synthetic ones) can lose its
    mate, where the fixed search finds it.

    ``nprobe`` is the configured list count. With ``recall_target`` above 0 the gallery
    replaces it (``Gallery.with_measured``) by the fewest lists that hold that duplicate
    recall on its measured list coverage (``dedup.index.coverage``), where it has one with
    enough pairs at the threshold; ``nprobe_source`` then says ``"measured"``. The same
    measurement gives ``list_gap``: in its first round a probe visits only those of its
    ``nprobe`` lists within that gap (squared L2) of its nearest one, the two chosen together
    to hold the recall target (deepening rounds visit every list they count).
    """

    threshold: float
    nprobe: int = 64
    depth: int = 16
    max_depth: int = 4096
    max_candidates: int = 100
    deepen_margin: float = 0.0
    early_exit: bool = False
    bounds: SearchBounds | None = None
    recall_target: float = 0.999
    nprobe_source: str = "configured"
    list_gap: float | None = None

    def __post_init__(self) -> None:
        if not -1.0 <= self.threshold <= 1.0:
            raise InvalidParameter(f"threshold is a cosine between -1 and 1, got {self.threshold}")
        if self.nprobe < 1:
            raise InvalidParameter(f"nprobe must be >= 1, got {self.nprobe}")
        if self.depth < 1:
            raise InvalidParameter(f"depth must be >= 1, got {self.depth}")
        if self.max_depth < self.depth:
            raise InvalidParameter(f"max_depth ({self.max_depth}) must be >= depth ({self.depth})")
        if self.max_candidates < 1:
            raise InvalidParameter(f"max_candidates must be >= 1, got {self.max_candidates}")
        if self.deepen_margin < 0:
            raise InvalidParameter(f"deepen_margin must be >= 0, got {self.deepen_margin}")
        if not 0.0 <= self.recall_target < 1.0:
            raise InvalidParameter(f"recall_target must be in [0, 1), got {self.recall_target}")
        if self.list_gap is not None and not self.list_gap >= 0.0:
            raise InvalidParameter(f"list_gap must be >= 0, got {self.list_gap}")

    @staticmethod
    def from_settings(settings: SearchSettings, threshold: float | None = None) -> SearchParams:
        """Parameters from the deployment's ``[search]`` settings (threshold overridable)."""
        return SearchParams(
            threshold=settings.threshold if threshold is None else threshold,
            nprobe=settings.nprobe,
            depth=settings.depth,
            max_depth=settings.max_depth,
            max_candidates=settings.max_candidates,
            deepen_margin=settings.deepen_margin,
            early_exit=settings.early_exit,
            recall_target=settings.recall_target,
        )
