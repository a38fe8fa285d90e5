"""One case, real or control: show it (the CLI's detail, the web's view), read its photos,
decide it (one decide for both interfaces), and the web's note of a decision.

A real decision changes the enrolment: duplicate (of an existing UIN), distinct (a UIN is
issued) or recapture. A control decision is scored against the pair's known answer and
changes nothing else. Both kinds are loaded into one shape (:class:`_Case`: a control shows
its source case's candidates) and go through the same checks in the same order, so a
control case answers exactly as a real one does. Deciding the same way again changes
nothing for whoever decided; any other attempt on a case one does not hold is refused with
one answer (:mod:`dedup.adjudication.holder`). Every view, photo read, decision and refusal
is audited.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg

from dedup.adjudication.holder import Hold, check_holder, check_may_see_photos, check_may_view, missing, refusals_audited
from dedup.adjudication.records import DECISIONS, Candidate, CandidateView, CaseDetail, CaseView, Decided, DecisionResult
from dedup.bidi import neutralise
from dedup.errors import Conflict, InvalidParameter, NotFound
from dedup.ingest.photos import PhotoStore
from dedup.store import audit
from dedup.store import cases as store_cases
from dedup.store import controls as store_controls
from dedup.store.identities import issue_uin
from dedup.store.users import Actor, authorize
from dedup.uin import is_valid

# What a control decision would have made of the enrolment, so its result reads like a real one.
_STATE_OF = {"duplicate": "duplicate", "distinct": "accepted", "recapture": "recapture"}
_PAIRING = "--duplicate-of UIN goes with a duplicate decision, and only with it"


@dataclass(frozen=True)
class _Case:
    """A real or control case in one shape."""

    control: bool
    row: dict[str, Any]
    hold: Hold
    opened_at: dt.datetime
    decision: str | None
    duplicate_of: str | None
    comment: str | None
    probe: dict[str, Any]  # enrolment_pk, centre_id, enrolment_id, captured_at, photo_sha256
    candidates: list[dict[str, Any]]  # the shape of dedup.store.cases.candidate_rows

    @property
    def case_id(self) -> int:
        return self.hold.case_id

    def candidate(self, rank: int) -> dict[str, Any] | None:
        return next((c for c in self.candidates if c["rank"] == rank), None)

    def identities(self) -> set[str]:
        return {c["uin"] for c in self.candidates if c["uin"] is not None}


def _load(conn: psycopg.Connection[Any], actor: Actor, case_id: int, lock: bool = False) -> _Case:
    """A case of either kind; a number that is neither is :func:`holder.missing`."""
    try:
        if store_controls.is_control(conn, case_id):
            row = store_controls.control_row(conn, case_id, lock=lock)
            return _control(conn, row)
        row = store_cases.case_row(conn, case_id, lock=lock)
    except NotFound:
        raise missing(case_id, actor) from None
    probe = {"enrolment_pk": row["enrolment_pk"], "centre_id": row["centre_id"], "enrolment_id": row["enrolment_id"],
             "captured_at": row["captured_at"], "photo_sha256": row["photo_sha256"]}
    return _Case(False, row, Hold.of_case(row), row["opened_at"], row["decision"], row["duplicate_of"], row["comment"], probe,
                 store_cases.candidate_rows(conn, case_id))


def _control(conn: psycopg.Connection[Any], row: dict[str, Any]) -> _Case:
    # A control shows its source case's candidates (their number is a real case's); a pair
    # without a source case shows its one candidate.
    if row["source_case"] is not None:
        cands = store_cases.candidate_rows(conn, row["source_case"])
    else:
        cands = [{"rank": 0, "score": row["score"], "found_in": "gallery", "synthetic": False, "gallery_row": None,
                  "centre_id": row["cand_centre_id"], "enrolment_id": row["cand_enrolment_id"], "state": row["cand_state"],
                  "uin": row["cand_uin"], "photo_sha256": row["candidate_sha256"]}]
    probe = {"enrolment_pk": row["probe_pk"], "centre_id": row["probe_centre_id"], "enrolment_id": row["probe_enrolment_id"],
             "captured_at": row["probe_captured_at"], "photo_sha256": row["probe_sha256"]}
    return _Case(True, row, Hold.of_control(row), row["opened_at"], row["decision"], row["duplicate_of"], row["comment"], probe,
                 cands)


def _view_detail(case: _Case) -> dict[str, Any]:
    return {"candidates": len(case.candidates), **({"control": True} if case.control else {})}


# ---------------------------------------------------------------- showing


def _viewed(conn: psycopg.Connection[Any], actor: Actor, case_id: int) -> _Case:
    """The case, if ``actor`` may view it; the view is audited, and so is a refusal."""
    authorize(actor, "queue.show")
    with refusals_audited(conn, actor, case_id, "view"):
        with conn.transaction():
            case = _load(conn, actor, case_id)
            check_may_view(case.hold, actor)
            audit.record(conn, actor.name, "case.view", "case", case_id, _view_detail(case))
    return case


def show_case(conn: psycopg.Connection[Any], actor: Actor, case_id: int, photos: PhotoStore) -> CaseDetail:
    """A case with its photos' store paths and candidates (``dedup queue show``); audited as a view."""
    case = _viewed(conn, actor, case_id)
    hold, p = case.hold, case.probe
    views = [CandidateView(c["rank"], float(c["score"]), c["found_in"], c["synthetic"], c["gallery_row"], c["centre_id"],
                           c["enrolment_id"], c["state"], c["uin"],
                           None if c["photo_sha256"] is None else str(photos.path(c["photo_sha256"])))
             for c in case.candidates]
    return CaseDetail(case_id, hold.status, case.opened_at, hold.claimed_by if hold.held else None,
                      hold.lease_until if hold.held else None, case.decision, case.duplicate_of, hold.decided_by, hold.decided_at,
                      case.comment, p["enrolment_pk"], p["centre_id"], p["enrolment_id"], p["captured_at"],
                      str(photos.path(p["photo_sha256"])), views)


