"""The supervisors' Accuracy page: what the deployment measures on itself (``dedup.evaluation.live``),
with inline SVG plots (``plots``) and the same figures ``dedup accuracy --json`` prints."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from dedup.evaluation.live import deployment_report
from dedup.web import plots
from dedup.web.deps import Conn, Ctx, User
from dedup.web.views import render

router = APIRouter(include_in_schema=False)


@router.get("/supervisor/accuracy")
def accuracy_page(request: Request, ctx: Ctx, conn: Conn, user: User) -> Response:
    report = deployment_report(ctx.dep, conn, user.actor)
    threshold = report["threshold"]["value"]
    figures = {
        "tail": (plots.impostor_tail(report["impostor"]["survival"], (report["tail"] or {}).get("model"), threshold)
                 if report["impostor"] else plots.empty("Impostor tail", "no impostor figures yet")),
        "fpir": (plots.fpir_against_n(report["fpir"]["curve"], report["target_fpir"], report["gallery_size"])
                 if report["fpir"] else plots.empty("FPIR against N", "no tail model yet")),
        "groups": {a: plots.group_fmr(rows, a) for a, rows in (report["groups"] or {}).items()},
        "genuine": plots.genuine_scores(report["genuine"]["histogram"], threshold),
    }
    return render(request, "accuracy.html", {"user": user, "r": report, "plots": figures})
