"""One settings object for a deployment.

Settings come, lowest priority first, from: the defaults below, the deployment's
``dedup.toml`` (one ``[section]`` per dataclass below), then ``DEDUP_SECTION_FIELD``
environment variables (for example ``DEDUP_SEARCH_THRESHOLD=0.93``). Every setting is
declared exactly once, here, with its documentation in the field's ``doc`` metadata;
``dedup config`` prints them and the README table is generated from them
(``tests/test_config.py`` fails when the two drift apart).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from dedup.errors import ConfigError

SETTINGS_FILE = "dedup.toml"
ENV_PREFIX = "DEDUP_"


def setting(default: Any, doc: str) -> Any:
    """Declare a setting with its default and a one-line description."""
    return field(default=default, metadata={"doc": doc})


def require(ok: bool, message: str) -> None:
    """Validation helper for sections' ``__post_init__``: raise ConfigError unless ok."""
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True)
class IndexSettings:
    """How gallery shards are quantised and stored."""

    nlist: int = setting(0, "IVF coarse lists; 0 picks about 4*sqrt(N) for the gallery size, rounded to a power of two")
    pq_m: int = setting(32, "PQ sub-quantisers per template (bytes of code are pq_m/2 with 4-bit fast-scan, pq_m with 8-bit)")
    pq_bits: int = setting(4, "bits per PQ sub-quantiser: 4 (fast-scan, fastest) or 8")
    train_size: int = setting(200_000, "templates sampled to train the codec (coarse centroids and PQ codebooks)")
    shard_capacity: int = setting(4_000_000, "templates per shard before a new shard is started")
    exact_dtype: str = setting("float16", "dtype of the exact vectors kept for re-ranking: float16 or float32")
    keep_generations: int = setting(2, "old gallery generations kept on disk after a switch (for readers still using them)")

    def __post_init__(self) -> None:
        require(self.nlist >= 0, "nlist must be >= 0")
        require(self.pq_bits in (4, 8), "pq_bits must be 4 or 8")
        require(self.pq_m > 0, "pq_m must be > 0")
        require(self.train_size >= 1000, "train_size must be >= 1000")
        require(self.shard_capacity >= 1, "shard_capacity must be >= 1")
        require(self.exact_dtype in ("float16", "float32"), "exact_dtype must be float16 or float32")
        require(self.keep_generations >= 1, "keep_generations must be >= 1")


@dataclass(frozen=True)
class SearchSettings:
    """How probes are searched against the gallery and candidates decided."""

    threshold: float = setting(0.0, "exact cosine at or above which a gallery row is a candidate; 0 means the model's documented operating point")
    nprobe: int = setting(16, "IVF lists visited per probe")
    depth: int = setting(64, "PQ-ranked rows re-ranked exactly per probe before deepening")
    max_depth: int = setting(4096, "deepest a probe is searched when all of its re-ranked rows are above the threshold")
    max_candidates: int = setting(100, "candidates kept per probe (highest exact scores); probes that hit it are reported as capped")
    deepen_margin: float = setting(0.05, "a probe is deepened while the exact score of its last PQ-ranked row is within this margin of the threshold")
    probe_block: int = setting(4096, "probes searched together in one block")

    def __post_init__(self) -> None:
        require(-1.0 <= self.threshold <= 1.0, "threshold is a cosine: between -1 and 1")
        require(self.nprobe >= 1, "nprobe must be >= 1")
        require(self.depth >= 1, "depth must be >= 1")
        require(self.max_depth >= self.depth, "max_depth must be >= depth")
        require(self.max_candidates >= 1, "max_candidates must be >= 1")
        require(0.0 <= self.deepen_margin <= 2.0, "deepen_margin must be between 0 and 2")
        require(self.probe_block >= 1, "probe_block must be >= 1")


@dataclass(frozen=True)
class RuntimeSettings:
    """Where work runs."""

    threads: int = setting(0, "CPU threads for FAISS and torch; 0 uses every core")
    device: str = setting("auto", "search/embedding device: auto (GPU when present), cpu or cuda")
    scheduler: str = setting("", "address of an existing Dask scheduler; empty starts a LocalCluster")
    workers: int = setting(0, "Dask workers of a LocalCluster; 0 uses one per core")

    def __post_init__(self) -> None:
        require(self.threads >= 0, "threads must be >= 0")
        require(self.device in ("auto", "cpu", "cuda"), "device must be auto, cpu or cuda")
        require(self.workers >= 0, "workers must be >= 0")


@dataclass(frozen=True)
class Settings:
    """Every setting of a deployment, by section."""

    index: IndexSettings = field(default_factory=IndexSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)

    def replace(self, section: str, **changes: Any) -> "Settings":
        """Return a copy with some fields of one section changed (validated)."""
        current = getattr(self, section)
        return dataclasses.replace(self, **{section: _coerce_section(type(current), {**_as_dict(current), **changes}, f"[{section}]")})


def sections() -> dict[str, type]:
    """Section name -> dataclass, in declaration order."""
    return {f.name: type(f.default_factory()) for f in dataclasses.fields(Settings)}  # type: ignore[misc]


def describe() -> list[dict[str, Any]]:
    """Every setting as ``{"name", "env", "default", "doc"}``, for ``dedup config`` and the README."""
    rows = []
    for section, cls in sections().items():
        for f in dataclasses.fields(cls):
            rows.append({
                "name": f"{section}.{f.name}",
                "env": f"{ENV_PREFIX}{section.upper()}_{f.name.upper()}",
                "default": f.default,
                "doc": f.metadata["doc"],
            })
    return rows


def load_settings(home: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read ``home/dedup.toml`` (when present) and ``DEDUP_*`` variables over the defaults."""
    environ = os.environ if environ is None else environ
    values: dict[str, dict[str, Any]] = {name: {} for name in sections()}
    if home is not None:
        path = Path(home) / SETTINGS_FILE
        if path.exists():
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path}: not valid TOML ({exc})") from None
            for key, table in data.items():
                if key not in values:
                    raise ConfigError(f"{path}: unknown section [{key}]; known: {', '.join(values)}")
                if not isinstance(table, dict):
                    raise ConfigError(f"{path}: [{key}] must be a table")
                values[key].update(table)
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in _NON_SETTING_ENV:
            continue
        section, key = _split_env(name)
        if section is None:
            continue
        values[section][key] = raw
    return Settings(**{s: _coerce_section(cls, values[s], f"[{s}]") for s, cls in sections().items()})


# DEDUP_* variables that are not settings (read by the CLI itself).
_NON_SETTING_ENV = {"DEDUP_HOME", "DEDUP_USER"}


def _split_env(name: str) -> tuple[str | None, str]:
    rest = name[len(ENV_PREFIX):].lower()
    for section in sections():
        if rest.startswith(section + "_"):
            return section, rest[len(section) + 1:]
    raise ConfigError(f"environment variable {name}: no such setting section; known sections: {', '.join(sections())}")


def _as_dict(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def _coerce_section(cls: type, raw: Mapping[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown setting {key!r}; known: {', '.join(known)}")
        out[key] = _coerce(value, type(known[key].default), f"{where} {key}")
    try:
        return cls(**out)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _coerce(value: Any, kind: type, where: str) -> Any:
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            if kind is bool:
                if text.lower() in {"1", "true", "yes", "on"}:
                    return True
                if text.lower() in {"0", "false", "no", "off"}:
                    return False
                raise ValueError(text)
            if kind is int:
                return int(text.replace("_", ""))
            if kind is float:
                return float(text)
            if kind is str:
                return text
        except ValueError:
            pass
    elif kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")
