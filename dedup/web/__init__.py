"""The adjudicators' web app and the centres' HTTP API (``dedup serve``).

``app`` builds the FastAPI application of a deployment; ``pages`` are the HTML pages
(login, queue, case, supervisor), ``api`` the centres' JSON API, ``auth`` passwords,
sessions and API tokens, ``cases`` and ``controls`` the adjudication behind the pages,
``images`` photos and aligned crops cut at view time, ``scoring`` what a score means, and
``stats`` the supervisor figures.
"""
