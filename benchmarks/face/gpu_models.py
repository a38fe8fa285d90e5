"""The built-in models in GPU batches: photos/s (RetinaFace -> ArcFace warp -> SFace, all on the
device) and chips/s (SFace, dlib ResNet), at batch 64-1024, float32 and float16.

    PYTHONPATH=. python benchmarks/face/gpu_models.py                 # on a GPU machine
    PYTHONPATH=. python benchmarks/face/gpu_models.py --smoke         # tiny run, CPU is fine

Photos: the real test photos (tests/support/real_photos.py, plus astronaut and Grace Hopper),
each resized to 640 x 480 (one size, so every batch is one stacked tensor, as the detector
buckets by size). Decoding is not timed (done once on the CPU; in production CPU workers do
it). Each row: the batch run ``--repeats`` times after one warm-up, CUDA-synchronised wall
time, and for float16 the largest difference of the templates from float32's.

``pipeline`` rows time what ``dedup embed`` / ``dedup run`` do on a GPU with
``face.detector = retinaface``: ``embed_photos_on`` (dedup/face/embed.py) on JPEG files of the
photos at 640 x 480, decoding included (CPU worker processes, one per core), detection, the
ArcFace warp (SFace) and embedding in device batches of ``face.batch_size``, float32, TF32 off
(the defaults), for SFace and dlib, wall photos/s. Writes
``benchmarks/results/face-models-gpu.json`` (``--out``) with the device named.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.face.bench_face import machine
from dedup.config import FaceSettings
from dedup.face import assets
from dedup.face.arcface_align import arcface_matrix, warp_batch
from dedup.face.decode import DecodeLimits, decode_image
from dedup.face.dlib_resnet import build_dlib_resnet, parse_dlib_resnet, preprocess_dlib
from dedup.face.embed import embed_photos_on
from dedup.face.model import load_model
from dedup.face.retinaface import RetinaFace, load_shipped_net
from dedup.face.sface import load_shipped_net as load_sface
from tests.support.real_photos import real_photos, with_other_people

LIMITS = DecodeLimits(50_000_000, 50_000_000, ("JPEG", "PNG"))


def photo_batch(n: int, height: int, width: int) -> np.ndarray:
    """(n, height, width, 3) uint8: the real photos resized, repeated to fill the batch."""
    base = [np.asarray(Image.fromarray(decode_image(p.path.read_bytes(), LIMITS)).resize((width, height), Image.Resampling.BILINEAR))
            for p in with_other_people(real_photos()).values()]
    return np.stack([base[i % len(base)] for i in range(n)])


def timed(fn, repeats: int, device: str) -> float:  # type: ignore[no-untyped-def]
    """Seconds per call (after one warm-up call)."""
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def photos_to_templates(det: RetinaFace, sface: torch.nn.Module, photos: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The whole path on the device: detect, best face per photo, warp, embed, normalise."""
    loc, scores, lmk = det.net(((photos.flip(1).float() - det._mean)).to(dtype))
    from dedup.face.retinaface import decode

    h, w = photos.shape[2:]
    boxes, pts = decode(loc.float(), lmk.float(), det._anchors(h, w))
    best = scores.float().argmax(dim=1)
    points = pts[torch.arange(len(best), device=best.device), best] * torch.tensor([w, h], device=best.device)
    matrices = np.stack([arcface_matrix(p) for p in points.cpu().numpy().astype(np.float64)])
    chips = warp_batch(photos, matrices)
    out = sface(chips.to(dtype)).float()
    return out / out.norm(dim=1, keepdim=True)


