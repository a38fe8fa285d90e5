"""dlib's 128-d face-recognition ResNet: the weight-file parser and a torch module.

The network is ``anet_type`` of dlib's ``dnn_face_recognition_ex.cpp``; the facts about it
and about the file are in ``shared/notes/dlib-resnet-format.md``. The parser reads every
byte of the file and checks the layer sequence against the architecture, so a file of a
different network is refused rather than loaded wrongly.

Each convolution is followed by an ``affine`` layer (batch norm folded at training time);
we fold that affine into the convolution's weights and bias once at load time, which
changes nothing but float rounding (parity with dlib is tested to 1e-5, measured ~1e-6).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dedup.errors import FaceModelError
from dedup.face.dlib_format import DlibReader

INPUT_SIZE = 150
DESCRIPTOR_DIM = 128
# Per-channel means (R, G, B) that dlib subtracts; it then divides by 256 (not a std).
DLIB_MEAN = (122.782, 117.001, 104.298)
DLIB_SCALE = 256.0

# Residual stages from the input end: (channels, blocks, first block downsamples).
_STAGES = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))
_N_RECORDS = 108
_N_VERSIONS = 130


@dataclass(frozen=True)
class ConvRecord:
    """One ``con`` layer as stored: filters (out, in, kh, kw), bias, stride, padding."""

    weight: np.ndarray
    bias: np.ndarray
    stride: int
    padding: int


@dataclass(frozen=True)
class AffineRecord:
    """One ``affine`` layer (conv mode): per-channel gamma and beta."""

    gamma: np.ndarray
    beta: np.ndarray


@dataclass(frozen=True)
class PoolRecord:
    """A ``max_pool`` or ``avg_pool`` layer."""

    kind: str  # "max" or "avg"
    size: int
    stride: int
    padding: int


@dataclass(frozen=True)
class DlibResNetFile:
    """Everything read from the file: input preprocessing and the layers, input end first."""

    mean: tuple[float, float, float]
    input_size: int
    layers: tuple[object, ...]  # ConvRecord | AffineRecord | PoolRecord | "relu" | "add_prev"
    fc_weight: np.ndarray  # (128, 256): torch Linear layout


def _read_con(r: DlibReader) -> ConvRecord:
    params = r.tensor().reshape(-1)
    n_filters, nr, nc, stride_y, stride_x, pad_y, pad_x = (r.integer() for _ in range(7))
    w_shape = r.alias_shape()
    b_shape = r.alias_shape()
    for _ in range(4):  # learning-rate and weight-decay multipliers: training only
        r.scalar()
    if stride_y != stride_x or pad_y != pad_x or nr != nc:
        raise FaceModelError(f"{r.name}: non-square convolution ({nr}x{nc}, stride {stride_y}/{stride_x}) is not dlib's ResNet")
    if w_shape[0] != n_filters or w_shape[2:] != (nr, nc) or b_shape[1] != n_filters:
        raise FaceModelError(f"{r.name}: convolution shapes disagree ({w_shape}, {b_shape}, {n_filters} filters)")
    n_w = int(np.prod(w_shape))
    if params.size != n_w + n_filters:
        raise FaceModelError(f"{r.name}: convolution has {params.size} parameters, expected {n_w + n_filters}")
    return ConvRecord(params[:n_w].reshape(w_shape).copy(), params[n_w:].copy(), stride_y, pad_y)


def _read_affine(r: DlibReader) -> AffineRecord:
    params = r.tensor().reshape(-1)
    g_shape = r.alias_shape()
    r.alias_shape()
    mode = r.integer()
    k = int(np.prod(g_shape))
    if mode != 0 or params.size != 2 * k:
        raise FaceModelError(f"{r.name}: affine layer in mode {mode} with {params.size} parameters is not dlib's ResNet")
    return AffineRecord(params[:k].copy(), params[k:].copy())


def _read_pool(r: DlibReader, kind: str) -> PoolRecord:
    nr, nc, stride_y, stride_x, pad_y, pad_x = (r.integer() for _ in range(6))
    if nr != nc or stride_y != stride_x or pad_y != pad_x:
        raise FaceModelError(f"{r.name}: non-square pooling is not dlib's ResNet")
    return PoolRecord(kind, nr, stride_y, pad_y)


def _read_fc(r: DlibReader) -> np.ndarray:
    n_out, n_in = r.integer(), r.integer()
    params = r.tensor().reshape(-1)
    w_shape = r.alias_shape()
    r.alias_shape()
    bias_mode = r.integer()
    for _ in range(4):
        r.scalar()
    if bias_mode != 1 or w_shape[:2] != (n_in, n_out) or params.size != n_in * n_out:
        raise FaceModelError(f"{r.name}: fc layer {w_shape} (bias mode {bias_mode}) is not dlib's fc_no_bias")
    # Stored (in, out) with y = x . W; torch's Linear wants (out, in).
    return params.reshape(n_in, n_out).T.copy()


def parse_dlib_resnet(path: str | Path) -> DlibResNetFile:
    """Read ``dlib_face_recognition_resnet_model_v1.dat`` into layer records (no torch)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FaceModelError(f"cannot read face model {path}: {exc.strerror or exc}") from None
    r = DlibReader(data, str(path))
    r.integer()  # loss layer version
    r.expect_string("loss_metric_2")
    r.scalar(), r.scalar()  # margin, distance threshold: training only
    for _ in range(_N_VERSIONS):  # add_layer / tag / skip versions, output end inwards
        r.integer()
    r.expect_string("input_rgb_image_sized")
    mean = (r.scalar(), r.scalar(), r.scalar())
    nr, nc = r.integer(), r.integer()
    if nr != nc:
        raise FaceModelError(f"{path}: input {nr}x{nc} is not square")
    layers: list[object] = []
    fc_weight: np.ndarray | None = None
    for i in range(_N_RECORDS):
        tag = r.expect_string("con_4", "affine_", "relu_", "max_pool_2", "avg_pool_2", "add_prev_", "fc_2")
        if tag == "con_4":
            layers.append(_read_con(r))
        elif tag == "affine_":
            layers.append(_read_affine(r))
        elif tag == "relu_":
            layers.append("relu")
        elif tag == "add_prev_":
            layers.append("add_prev")
        elif tag == "max_pool_2":
            layers.append(_read_pool(r, "max"))
        elif tag == "avg_pool_2":
            layers.append(_read_pool(r, "avg"))
        else:
            fc_weight = _read_fc(r)
        for _ in range(3):  # per-layer state flags
            r.boolean()
        for _ in range(3):  # empty gradient/output tensors
            r.tensor()
        if i == 0:
            r.integer()  # sample_expansion_factor of the innermost layer
    if not r.at_end():
        raise FaceModelError(f"{path}: {len(r.data) - r.pos} unexpected bytes after the last layer")
    if fc_weight is None or tuple(fc_weight.shape) != (DESCRIPTOR_DIM, 256):
        raise FaceModelError(f"{path}: no 256->128 fc layer at the output end")
    return DlibResNetFile((mean[0], mean[1], mean[2]), nr, tuple(layers), fc_weight)


