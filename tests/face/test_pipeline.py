"""The batch pipeline: worker processes and batches do not change the answer."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from dedup.config import FaceSettings
from dedup.face import embed, embed_photos
from tests.support.photos import encode, resize


@pytest.fixture(scope="module")
def photo_paths(tmp_path_factory, astronaut, grace, coffee) -> list[str]:  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("photos")
    photos = {
        "astronaut.png": encode(astronaut),
        "grace.jpg": encode(grace, "JPEG", quality=92),
        "coffee.png": encode(coffee),
        "astronaut_small.jpg": encode(resize(astronaut, 0.8), "JPEG", quality=80),
        "broken.jpg": b"\xff\xd8\xff\xe0 not really",
        "grace_big.png": encode(resize(grace, 1.3)),
    }
    for name, data in photos.items():
        (d / name).write_bytes(data)
    return [str(d / n) for n in photos]


def test_processes_and_batches_give_the_same_templates(photo_paths, run, cpu_model, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    alone = [run([p]) for p in photo_paths]  # one photo at a time, in this process
    monkeypatch.setattr(embed, "MIN_PHOTOS_FOR_POOL", 1)
    seen: list[tuple[int, int]] = []
    together = embed_photos(photo_paths, FaceSettings(workers=2, batch_size=2, device="cpu"), model=cpu_model,
                            progress=lambda d, t: seen.append((d, t)))
    assert [r.source for r in together.results] == photo_paths
    assert [r.reason for r in together.results] == [a.results[0].reason for a in alone]
    assert seen[-1] == (len(photo_paths), len(photo_paths)) and len(seen) == len(photo_paths)
    for r, a in zip(together.results, alone):
        if r.ok:
            np.testing.assert_allclose(together.embeddings[r.row], a.embeddings[0], atol=1e-6)
            assert r.quality == pytest.approx(a.results[0].quality)
    norms = np.linalg.norm(together.embeddings, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-6)
    assert together.templates_table().num_rows == 4 and together.rejects_table().num_rows == 2


def test_sources_are_kept_as_given(photo_paths, run, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(Path(photo_paths[0]).parent)
    result = run(["astronaut.png", "./grace.jpg"])
    assert result.templates_table().column("source").to_pylist() == ["astronaut.png", "./grace.jpg"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_equals_cpu(photo_paths, cpu_model) -> None:  # type: ignore[no-untyped-def]
    from dedup.face.model import load_model
    from dedup.face.prepare import Preparer

    settings = FaceSettings(workers=1, device="cuda")
    gpu_model = load_model(settings)
    assert gpu_model.device == "cuda" and gpu_model.model_id == cpu_model.model_id
    prep = Preparer(settings)
    chips = np.stack([p.chip for p in (prep.prepare(x) for x in photo_paths) if p.chip is not None])
    chips = np.concatenate([chips] * 16)  # a real batch
    cpu = cpu_model.embed(chips, batch_size=64)
    gpu = gpu_model.embed(chips, batch_size=64)
    assert np.abs(cpu - gpu).max() <= 1e-4


class KillsTheWorker:
    """A photo whose unpickling ends the worker process at once: an injected crash, like a
    native decoder's segfault, without touching library code."""

    def __fspath__(self) -> str:
        return "killer.jpg"

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os._exit, (3,))


def test_a_worker_crash_loses_only_that_photo(photo_paths, cpu_model, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(embed, "MIN_PHOTOS_FOR_POOL", 1)
    items = [photo_paths[0], KillsTheWorker(), photo_paths[1]]
    result = embed_photos(items, FaceSettings(workers=2, device="cpu"), model=cpu_model)  # type: ignore[list-item]
    assert [r.source for r in result.results] == [photo_paths[0], "killer.jpg", photo_paths[1]]
    assert [r.reason for r in result.results] == [None, "processing_error", None]
    assert "worker process died" in result.results[1].detail
