"""model_id, settings validation, and plugged models (TorchScript, ONNX) made by the test."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dedup.config import FaceSettings, load_settings
from dedup.errors import ConfigError, FaceModelError
from dedup.face import PhotoBytes, default_model_id, embed_photos
from dedup.face.model import ModelSpec, load_model, model_id_for
from tests.support.photos import encode


class TinyEmbedder(nn.Module):
    """A small stand-in for an ArcFace-class model: crops in, 16-d vectors out."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


PLUG = dict(input_size=64, mean="127.5,127.5,127.5", std="128,128,128", output_dim=16, align_padding=0.4, workers=1, device="cpu")


def save_torchscript(module: nn.Module, path: Path) -> None:
    """Export as TorchScript (deprecated in torch 2.13, but what operators ship)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.trace(module, torch.zeros(2, 3, 64, 64)).save(str(path))


def reference(module: TinyEmbedder, chips: np.ndarray) -> np.ndarray:
    x = (torch.from_numpy(chips).permute(0, 3, 1, 2).float() - 127.5) / 128.0
    with torch.no_grad():
        y = module(x).numpy()
    return y / np.linalg.norm(y, axis=1, keepdims=True)


def test_default_model_id_without_loading(cpu_model) -> None:  # type: ignore[no-untyped-def]
    assert default_model_id() == cpu_model.model_id
    assert cpu_model.model_id.startswith("dlib-resnet-v1-")


def test_model_id_changes_with_preprocessing(tmp_path: Path) -> None:
    spec = ModelSpec.from_settings(FaceSettings())
    assert model_id_for(spec) == model_id_for(spec)
    assert model_id_for(dataclasses.replace(spec, align_padding=0.3)) != model_id_for(spec)
    copy = tmp_path / "weights.dat"
    data = bytearray(spec.path.read_bytes())
    data[len(data) // 2] ^= 1  # one bit of one weight
    copy.write_bytes(bytes(data))
    assert model_id_for(dataclasses.replace(spec, path=copy)) != model_id_for(spec)


def test_settings_validation() -> None:
    with pytest.raises(ConfigError, match="dlib model fixes mean"):
        FaceSettings(mean="0,0,0")
    with pytest.raises(ConfigError, match="needs model_path"):
        FaceSettings(model="onnx")
    with pytest.raises(ConfigError, match="batch_size"):
        FaceSettings(batch_size=0)
    with pytest.raises(ConfigError, match="std"):
        FaceSettings(model="torchscript", model_path="m.pt", std="1,0,1")
    face = load_settings(None, {"DEDUP_FACE_BATCH_SIZE": "8", "DEDUP_FACE_MIN_INTER_EYE": "40"}).face
    assert face.batch_size == 8 and face.min_inter_eye == 40.0


def test_torchscript_model_plugs_in(tmp_path: Path, astronaut, preparer) -> None:  # type: ignore[no-untyped-def]
    module = TinyEmbedder().eval()
    path = tmp_path / "tiny.pt"
    save_torchscript(module, path)
    settings = FaceSettings(model="torchscript", model_path=str(path), **PLUG)  # type: ignore[arg-type]
    result = embed_photos([PhotoBytes("astronaut", encode(astronaut))], settings)
    assert result.dim == 16 and result.embeddings.shape == (1, 16)
    assert result.model_id.startswith("torchscript-") and result.model_id != default_model_id()
    from dedup.face.prepare import Preparer

    chip = Preparer(settings).prepare(PhotoBytes("a", encode(astronaut))).chip
    assert chip.shape == (64, 64, 3)
    np.testing.assert_allclose(result.embeddings, reference(module, chip[None]), atol=1e-6)
    assert result.templates_table().schema.field("embedding").type.list_size == 16


def test_wrong_output_dim_is_a_clear_error(tmp_path: Path, astronaut) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "tiny.pt"
    save_torchscript(TinyEmbedder().eval(), path)
    settings = FaceSettings(model="torchscript", model_path=str(path), **{**PLUG, "output_dim": 512})  # type: ignore[arg-type]
    with pytest.raises(FaceModelError, match="outputs 16 values, settings say output_dim 512"):
        embed_photos([PhotoBytes("astronaut", encode(astronaut))], settings)


def test_junk_model_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_text("not a model")
    with pytest.raises(FaceModelError, match="not a loadable TorchScript"):
        load_model(FaceSettings(model="torchscript", model_path=str(junk), **PLUG))  # type: ignore[arg-type]
    with pytest.raises(FaceModelError, match="not a loadable ONNX"):
        load_model(FaceSettings(model="onnx", model_path=str(junk), **PLUG))  # type: ignore[arg-type]


def export_onnx(module: TinyEmbedder, path: Path) -> None:
    """Write the module as an ONNX graph (Conv, Relu, GlobalAveragePool, Flatten, Gemm),
    built with the onnx helper API from the module's own weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    nodes = [
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1),
    ]
    inits = [
        numpy_helper.from_array(w["conv.weight"], "cw"), numpy_helper.from_array(w["conv.bias"], "cb"),
        numpy_helper.from_array(w["fc.weight"], "fw"), numpy_helper.from_array(w["fc.bias"], "fb"),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 64, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def test_onnx_model_plugs_in(tmp_path: Path, astronaut, grace) -> None:  # type: ignore[no-untyped-def]
    module = TinyEmbedder().eval()
    path = tmp_path / "tiny.onnx"
    export_onnx(module, path)
    settings = FaceSettings(model="onnx", model_path=str(path), **PLUG)  # type: ignore[arg-type]
    photos = [PhotoBytes("astronaut", encode(astronaut)), PhotoBytes("grace", encode(grace))]
    result = embed_photos(photos, settings)
    assert result.model_id.startswith("onnx-") and result.embeddings.shape == (2, 16)
    from dedup.face.prepare import Preparer

    prep = Preparer(settings)
    chips = np.stack([prep.prepare(p).chip for p in photos])
    np.testing.assert_allclose(result.embeddings, reference(module, chips), atol=1e-5)
