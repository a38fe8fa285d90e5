"""Read the constant tensors (weights) of an ONNX graph into numpy, folding what is constant.

The built-in models' weights ship as ONNX graphs; we run them as torch modules of our own,
so only their numbers are needed. Besides plain initializers, the shipped graphs compute
some weights from constants: ``Identity`` copies (RetinaFace's export duplicates a shared
convolution), and ``DequantizeLinear`` + ``Reshape`` (SFace is int8 block-quantised). Those
are folded here to float32 in numpy, so the graph's own quantisation is applied exactly once
and no ONNX runtime is involved. Parsing uses the ``onnx`` package (protobuf only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dedup.errors import FaceModelError, ModelPackageError


@dataclass(frozen=True)
class OnnxNode:
    """One graph node: its type, inputs, outputs, attributes (plain Python values)."""

    op: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any]


@dataclass(frozen=True)
class OnnxGraph:
    """A graph's nodes in order and every tensor that is constant, folded to numpy."""

    nodes: tuple[OnnxNode, ...]
    constants: dict[str, np.ndarray]
    folded: frozenset[str]  # names of constants computed here (not stored in the file)


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ModelPackageError("the built-in RetinaFace and SFace models need the onnx package to read their weights:"
                                " pip install 'dedup[models]'") from None
    return onnx


def dequantize_blocked(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int, block_size: int) -> np.ndarray:
    """ONNX DequantizeLinear: ``(x - zero_point) * scale``, float32.

    Per-tensor (scalar scale), per-axis (1-d scale along ``axis``) or blocked (opset 21:
    ``scale`` has x's shape except ``ceil(x.shape[axis] / block_size)`` along ``axis``, each
    scale covering ``block_size`` consecutive elements).
    """
    xf = x.astype(np.float32)
    zp = np.zeros_like(scale, dtype=np.float32) if zero_point is None else zero_point.astype(np.float32)
    if scale.ndim == 0 or scale.size == 1 and block_size == 0:
        return (xf - zp.reshape(())) * scale.astype(np.float32).reshape(())
    axis = axis % x.ndim
    if block_size == 0:
        shape = [1] * x.ndim
        shape[axis] = scale.size
        return (xf - zp.reshape(shape)) * scale.astype(np.float32).reshape(shape)
    if scale.ndim != x.ndim or -(-x.shape[axis] // block_size) != scale.shape[axis]:
        raise FaceModelError(
            f"blocked DequantizeLinear: scale {scale.shape} does not fit {x.shape} in blocks of {block_size} along axis {axis}")
    s = np.repeat(scale.astype(np.float32), block_size, axis=axis)
    z = np.repeat(zp, block_size, axis=axis)
    index = [slice(None)] * x.ndim
    index[axis] = slice(0, x.shape[axis])
    return (xf - z[tuple(index)]) * s[tuple(index)]


def read_graph(data: bytes, what: str) -> OnnxGraph:
    """Parse ONNX bytes and fold every constant-only Identity/Reshape/DequantizeLinear/Constant."""
    onnx = _onnx()
    from onnx import numpy_helper

    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own DecodeError
        raise FaceModelError(f"{what}: not an ONNX model ({type(exc).__name__})") from None
    consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    nodes: list[OnnxNode] = []
    folded: set[str] = set()
    for n in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        node = OnnxNode(n.op_type, n.name, tuple(n.input), tuple(n.output), attrs)
        nodes.append(node)
        value = _fold(node, consts, numpy_helper)
        if value is not None:
            consts[node.outputs[0]] = value
            folded.add(node.outputs[0])
    return OnnxGraph(tuple(nodes), consts, frozenset(folded))


def _fold(node: OnnxNode, consts: dict[str, np.ndarray], numpy_helper: Any) -> np.ndarray | None:
    if node.op == "Constant" and "value" in node.attrs:
        return numpy_helper.to_array(node.attrs["value"])
    ins = [i for i in node.inputs if i]
    if not ins or not all(i in consts for i in ins):
        return None
    if node.op == "Identity":
        return consts[ins[0]]
    if node.op == "Reshape":
        return consts[ins[0]].reshape(tuple(int(d) for d in consts[ins[1]]))
    if node.op == "DequantizeLinear":
        zp = consts[node.inputs[2]] if len(node.inputs) > 2 and node.inputs[2] else None
        return dequantize_blocked(consts[ins[0]], consts[ins[1]], zp, int(node.attrs.get("axis", 1)), int(node.attrs.get("block_size", 0)))
    return None


def nodes_of(graph: OnnxGraph, op: str) -> list[OnnxNode]:
    """The graph's nodes of one type, in order."""
    return [n for n in graph.nodes if n.op == op]


def const(graph: OnnxGraph, name: str, what: str) -> np.ndarray:
    """A constant tensor by name, as float32, or a FaceModelError naming the model."""
    if name not in graph.constants:
        raise FaceModelError(f"{what}: tensor {name!r} is not a constant of the graph")
    return np.array(graph.constants[name], dtype=np.float32)  # a writable copy (torch wants one)
