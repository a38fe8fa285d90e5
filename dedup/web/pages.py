"""The HTML pages: login, queue, case (photos, scores, decision), supervisor pages.

Plain server-rendered HTML (Jinja2, autoescaped) with one small script for keyboard
shortcuts. Forms post with the session's CSRF token; a page that needs a session answers
401 with the login form.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import quote

from fastapi import APIRouter, Form, Request, Response
from itsdangerous import BadSignature

from dedup.adjudication import cases, controls, queue
from dedup.errors import InvalidParameter, NotFound, PermissionDenied, Unauthenticated
from dedup.store import auth, supervision
from dedup.store.gallery import gallery_health
from dedup.store.users import authorize
from dedup.web.deps import LOGIN_COOKIE, SESSION_COOKIE, Conn, Ctx, User, check_csrf
from dedup.web.images import for_browser
from dedup.web.limits import client_address
from dedup.web.scoring import describe
from dedup.web.views import login_page, render, safe_next, see_other

router = APIRouter(include_in_schema=False)

DECISION_WORDS = {"duplicate": "duplicate", "distinct": "distinct: a different person", "recapture": "recapture requested"}


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172_800:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} days"


# ---------------------------------------------------------------- login


@router.get("/login")
def login_form(request: Request, next: str = "/") -> Response:
    return login_page(request, next_path=next)


@router.post("/login")
def login(request: Request, conn: Conn, ctx: Ctx, username: str = Form(""), password: str = Form(""),
          csrf_token: str = Form(""), next: str = Form("/")) -> Response:
    try:
        expected = ctx.signer.loads(request.cookies.get(LOGIN_COOKIE, ""), max_age=3600, salt="login")
    except BadSignature:
        expected = None
    if not isinstance(expected, str) or not auth.csrf_ok(expected, csrf_token):
        raise PermissionDenied("the login form's security token is missing or out of date; reload the login page")
    try:
        actor = auth.check_login(conn, username, password, ctx.dep.settings.web, client_address(request))
    except Unauthenticated as exc:
        return login_page(request, str(exc), status=401, next_path=next)
    web = ctx.dep.settings.web
    session_id, _ = auth.create_session(conn, actor, web.session_seconds)
    response = see_other(safe_next(next))
    response.set_cookie(SESSION_COOKIE, ctx.signer.dumps(session_id, salt="session"), max_age=web.session_seconds,
                        httponly=True, samesite="strict", secure=web.cookie_secure, path="/")
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


@router.post("/logout")
def logout(request: Request, conn: Conn, user: User,
           csrf_token: str = Form("")) -> Response:
    check_csrf(user, csrf_token)
    auth.end_session(conn, user.session_id, user.actor)
    response = see_other("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/")
def home(user: User) -> Response:
    return see_other("/supervisor" if user.actor.role == "admin" else "/queue")


# ---------------------------------------------------------------- queue and cases


@router.get("/queue")
def queue_page(request: Request, conn: Conn, user: User,
               empty: int = 0) -> Response:
    counts = queue.queue_counts(conn, user.actor)
    open_cases = queue.list_cases(conn, user.actor) if user.actor.role in ("supervisor", "admin") else []
    return render(request, "queue.html", {"user": user, "counts": counts, "oldest": _age(counts["oldest_seconds"]),
                                          "empty": bool(empty), "may_claim": user.actor.may("queue.claim"),
                                          "open_cases": open_cases})


@router.post("/queue/next")
def take_next(ctx: Ctx, conn: Conn, user: User,
              csrf_token: str = Form("")) -> Response:
    check_csrf(user, csrf_token)
    authorize(user.actor, "queue.claim")
    s = ctx.dep.settings
    case_id = queue.claim_next(conn, user.actor, s.store.lease_seconds, s.web.control_rate)
    return see_other("/queue?empty=1" if case_id is None else f"/cases/{case_id}")


@router.get("/cases/{case_id}")
def case_page(request: Request, ctx: Ctx, case_id: int, conn: Conn,
              user: User) -> Response:
    view = cases.show(conn, user.actor, case_id)
    meanings = {c.rank: describe(ctx.meaning(c.score)) for c in view.candidates}
    blind = ctx.dep.settings.web.blind_mode and view.status == "open" and view.held_by_me
    values = {"user": user, "case": view, "meanings": meanings, "blind": blind,
              "decision_words": DECISION_WORDS, "photos": user.actor.role == "supervisor" or view.held_by_me}
    if view.status != "open":
        values["recorded"] = cases.recorded(conn, case_id)
        return render(request, "decided.html", values)
    return render(request, "case.html", values)


@router.get("/cases/{case_id}/photos/{which}/{kind}")
def case_photo(ctx: Ctx, case_id: int, which: str, kind: str, conn: Conn,
               user: User) -> Response:
    if kind not in ("full", "crop"):
        raise NotFound("photos are 'full' or 'crop'")
    data = cases.photo(conn, user.actor, ctx.photos, case_id, which, kind)
    image = for_browser(data) if kind == "full" else ctx.crops.crop(data)
    if image is None:
        raise NotFound("no face found in this photo for an aligned crop")
    return Response(image.data, media_type=image.media_type,
                    headers={"Cache-Control": "no-store, private", "Content-Disposition": "inline"})


@router.post("/cases/{case_id}/decide")
def decide(ctx: Ctx, case_id: int, conn: Conn, user: User,
           csrf_token: str = Form(""), decision: str = Form(""), candidate: str = Form(""), comment: str = Form("")) -> Response:
    check_csrf(user, csrf_token)
    if len(comment) > 2000:
        raise InvalidParameter("the comment is longer than 2000 characters")
    cases.decide_on_page(conn, user.actor, case_id, decision, candidate or None, comment, ctx.dep.settings.web.blind_mode)
    return see_other(f"/cases/{case_id}")


@router.post("/cases/{case_id}/release")
def release(case_id: int, conn: Conn, user: User,
            csrf_token: str = Form("")) -> Response:
    check_csrf(user, csrf_token)
    queue.release(conn, user.actor, case_id)
    return see_other("/queue")


# ---------------------------------------------------------------- supervisors


@router.get("/supervisor")
def supervisor_page(request: Request, conn: Conn, user: User) -> Response:
    rows = supervision.adjudicator_stats(conn, user.actor)
    counts = queue.queue_counts(conn, user.actor)
    galleries = gallery_health(conn)  # issue 11: the gallery's health, from the last `dedup gallery verify`
    return render(request, "supervisor.html", {"user": user, "rows": rows, "counts": counts, "oldest": _age(counts["oldest_seconds"]),
                                               "age": _age, "galleries": galleries})


@router.get("/supervisor/controls")
def controls_page(request: Request, ctx: Ctx, conn: Conn, user: User,
                  added: int = 0) -> Response:
    pairs = controls.list_pairs(conn, user.actor)
    return render(request, "controls.html", {"user": user, "pairs": pairs, "added": added,
                                             "rate": ctx.dep.settings.web.control_rate})


@router.post("/supervisor/controls")
def add_control(conn: Conn, user: User, csrf_token: str = Form(""),
                case_id: str = Form("")) -> Response:
    check_csrf(user, csrf_token)
    try:
        number = int(case_id.strip())
    except ValueError:
        raise InvalidParameter("give the number of a decided case") from None
    pair_id = controls.add_from_case(conn, user.actor, number)
    return see_other(f"/supervisor/controls?added={pair_id}")


@router.post("/supervisor/controls/{pair_id}/active")
def set_control_active(pair_id: int, conn: Conn, user: User,
                       csrf_token: str = Form(""), active: str = Form("")) -> Response:
    check_csrf(user, csrf_token)
    controls.set_active(conn, user.actor, pair_id, active == "1")
    return see_other("/supervisor/controls")


@router.get("/supervisor/audit")
def audit_page(request: Request, conn: Conn, user: User,
               actor: str = "", action: str = "", object_id: str = "", text: str = "", since: str = "", until: str = "") -> Response:
    query = supervision.AuditQuery(actor.strip(), action.strip(), object_id.strip(), text.strip(), _date(since, "since"),
                             _date(until, "until"))
    rows = supervision.search_audit(conn, user.actor, query)
    return render(request, "audit.html", {"user": user, "rows": rows, "q": query, "since": since, "until": until,
                                          "quote": quote})


def _date(text: str, name: str) -> dt.date | None:
    if not text.strip():
        return None
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidParameter(f"{name} must be a date like 2024-05-01") from None