def _fold(conv: ConvRecord, affine: AffineRecord) -> nn.Conv2d:
    out_ch, in_ch, k, _ = conv.weight.shape
    if affine.gamma.size != out_ch:
        raise FaceModelError(f"affine of {affine.gamma.size} channels after a {out_ch}-filter convolution")
    layer = nn.Conv2d(in_ch, out_ch, k, stride=conv.stride, padding=conv.padding, bias=True)
    gamma = affine.gamma.astype(np.float64)
    weight = conv.weight.astype(np.float64) * gamma[:, None, None, None]
    bias = conv.bias.astype(np.float64) * gamma + affine.beta.astype(np.float64)
    assert layer.bias is not None  # bias=True above
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight.astype(np.float32)))
        layer.bias.copy_(torch.from_numpy(bias.astype(np.float32)))
    return layer


def _add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the result has the larger size in every dimension; the smaller
    input is zero-padded at the end (extra channels, bottom rows, right columns)."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))
    a = F.pad(a, (0, w - a.shape[3], 0, h - a.shape[2], 0, c - a.shape[1]))
    b = F.pad(b, (0, w - b.shape[3], 0, h - b.shape[2], 0, c - b.shape[1]))
    return a + b


class _Block(nn.Module):
    """ares / ares_down: relu(conv-relu-conv(x) + shortcut(x)); the shortcut of a
    down-sampling block is a 2x2 average pool, channels zero-padded by add_prev."""

    def __init__(self, conv1: nn.Conv2d, conv2: nn.Conv2d, down: bool) -> None:
        super().__init__()
        self.conv1 = conv1
        self.conv2 = conv2
        self.down = down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_add_prev(y, shortcut))


