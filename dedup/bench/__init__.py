"""Benchmark and demonstration harnesses, kept out of the runtime modules.

- ``synth``: seeded synthetic templates with planted duplicates and groups (tests, bench,
  eval; the runtime uses it only to bootstrap a new gallery's codec and for synthetic fills)
- ``gallery``: ``dedup bench``, the scale test of the gallery index
- ``scaling``: the same search on 1..W Dask workers, and an exact torch row
- ``demo``: ``dedup demo``, the whole system on the embedded PostgreSQL
"""