def show(conn: psycopg.Connection[Any], actor: Actor, case_id: int) -> CaseView:
    """The case as the web page shows it (audited as a view): its holder, a supervisor, or who decided it."""
    case = _viewed(conn, actor, case_id)
    hold = case.hold
    cands = [Candidate(c["rank"], float(c["score"]), c["found_in"], c["synthetic"], c["photo_sha256"] is not None and not c["synthetic"],
                       c["uin"] if c["state"] in ("accepted", "duplicate") else None) for c in case.candidates]
    rank = next((c.rank for c in cands if case.duplicate_of is not None and c.identity == case.duplicate_of), None)
    return CaseView(case_id, case.control, hold.status, hold.claimed_by if hold.held else None, hold.mine(actor),
                    hold.lease_until if hold.held else None, case.decision, hold.decided_by, hold.decided_at,
                    case.comment, rank, cands)


def photo(conn: psycopg.Connection[Any], actor: Actor, photos: PhotoStore, case_id: int, which: str, kind: str) -> bytes:
    """The bytes of one photo of a case (``which``: ``probe`` or a candidate number, 1-based).

    Only the holder of a live claim, or a supervisor, gets them: asked by anyone else, a
    case has no photos at all, whatever ``which`` names. Each read and refusal is audited.
    """
    authorize(actor, "queue.show")
    with refusals_audited(conn, actor, case_id, "photo"):
        with conn.transaction():
            case = _load(conn, actor, case_id)
            check_may_see_photos(case.hold, actor)
            if which == "probe":
                sha, shown = case.probe["photo_sha256"], "probe"
            else:
                rank = int(which) - 1 if which.isdigit() else -1
                cand = case.candidate(rank)
                if cand is None:
                    raise NotFound(f"case {case_id} has no photo {which[:20]!r}")
                if cand["photo_sha256"] is None:
                    raise NotFound(f"candidate {which} of case {case_id} is a synthetic template, no photo")
                sha, shown = cand["photo_sha256"], f"candidate {rank + 1}"
            audit.record(conn, actor.name, "case.photo", "case", case_id, {"photo": shown, "kind": kind})
    return photos.read(sha)


# ---------------------------------------------------------------- deciding


def decide(conn: psycopg.Connection[Any], actor: Actor, case_id: int, decision: str, duplicate_of: str | None = None,
           comment: str | None = None) -> DecisionResult:
    """Decide a held case, real or control: duplicate (of a candidate's UIN), distinct or recapture."""
    authorize(actor, "queue.decide")
    if decision not in DECISIONS:
        raise InvalidParameter(f"decision must be one of {', '.join(DECISIONS)}")
    if duplicate_of is not None and decision != "duplicate":
        raise InvalidParameter(_PAIRING)
    if duplicate_of is not None and not is_valid(duplicate_of):
        raise InvalidParameter(f"{duplicate_of!r} is not a valid UIN (12 digits with a Verhoeff check digit)")
    if comment is not None and len(comment) > 2000:
        raise InvalidParameter("comment is longer than 2000 characters")
    with refusals_audited(conn, actor, case_id, "decide"):
        with conn.transaction():
            case = _load(conn, actor, case_id, lock=True)
            return _decide(conn, actor, case, decision, duplicate_of, comment)


