"""Adjudication: the queue of cases the pipeline could not decide, for the CLI and the web alike.

``queue`` claims the next case (a real case, or at ``web.control_rate`` a control pair),
lists, counts and releases; ``cases`` shows and decides a case, real or control, with one
holder rule (``holder``); ``controls`` manages the control pairs; ``records`` are what an
adjudicator sees. The SQL is in :mod:`dedup.store.cases` and :mod:`dedup.store.controls`;
every claim, view, decision and release writes an audit row in the same transaction.
"""