class DlibResNet(nn.Module):
    """The network on preprocessed input: (N, 3, 150, 150) float -> (N, 128) raw descriptors."""

    def __init__(self, stem: nn.Conv2d, blocks: list[_Block], fc_weight: np.ndarray) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(fc_weight.shape[1], fc_weight.shape[0], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(fc_weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))


def build_dlib_resnet(parsed: DlibResNetFile) -> DlibResNet:
    """Turn parsed records into the torch module, checking they follow ``anet_type``."""
    layers = list(parsed.layers)

    def take(kind: type | str) -> object:
        if not layers:
            raise FaceModelError("dlib ResNet file ends early: layer sequence is not anet_type")
        item = layers.pop(0)
        ok = item == kind if isinstance(kind, str) else isinstance(item, kind)
        if not ok:
            raise FaceModelError(f"dlib ResNet layer sequence is not anet_type: expected {kind}, found {item!r:.60}")
        return item

    def conv_affine() -> nn.Conv2d:
        conv = take(ConvRecord)
        affine = take(AffineRecord)
        return _fold(conv, affine)  # type: ignore[arg-type]

    stem = conv_affine()
    take("relu")
    pool = take(PoolRecord)
    if (pool.kind, pool.size, pool.stride) != ("max", 3, 2):  # type: ignore[attr-defined]
        raise FaceModelError("dlib ResNet: expected a 3x3/2 max pool after the first convolution")
    blocks: list[_Block] = []
    for channels, count, first_down in _STAGES:
        for j in range(count):
            down = first_down and j == 0
            c1 = conv_affine()
            take("relu")
            c2 = conv_affine()
            if down:
                avg = take(PoolRecord)
                if (avg.kind, avg.size, avg.stride) != ("avg", 2, 2):  # type: ignore[attr-defined]
                    raise FaceModelError("dlib ResNet: expected a 2x2/2 average-pool shortcut")
            take("add_prev")
            take("relu")
            if c2.out_channels != channels or c1.stride != ((2,) * 2 if down else (1,) * 2):
                raise FaceModelError("dlib ResNet: block shapes are not anet_type")
            blocks.append(_Block(c1, c2, down))
    final = take(PoolRecord)
    if final.kind != "avg":  # type: ignore[attr-defined]
        raise FaceModelError("dlib ResNet: expected avg_pool_everything before the fc layer")
    if layers:
        raise FaceModelError(f"dlib ResNet: {len(layers)} layers left over")
    return DlibResNet(stem, blocks, parsed.fc_weight).eval()


def preprocess_dlib(chips: torch.Tensor, mean: tuple[float, float, float] = DLIB_MEAN) -> torch.Tensor:
    """uint8 RGB chips (N, 3, H, W), on any device -> float32: (pixel - mean) / 256, as dlib."""
    m = torch.tensor(mean, dtype=torch.float32, device=chips.device).view(1, 3, 1, 1)
    return (chips.float() - m) / DLIB_SCALE
