"""Arrays derived from a loaded FAISS index (its centroids, its rotation matrix), computed
once per index object and kept while it lives: one cache for all of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# (index object id, name) -> (index, value); the index is held so the id stays its own.
_CACHE: dict[tuple[int, str], tuple[Any, Any]] = {}
_MAX_CACHED = 256


def derived(index: Any, name: str, make: Callable[[], T]) -> T:
    """``make()`` for ``index``, computed once per index object and ``name``."""
    key = (id(index), name)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is index:
        return hit[1]
    if len(_CACHE) >= _MAX_CACHED:
        _CACHE.clear()
    value = make()
    _CACHE[key] = (index, value)
    return value