def pipeline_rows(device: str, photos_np: np.ndarray, batches: tuple[int, ...], n_photos: int, workers: int) -> list[dict]:
    """Wall photos/s of ``embed_photos_on`` (the production batched path) on JPEG photo files."""
    import io
    import tempfile

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        paths: list[str] = []
        for i in range(n_photos):
            buf = io.BytesIO()
            Image.fromarray(photos_np[i % len(photos_np)]).save(buf, "JPEG", quality=90)
            path = Path(tmp) / f"p{i:05d}.jpg"
            path.write_bytes(buf.getvalue())
            paths.append(str(path))
        for model_name in ("sface", "dlib"):
            for batch in batches:
                settings = FaceSettings(detector="retinaface", model=model_name, batch_size=batch, device=device, workers=workers)
                model = load_model(settings)
                embed_photos_on(paths[: min(len(paths), 2 * batch)], settings, device, model=model)  # warm-up
                if device == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                result = embed_photos_on(paths, settings, device, model=model)
                seconds = time.perf_counter() - start
                row = {"pipeline": "embed_photos_on", "model": model_name, "batch": batch, "photos": n_photos,
                       "decode_workers": workers, "accepted": len(result.accepted), "photos_per_s": round(n_photos / seconds, 1)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="batch 2 and 4 at 160 x 128, once: checks the script runs (CPU is fine)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/face-models-gpu.json"))
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.smoke:
        sys.exit("no GPU: run with --smoke to check the script on a CPU")
    batches = (2, 4) if args.smoke else (64, 128, 256, 512, 1024)
    height, width = (128, 160) if args.smoke else (480, 640)
    repeats = 1 if args.smoke else args.repeats
    dtypes = {"fp32": torch.float32} if device == "cpu" else {"fp32": torch.float32, "fp16": torch.float16}
    torch.backends.cudnn.benchmark = device == "cuda"
    photos_np = photo_batch(max(batches), height, width)
    photos_all = torch.from_numpy(photos_np).to(device).permute(0, 3, 1, 2).contiguous()
    report: dict[str, object] = {"benchmark": "face-models-gpu", "machine": machine(), "device": device,
                                 "photo_size": [height, width], "smoke": args.smoke, "rows": []}
    dlib_net = build_dlib_resnet(parse_dlib_resnet(assets.model_file(assets.RESNET))).to(device)
    reference: dict[int, torch.Tensor] = {}
    for name, dtype in dtypes.items():
        det = RetinaFace(load_shipped_net(), device=device, half=dtype == torch.float16)
        sface = load_sface().to(device=device, dtype=dtype).eval()
        dlib_d = dlib_net.to(dtype=dtype).eval()
        for batch in batches:
            photos = photos_all[:batch]
            with torch.inference_mode():
                templates = photos_to_templates(det, sface, photos, dtype)
                chips = torch.rand(batch, 3, 112, 112, device=device) * 255
                chips150 = (torch.rand(batch, 3, 150, 150, device=device) * 255).to(torch.uint8)
                runs = {
                    "per_photo": lambda det=det, sface=sface, photos=photos, dtype=dtype: photos_to_templates(det, sface, photos, dtype),
                    "det_only": lambda det=det, photos=photos, dtype=dtype: det.net((photos.flip(1).float() - det._mean).to(dtype)),
                    "sface": lambda sface=sface, chips=chips, dtype=dtype: sface(chips.to(dtype)),
                    "dlib": lambda net=dlib_d, chips=chips150, dtype=dtype: net(preprocess_dlib(chips).to(dtype)),
                }
                seconds = {key: timed(fn, repeats, device) for key, fn in runs.items()}
            per_photo, det_only, sface_s, dlib_s = (seconds[k] for k in ("per_photo", "det_only", "sface", "dlib"))
            row = {
                "dtype": name, "batch": batch,
                "photos_per_s_end_to_end": round(batch / per_photo, 1),
                "detector_photos_per_s": round(batch / det_only, 1),
                "sface_chips_per_s": round(batch / sface_s, 1),
                "dlib_chips_per_s": round(batch / dlib_s, 1),
            }
            if name == "fp32":
                reference[batch] = templates
            else:
                row["max_template_diff_vs_fp32"] = float((templates - reference[batch]).abs().max())
                row["min_cosine_vs_fp32"] = float((templates * reference[batch]).sum(1).min())
            report["rows"].append(row)  # type: ignore[union-attr]
            print(json.dumps(row), flush=True)
    workers = 1 if args.smoke else max(1, len(os.sched_getaffinity(0)))
    pipeline_batches = (4,) if args.smoke else (64, 256, 1024)
    # Always 640 x 480 (the smoke's 160 x 128 photos hold faces too small to pass).
    pipeline_photos = photo_batch(9, 480, 640)
    report["pipeline"] = pipeline_rows(device, pipeline_photos, pipeline_batches, 8 if args.smoke else 4096, workers)
    if device == "cuda":
        report["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
