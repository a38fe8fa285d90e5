"""Shared helpers for the tests of the built-in RetinaFace and SFace: the shipped graphs run
by onnxruntime (the reference), and photo variants made from real photos."""

from __future__ import annotations

import functools
import io

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from PIL import Image

from dedup.face import packaged
from dedup.face.decode import DecodeLimits, decode_image
from dedup.face.onnx_weights import read_graph
from dedup.face.retinaface import BGR_MEAN, RetinaFace, load_shipped_net, onnx_bytes_from_weights_py

LIMITS = DecodeLimits(50_000_000, 50_000_000, ("JPEG", "PNG"))


@functools.lru_cache(maxsize=1)
def shipped_retinaface() -> RetinaFace:
    """The torch RetinaFace (CPU, float32), built once per test process."""
    return RetinaFace(load_shipped_net())


def _session(data: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


def retinaface_session() -> ort.InferenceSession:
    """The shipped RetinaFace graph as it is, in onnxruntime."""
    return _session(onnx_bytes_from_weights_py(packaged.read_verified(packaged.RETINAFACE_FILE)))


def retinaface_reference(session: ort.InferenceSession, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """onnxruntime's loc, face scores, landmark offsets for (N, H, W, 3) uint8 RGB."""
    x = (rgb[..., ::-1].astype(np.float32) - np.asarray(BGR_MEAN, dtype=np.float32)).transpose(0, 3, 1, 2)
    loc, conf, lmk = session.run(None, {"input": np.ascontiguousarray(x)})
    return loc, conf[..., 1], lmk


def folded_sface_session() -> ort.InferenceSession:
    """The shipped SFace graph with its DequantizeLinear(+Reshape) weight nodes replaced by
    their float32 values (onnxruntime >= 1.32 refuses the blocked form), batch dimension free."""
    data = packaged.read_verified(packaged.SFACE_FILE)
    graph = read_graph(data, "SFace")
    model = onnx.load_from_string(data)
    folded = {n.output[0] for n in model.graph.node if n.op_type in ("DequantizeLinear", "Reshape") and n.output[0] in graph.folded}
    nodes = [n for n in model.graph.node if n.output[0] not in folded]
    used = {i for n in nodes for i in n.input}
    inits = [t for t in model.graph.initializer if t.name in used]
    inits += [numpy_helper.from_array(graph.constants[name].astype(np.float32), name) for name in sorted(folded) if name in used]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
    inputs = [i for i in model.graph.input if i.name == "data"]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    return _session(model.SerializeToString())


def jpeg(rgb: np.ndarray, quality: int = 50, exif_orientation: int | None = None) -> bytes:
    """JPEG bytes of a photo; with an EXIF orientation tag when asked."""
    img = Image.fromarray(rgb)
    buf = io.BytesIO()
    if exif_orientation is None:
        img.save(buf, "JPEG", quality=quality)
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        img.save(buf, "JPEG", quality=quality, exif=exif.tobytes())
    return buf.getvalue()


def variants(rgb: np.ndarray) -> dict[str, np.ndarray]:
    """The photo rescaled, cropped, JPEG re-compressed and EXIF-rotated (decoded upright)."""
    h, w = rgb.shape[:2]
    small = np.asarray(Image.fromarray(rgb).resize((round(w * 0.6), round(h * 0.6)), Image.Resampling.BILINEAR))
    # Stored turned 90 degrees counter-clockwise with EXIF orientation 6: the decoder turns it back.
    sideways = np.ascontiguousarray(np.rot90(rgb, 1))
    return {
        "original": rgb,
        "rescaled": small,
        "cropped": np.ascontiguousarray(rgb[h // 10 : h - h // 7, w // 8 : w - w // 5]),
        "jpeg50": decode_image(jpeg(rgb, 50), LIMITS),
        "exif_rotated": decode_image(jpeg(sideways, 95, exif_orientation=6), LIMITS),
    }
