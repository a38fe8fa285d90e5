"""The gallery index: a trained codec, shards, the gallery, exact re-ranking.

Public surface (other modules import only these names):

- ``Codec``: IVF + PQ (4-bit fast-scan or 8-bit) trained once on a sample, saved and
  versioned; every shard is a copy of it with rows added.
- ``Shard``: one IVF-PQ index over part of the gallery plus the exact vectors of the same
  rows (memory-mapped) and their int64 row ids; ``Shard.search(probes, params)`` returns
  ``Candidates`` with exact scores.
- ``Gallery``: the set of shards + id map (row id -> enrolment id) + generation, persisted
  atomically (a new generation directory, then a switch). ``Gallery.search`` searches every
  shard and merges.
- ``SearchParams``: threshold, nprobe, depth, max_depth, max_candidates, deepen_margin.
- ``Candidates`` / ``merge``: results in CSR form and the one merge used everywhere.
- ``check_probes`` (``dedup.index.probes``): the one probe check of every search (IVF-PQ,
  exact torch, Dask).
"""

from dedup.index.results import Candidates, concat, merge

__all__ = ["Candidates", "concat", "merge"]
