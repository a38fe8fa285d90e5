"""SFace in torch against the shipped graph (weights folded) in onnxruntime; dequantisation
against onnx's reference evaluator; ArcFace alignment; batching; model ids."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from dedup.config import FaceSettings
from dedup.face import PhotoBytes, default_model_id, embed_photos, packaged
from dedup.face.arcface_align import ARCFACE_TEMPLATE, arcface_chip, similarity_transform
from dedup.face.model import ModelSpec, load_model, model_id_for
from dedup.face.onnx_weights import dequantize_blocked
from tests.face.builtin_models import folded_sface_session, shipped_retinaface, variants
from tests.support.photos import encode

SFACE = FaceSettings(workers=1, device="cpu", detector="retinaface", model="sface")


@pytest.fixture(scope="module")
def sface_model():  # type: ignore[no-untyped-def]
    return load_model(SFACE)


@pytest.fixture(scope="module")
def chips(astronaut, grace) -> np.ndarray:  # type: ignore[no-untyped-def]
    """ArcFace crops of the real photos and their variants, from RetinaFace's landmarks."""
    det = shipped_retinaface()
    out = []
    for photo in (astronaut, grace):
        for rgb in variants(photo).values():
            face = det.detect([rgb], 0.5, 640)[0][0]
            out.append(arcface_chip(rgb, face.landmarks))
    return np.stack(out)


def test_dequantisation_matches_onnx_reference() -> None:
    """Our numpy DequantizeLinear (blocked) against onnx's own evaluator, on the file's tensors."""
    model = onnx.load_from_string(packaged.read_verified(packaged.SFACE_FILE))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    checked = 0
    for node in model.graph.node:
        wanted = ("conv_2_conv2d_weight_quantized_node", "pre_fc1_bias_quantized_node", "conv_5_dw_conv2d_weight_quantized_node")
        if node.op_type != "DequantizeLinear" or node.name not in wanted:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        x, s, z = (inits[i] for i in node.input)
        one = helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"], **attrs)
        graph = helper.make_graph([one], "g", [], [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                                  [numpy_helper.from_array(x, "x"), numpy_helper.from_array(s, "s"), numpy_helper.from_array(z, "z")])
        ref = ReferenceEvaluator(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])).run(None, {})[0]
        ours = dequantize_blocked(x, s, z, attrs["axis"], attrs["block_size"])
        assert attrs["block_size"] > 1 and np.array_equal(ours, ref), node.name
        checked += 1
    assert checked == 3


def test_parity_with_onnxruntime_on_the_folded_graph(sface_model, chips) -> None:  # type: ignore[no-untyped-def]
    session = folded_sface_session()
    ref = session.run(None, {"data": chips.transpose(0, 3, 1, 2).astype(np.float32)})[0]
    ours = sface_model.embed(chips, 4)
    cos = (ref * ours).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(ours, axis=1)
    assert cos.min() >= 0.99999, cos


def test_similarity_transform_recovers_a_known_one() -> None:
    rng = np.random.default_rng(3)
    angle, scale, shift = 0.4, 1.7, np.array([12.0, -30.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = rng.normal(size=(5, 2)) * 40 + 200
    m = similarity_transform(src, src @ (scale * rot).T + shift)
    assert np.allclose(m[:, :2], scale * rot) and np.allclose(m[:, 2], shift)


def test_arcface_chip_puts_landmarks_on_the_template() -> None:
    """A photo whose pixels encode their coordinates: the chip samples where the template says."""
    yy, xx = np.mgrid[0:300, 0:400]
    photo = np.stack([xx % 256, yy % 256, np.zeros_like(xx)], axis=-1).astype(np.uint8)
    chip = arcface_chip(photo, ARCFACE_TEMPLATE + [100.0, 50.0])
    assert chip.shape == (112, 112, 3)
    assert abs(int(chip[51, 38, 0]) - 138) <= 1 and abs(int(chip[51, 38, 1]) - 101) <= 1
    assert abs(int(chip[0, 0, 0]) - 100) <= 1 and abs(int(chip[0, 0, 1]) - 50) <= 1


def test_a_batch_gives_the_same_templates_as_one_by_one(sface_model, astronaut, grace) -> None:  # type: ignore[no-untyped-def]
    photos = [PhotoBytes(f"p{i}", encode(rgb)) for i, rgb in enumerate((astronaut, grace, *list(variants(grace).values())[1:4]))]
    together = embed_photos(photos, SFACE, model=sface_model)
    assert len(together.accepted) == len(photos)
    for i, photo in enumerate(photos):
        alone = embed_photos([photo], SFACE, model=sface_model)
        assert np.abs(alone.embeddings[0] - together.embeddings[i]).max() < 1e-5


def test_each_combination_has_its_own_model_id() -> None:
    ids = {
        "dlib+hog": model_id_for(ModelSpec.from_settings(FaceSettings())),
        "dlib+retinaface": model_id_for(ModelSpec.from_settings(FaceSettings(detector="retinaface"))),
        "sface+retinaface": model_id_for(ModelSpec.from_settings(SFACE)),
    }
    assert len(set(ids.values())) == 3
    assert ids["dlib+hog"] == default_model_id() and ids["sface+retinaface"].startswith("sface-")


def test_sface_settings_are_checked() -> None:
    from dedup.errors import ConfigError

    with pytest.raises(ConfigError, match="detector = retinaface"):
        FaceSettings(model="sface")
    with pytest.raises(ConfigError, match="detector must be"):
        FaceSettings(detector="mtcnn")


def test_sface_embeds_on_cpu_in_float32(sface_model, chips) -> None:  # type: ignore[no-untyped-def]
    out = sface_model.embed(chips[:2], 2)
    assert out.dtype == np.float32 and out.shape == (2, 128) and sface_model.device == "cpu"
    assert all(p.dtype == torch.float32 for p in sface_model.module.parameters())


def test_gpu_warp_matches_the_cpu_crop(astronaut, grace) -> None:  # type: ignore[no-untyped-def]
    """warp_batch (grid_sample, the GPU path) cuts the same crop as arcface_chip (Pillow)."""
    from dedup.face.arcface_align import arcface_matrix, warp_batch

    det = shipped_retinaface()
    for photo in (astronaut, grace):
        landmarks = det.detect([photo], 0.5, 1024)[0][0].landmarks
        cpu = arcface_chip(photo, landmarks).astype(np.float64)
        images = torch.from_numpy(np.array(photo)).permute(2, 0, 1)[None].float()
        gpu = warp_batch(images, np.stack([arcface_matrix(landmarks)]))[0].permute(1, 2, 0).numpy()
        assert np.abs(cpu - gpu).max() <= 1.01 and np.abs(cpu - gpu).mean() < 0.6
