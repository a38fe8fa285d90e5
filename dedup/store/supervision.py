"""What supervisors read, in SQL: decisions per adjudicator, time per case, accuracy on control
pairs, agreement between adjudicators, and a search of the audit log."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg

from dedup.store.audit import AuditRow
from dedup.store.users import Actor, authorize


@dataclass(frozen=True)
class AdjudicatorStats:
    """One adjudicator's work."""

    name: str
    decisions: int  # real cases
    duplicate: int
    distinct: int
    recapture: int
    median_seconds: float | None  # per case decided in the web app (real and control)
    controls_decided: int
    controls_correct: int
    agreement_pairs: int  # (this person, someone else) decisions on the same control pair
    agreement_same: int

    @property
    def accuracy(self) -> float | None:
        """Share of control cases answered right (recapture counts as not right)."""
        return self.controls_correct / self.controls_decided if self.controls_decided else None

    @property
    def agreement(self) -> float | None:
        """Share of shared control pairs on which this person decided as the other did."""
        return self.agreement_same / self.agreement_pairs if self.agreement_pairs else None


def adjudicator_stats(conn: psycopg.Connection[Any], actor: Actor) -> list[AdjudicatorStats]:
    """Every adjudicator's (and supervisor's) figures, by name."""
    authorize(actor, "supervise.stats")
    rows = conn.execute(
        """WITH people AS (SELECT name FROM users WHERE role IN ('adjudicator', 'supervisor')),
           real AS (SELECT decided_by AS name, count(*) AS n,
                           count(*) FILTER (WHERE decision = 'duplicate') AS dup,
                           count(*) FILTER (WHERE decision = 'distinct') AS dis,
                           count(*) FILTER (WHERE decision = 'recapture') AS rec
                    FROM cases WHERE status = 'decided' GROUP BY decided_by),
           timing AS (SELECT decided_by AS name, percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS med
                      FROM web_decisions WHERE seconds IS NOT NULL GROUP BY decided_by),
           ctl AS (SELECT claimed_by AS name, count(*) AS n, count(*) FILTER (WHERE correct) AS ok
                   FROM control_cases WHERE status = 'decided' GROUP BY claimed_by),
           agree AS (SELECT a.claimed_by AS name, count(*) AS n, count(*) FILTER (WHERE a.decision = b.decision) AS same
                     FROM control_cases a JOIN control_cases b ON a.pair_id = b.pair_id AND a.claimed_by <> b.claimed_by
                     WHERE a.status = 'decided' AND b.status = 'decided' GROUP BY a.claimed_by)
           SELECT p.name, coalesce(real.n, 0) AS decisions, coalesce(real.dup, 0) AS duplicate,
                  coalesce(real.dis, 0) AS distinct_, coalesce(real.rec, 0) AS recapture, timing.med AS median_seconds,
                  coalesce(ctl.n, 0) AS controls_decided, coalesce(ctl.ok, 0) AS controls_correct,
                  coalesce(agree.n, 0) AS agreement_pairs, coalesce(agree.same, 0) AS agreement_same
           FROM people p LEFT JOIN real USING (name) LEFT JOIN timing USING (name) LEFT JOIN ctl USING (name)
                LEFT JOIN agree USING (name)
           ORDER BY p.name"""
    ).fetchall()
    return [AdjudicatorStats(r["name"], r["decisions"], r["duplicate"], r["distinct_"], r["recapture"],
                             None if r["median_seconds"] is None else float(r["median_seconds"]),
                             r["controls_decided"], r["controls_correct"], r["agreement_pairs"], r["agreement_same"])
            for r in rows]


@dataclass(frozen=True)
class AuditQuery:
    """Filters of the audit page; empty fields do not filter."""

    actor: str = ""
    action: str = ""
    object_id: str = ""
    text: str = ""  # searched in the detail (JSON text)
    since: dt.date | None = None
    until: dt.date | None = None
    limit: int = 200


def search_audit(conn: psycopg.Connection[Any], actor: Actor, q: AuditQuery) -> list[AuditRow]:
    """Audit rows matching the filters, newest first (supervisor, admin)."""
    authorize(actor, "audit.read")
    where: list[str] = []
    params: list[Any] = []
    if q.actor:
        where.append("actor = %s")
        params.append(q.actor)
    if q.action:
        where.append("action LIKE %s")
        params.append(q.action.replace("%", r"\%").replace("_", r"\_") + "%")
    if q.object_id:
        where.append("object_id = %s")
        params.append(q.object_id)
    if q.text:
        where.append("detail::text ILIKE %s")
        params.append("%" + q.text.replace("%", r"\%").replace("_", r"\_") + "%")
    if q.since:
        where.append("at >= %s::date")
        params.append(q.since)
    if q.until:
        where.append("at < %s::date + 1")
        params.append(q.until)
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    rows = conn.execute(
        f"SELECT audit_id, at, actor, action, object_type, object_id, detail FROM audit {clause} ORDER BY audit_id DESC LIMIT %s",
        (*params, max(1, min(q.limit, 1000))),
    ).fetchall()
    return [AuditRow(**r) for r in rows]
