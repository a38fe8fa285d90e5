"""The adjudication queue in SQL: opening cases (``dedup run``), claiming with a lease,
viewing, deciding and releasing (``cases``). Every claim, view, decision and release
writes an audit row in the same transaction."""
