"""Labelled evaluation sets: templates with identity and group labels.

Read from templates Parquet (``schemas.templates_schema``: what ``dedup embed`` and
``dedup.bench.synth.write_parquet`` write; several files are one set, identities shared by label),
or made in memory from ``dedup.bench.synth`` data. Labels become integer codes; the labels
themselves are never reported, only group names and counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dedup.errors import BadInput

NO_GROUP = "(none)"


@dataclass
class LabelledSet:
    """Templates with integer identity and group codes."""

    vectors: np.ndarray        # float32 (n, dim), L2-normalised
    identity: np.ndarray       # int64 codes
    group: np.ndarray          # int16 codes into group_names
    group_names: list[str]
    model_id: str
    synthetic: bool
    rejected: dict[str, int] = field(default_factory=dict)   # photos the face pipeline left out, by reason

    @property
    def size(self) -> int:
        return int(self.vectors.shape[0])

    def counts(self) -> dict[str, int]:
        """Templates, identities, identities with >= 2 captures."""
        _, per = np.unique(self.identity, return_counts=True)
        return {"templates": self.size, "identities": int(per.size), "identities_with_pairs": int((per >= 2).sum())}


def from_arrays(vectors: np.ndarray, identity: np.ndarray, group: np.ndarray, group_names: list[str],
                model_id: str, synthetic: bool = True) -> LabelledSet:
    """A set from arrays (identity: any integer labels; group: codes into group_names)."""
    return LabelledSet(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(identity, dtype=np.int64),
                       np.asarray(group, dtype=np.int16), list(group_names), model_id, synthetic)


def load_templates(paths: list[Path]) -> LabelledSet:
    """Read one or more templates Parquet files as one labelled set.

    Raises BadInput for a missing file, a wrong schema, rows without identity labels, mixed
    models or dimensions, and vectors that are not L2-normalised.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from dedup.schemas import check_schema, templates_schema

    if not paths:
        raise BadInput("no templates file given")
    vecs: list[np.ndarray] = []
    idents: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    models: set[str] = set()
    synthetic = True
    dim = None
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise BadInput(f"{path}: no such templates file")
        try:
            schema = pq.read_schema(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise BadInput(f"{path}: not a Parquet file ({exc})") from None
        idx = schema.get_field_index("embedding")
        if idx < 0 or not pa.types.is_fixed_size_list(schema.field(idx).type):
            raise BadInput(f"{path}: wrong schema: no fixed-size 'embedding' column; expected a templates file "
                           "(written by `dedup embed` or dedup.bench.synth)")
        d = schema.field(idx).type.list_size
        check_schema(schema, templates_schema(d), str(path))
        if schema.get_field_index("identity") < 0:
            raise BadInput(f"{path}: no 'identity' column: evaluation needs templates labelled with the identity "
                           "of each person (and, for the group audit, a 'group' column)")
        if dim is not None and d != dim:
            raise BadInput(f"{path}: templates of dimension {d}, other files have {dim}")
        dim = d
        cols = ["embedding", "model_id", "identity", "synthetic"] + (["group"] if schema.get_field_index("group") >= 0 else [])
        table = pq.read_table(path, columns=cols)
        if table.num_rows == 0:
            continue
        missing = table.column("identity").null_count
        if missing:
            raise BadInput(f"{path}: {missing} of {table.num_rows} rows have no identity label; evaluation needs "
                           "every template labelled with its identity")
        models.update(table.column("model_id").unique().to_pylist())
        synthetic = synthetic and bool(pc.all(table.column("synthetic")).as_py())
        emb = table.column("embedding").combine_chunks()
        vecs.append(np.asarray(emb.values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, d))
        idents.append(np.asarray(table.column("identity").to_pylist(), dtype=object))
        if "group" in cols:
            g = table.column("group").fill_null(NO_GROUP)
            groups.append(np.asarray(g.to_pylist(), dtype=object))
        else:
            groups.append(np.full(table.num_rows, NO_GROUP, dtype=object))
    if not vecs:
        raise BadInput("the templates files hold no rows")
    if len(models) > 1:
        raise BadInput(f"templates from different models ({', '.join(sorted(models))}) are never compared; "
                       "evaluate one model at a time")
    vectors = np.concatenate(vecs)
    norms = np.linalg.norm(vectors, axis=1)
    bad = int(np.count_nonzero(np.abs(norms - 1.0) > 1e-3))
    if bad:
        raise BadInput(f"{bad} templates are not L2-normalised (norm differs from 1 by more than 1e-3)")
    _, identity = np.unique(np.concatenate(idents).astype(str), return_inverse=True)
    names, group = np.unique(np.concatenate(groups).astype(str), return_inverse=True)
    return LabelledSet(vectors, identity.astype(np.int64), group.astype(np.int16), [str(n) for n in names],
                       models.pop(), synthetic)


GROUPS_FILE = "groups.csv"


def load_photo_folder(folder: Path, home: Path | None = None) -> LabelledSet:
    """Embed a folder of photos, one subfolder per identity, with the deployment's face settings.

    The subfolder's name is the identity. An optional ``groups.csv`` in ``folder`` (lines
    ``identity,group``) gives each identity's demographic group; without it every identity is
    in one group. Photos the face pipeline rejects are left out (counted in ``rejected``).
    """
    from dedup.config import load_settings
    from dedup.face import embed_photos
    from dedup.face.sources import IMAGE_SUFFIXES

    folder = Path(folder)
    subfolders = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    photos: list[str] = []
    labels: list[str] = []
    for sub in subfolders:
        for p in sorted(sub.rglob("*")):
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                photos.append(str(p))
                labels.append(sub.name)
    if len(set(labels)) < 2:
        raise BadInput(f"{folder}: expected one subfolder of photos per identity, at least 2 identities; "
                       f"found {len(set(labels))}")
    group_of = _read_groups(folder / GROUPS_FILE)
    result = embed_photos(photos, load_settings(home).face)
    ok = [r for r in result.results if r.ok]
    ok_idx = [i for i, r in enumerate(result.results) if r.ok]
    if len(ok) < 2:
        raise BadInput(f"{folder}: only {len(ok)} of {len(photos)} photos gave a template; "
                       f"rejects: {result.reason_counts()}")
    ident = np.array([labels[i] for i in ok_idx], dtype=object)
    groups = np.array([group_of.get(x, NO_GROUP) for x in ident], dtype=object)
    _, identity = np.unique(ident.astype(str), return_inverse=True)
    names, group = np.unique(groups.astype(str), return_inverse=True)
    vectors = result.embeddings[[r.row for r in ok]]
    out = LabelledSet(np.ascontiguousarray(vectors, dtype=np.float32), identity.astype(np.int64),
                      group.astype(np.int16), [str(n) for n in names], result.model_id, False)
    out.rejected = result.reason_counts()
    return out


def _read_groups(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2 or not all(parts):
            raise BadInput(f"{path}:{n}: expected 'identity,group'")
        out[parts[0]] = parts[1]
    return out
