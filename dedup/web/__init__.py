"""The adjudicators' web app and the centres' HTTP API (``dedup serve``).

``app`` builds the FastAPI application of a deployment; ``deps`` are the request
dependencies (``Annotated`` aliases), ``views`` the responses every part makes (pages,
redirects, errors), ``pages`` the HTML pages (login, queue, case, supervisor), ``api`` the
centres' JSON API, ``images`` photos and aligned crops cut at view time, and ``scoring`` what
a score means. Adjudication itself is :mod:`dedup.adjudication`; every query is in
:mod:`dedup.store`.
"""
