"""Batches in: reading and validating a centre's manifest (``manifest``), the
content-addressed photo store (``photos``), and submission with its receipt (``submit``)."""
