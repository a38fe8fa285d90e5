"""dedup: one-to-many face deduplication for national ID enrolment."""

__version__ = "0.1.0"