def _decide(conn: psycopg.Connection[Any], actor: Actor, case: _Case, decision: str, duplicate_of: str | None,
            comment: str | None) -> DecisionResult:
    case_id, hold = case.case_id, case.hold
    if hold.status == "decided" and hold.decided_by == actor.name:
        # Only whoever decided learns how: the same decision again changes nothing.
        if case.decision == decision and case.duplicate_of == duplicate_of:
            uin = None if case.control else case.row["uin"]
            return DecisionResult(case_id, decision, _STATE_OF[decision], uin, duplicate_of, changed=False)
        raise Conflict(f"case {case_id} was already decided {case.decision} by you at {hold.decided_at:%Y-%m-%d %H:%M:%S} UTC")
    check_holder(hold, actor)
    if decision == "duplicate" and duplicate_of is None:
        raise InvalidParameter(_PAIRING)
    if duplicate_of is not None:
        _check_candidate_uin(case_id, duplicate_of, case.identities())
    if case.control:
        truth = case.row["truth"]
        correct = decision == truth and (decision != "duplicate" or duplicate_of == case.row["truth_uin"])
        store_controls.close_control(conn, case_id, decision, duplicate_of, correct, comment)
        audit.record(conn, actor.name, "case.decide", "case", case_id,
                     {"decision": decision, "duplicate_of": duplicate_of, "control": True, "correct": correct, "comment": comment})
        return DecisionResult(case_id, decision, _STATE_OF[decision], None, duplicate_of, changed=True)
    pk = case.probe["enrolment_pk"]
    uin = None
    if decision == "duplicate":
        store_cases.link_duplicate(conn, pk, str(duplicate_of))
    elif decision == "distinct":
        uin = issue_uin(conn, pk, actor.name)
    else:
        # The request is shown to the centre: direction overrides in it are written out.
        store_cases.request_recapture(conn, pk, neutralise(comment) if comment else "a new photo is needed")
    store_cases.close_case(conn, case_id, decision, duplicate_of, actor.name, comment)
    audit.record(conn, actor.name, "case.decide", "case", case_id,
                 {"decision": decision, "duplicate_of": duplicate_of, "uin": uin, "comment": comment})
    return DecisionResult(case_id, decision, _STATE_OF[decision], uin, duplicate_of, changed=True)


def _check_candidate_uin(case_id: int, uin: str | None, allowed: set[str]) -> None:
    if uin not in allowed:
        shown = ", ".join(sorted(allowed)) or "none yet (candidates still pending)"
        raise InvalidParameter(f"UIN {uin} is not an identity among case {case_id}'s candidates; their UINs: {shown}")


def decide_on_page(conn: psycopg.Connection[Any], actor: Actor, case_id: int, decision: str, candidate: str | None,
                   comment: str | None, blind: bool) -> Decided:
    """A decision from the case page (a duplicate names the candidate's number) with the web's note of it."""
    authorize(actor, "queue.decide")
    with refusals_audited(conn, actor, case_id, "decide"):
        with conn.transaction():
            case = _load(conn, actor, case_id)
        # Who may act comes before what they sent (a case they decided is left to decide's rules).
        if not (case.hold.status == "decided" and case.hold.decided_by == actor.name):
            check_holder(case.hold, actor)
        if decision not in DECISIONS:
            raise InvalidParameter(f"decision must be one of {', '.join(DECISIONS)}")
        comment = (comment or "").strip() or None
        rank: int | None = None
        if decision == "duplicate":
            try:
                rank = int(candidate or "") - 1
            except ValueError:
                raise InvalidParameter("a duplicate decision names the candidate it duplicates") from None
        elif candidate:
            raise InvalidParameter("only a duplicate decision names a candidate")
        with conn.transaction():
            uin: str | None = None
            if rank is not None:
                chosen = case.candidate(rank)
                if chosen is None:
                    raise InvalidParameter(f"case {case_id} has no candidate {rank + 1}")
                if chosen["uin"] is None or chosen["state"] not in ("accepted", "duplicate"):
                    raise InvalidParameter(f"candidate {rank + 1} has no identity yet (synthetic, or still pending); "
                                           "decide distinct or recapture, or release the case")
                uin = chosen["uin"]
            top = max((float(c["score"]) for c in case.candidates), default=None)
            result = decide(conn, actor, case_id, decision, uin, comment)
            if result.changed:
                since = store_cases.last_claimed_at(conn, case_id, actor.name)
                store_cases.note_web_decision(conn, case_id, case.control, actor.name, decision, rank, blind, top,
                                              store_cases.seconds_since(conn, since))
                if blind:
                    audit.record(conn, actor.name, "case.score_shown", "case", case_id, {"after_decision": decision, "top_score": top})
    return Decided(case_id, decision, rank, result.changed)


def recorded(conn: psycopg.Connection[Any], case_id: int) -> dict[str, Any] | None:
    """The web's note of a decision (blind, top score, seconds), if the web made it."""
    return store_cases.web_decision(conn, case_id)
