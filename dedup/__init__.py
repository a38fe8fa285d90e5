"""dedup: one-to-many face deduplication for national ID enrolment."""

import os

# numpy's OpenBLAS keeps its idle worker threads spinning for about 2^28 cycles after each
# product. A search alternates numpy products (the coarse step) with FAISS's OpenMP scan, and
# the spinning worker took a core from the scan: 10,000 probes at 1M x 128 took 0.53 s, 0.43 s
# with idle workers sleeping at once (2^4 cycles; benchmarks/results/blas-idle-1m.json). It
# must be set before numpy loads OpenBLAS; a value already in the environment wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

__version__ = "0.1.0"
