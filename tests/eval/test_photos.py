"""A small eval on real photos with the default model, end to end through `dedup eval FOLDER`.

Identities: scikit-image's astronaut and matplotlib's grace_hopper.jpg, five augmented
captures each (rotation, exposure, scale, mirror, JPEG); and lfw_subset faces (25 px crops
enlarged onto a grey canvas), one capture each, as people seen once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance
from typer.testing import CliRunner

from dedup.cli import app


def _captures(img: Image.Image) -> Iterator[Image.Image]:
    yield img
    yield img.rotate(8, Image.Resampling.BILINEAR, expand=True, fillcolor=(128, 128, 128))
    yield ImageEnhance.Brightness(img).enhance(0.75)
    yield img.resize((int(img.width * 0.8), int(img.height * 0.8)), Image.Resampling.BILINEAR)
    yield img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import matplotlib.cbook
    import skimage.data

    out = tmp_path_factory.mktemp("photos")
    people = {
        "astronaut": Image.fromarray(skimage.data.astronaut()),
        "grace": Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB"),
    }
    for name, img in people.items():
        (out / name).mkdir()
        for i, c in enumerate(_captures(img)):
            c.save(out / name / f"{i}.jpg", quality=90)
    lfw = (skimage.data.lfw_subset()[:12] * 255).round().astype(np.uint8)
    for i, face in enumerate(lfw):
        canvas = Image.new("RGB", (320, 320), (128, 128, 128))
        canvas.paste(Image.fromarray(face).convert("RGB").resize((160, 160), Image.Resampling.BICUBIC), (80, 80))
        (out / f"lfw{i:02d}").mkdir()
        canvas.save(out / f"lfw{i:02d}" / "0.png")
    (out / "groups.csv").write_text("astronaut,F\ngrace,F\n", encoding="utf-8")
    return out


def test_eval_on_real_photos(photo_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEDUP_FACE_MIN_SHARPNESS", "0")        # the enlarged 25 px lfw crops are soft
    monkeypatch.setenv("DEDUP_FACE_WORKERS", "1")
    res = CliRunner().invoke(app, ["eval", str(photo_folder), "--out", str(tmp_path / "r"), "--json",
                                   "--home", str(tmp_path)])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    from dedup.face.model import default_model_id

    assert doc["model_id"] == default_model_id() and doc["synthetic"] is False
    # No --threshold: the threshold in force for the default model at this set's gallery size,
    # from the dlib model card (never dlib's documented LFW rule).
    assert doc["threshold_source"].startswith(f"threshold in force for {default_model_id()}") and "model-card" in doc["threshold_source"]
    assert doc["threshold"] > 0.9082
    c = doc["counts"]
    assert c["identities_with_pairs"] == 2 and c["genuine_pairs"] == 2 * 10   # 5 captures each, all pass
    # The same person's augmented captures match at it.
    assert doc["at_threshold"]["fnmr"] == 0.0
    assert doc["distributions"]["genuine"]["mean"] > doc["distributions"]["impostor"]["mean"]
    groups = {g["group"]: g for g in doc["groups"]}
    assert groups["F"]["genuine_pairs"] == 20 and "(none)" in groups
    assert (tmp_path / "r" / "report.md").exists()
