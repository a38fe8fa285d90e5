"""Face pipeline benchmarks: chips/s (torch vs dlib-bin), photos/s end to end, GPU batches.

    python benchmarks/face/bench_face.py cpu [--out benchmarks/face/results-cpu.json]
    python benchmarks/face/bench_face.py gpu [--out benchmarks/face/results-gpu.json]

``cpu``: (1) the embedding network alone on real 150 px chips, one thread each: torch in
batches vs dlib-bin's compute_face_descriptor chip by chip; (2) photos/s of the whole
pipeline (decode + detect + align + quality + embed) with 2 worker processes, and where
the time goes (each stage timed alone, one process). ``gpu``: chips/s at batch 64..1024 in
fp32 (TF32 off, the default) and with TF32 on, each with its largest difference from the
CPU fp32 templates. Results are JSON with the machine (CPU model, cores, GPU) named.
Photos are the test photos (scikit-image astronaut, matplotlib grace_hopper) and
transformed copies of them, written to a temporary folder and deleted afterwards.
"""

from __future__ import annotations

import os
import sys

if len(sys.argv) > 1 and sys.argv[1] == "cpu":
    # One thread per process for the per-chip comparison: set before torch/dlib load BLAS.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"

import argparse
import io
import json
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance


def machine() -> dict[str, object]:
    """CPU model and cores (lscpu), load average, library versions, GPU if any."""
    info: dict[str, object] = {"python": platform.python_version()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)", "Thread(s) per core", "Hypervisor vendor"):
                info[key.strip()] = value.strip()
    except (OSError, subprocess.CalledProcessError):
        info["Model name"] = platform.processor()
    info["cores_usable"] = len(os.sched_getaffinity(0))
    info["load_average_at_start"] = os.getloadavg()
    import dlib
    import torch

    info["torch"] = torch.__version__
    info["dlib"] = dlib.__version__
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def test_photos() -> list[bytes]:
    """16 encoded photos: the two test photos and transformed copies (sizes 410-768 px)."""
    import matplotlib.cbook
    import skimage.data

    grace = np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB"))
    out = []
    for rgb in (np.ascontiguousarray(skimage.data.astronaut()), grace):
        img = Image.fromarray(rgb)
        for scale in (0.8, 1.0, 1.25, 1.5):
            resized = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BILINEAR)
            for k, fmt in enumerate(("JPEG", "PNG")):
                buf = io.BytesIO()
                ImageEnhance.Brightness(resized).enhance(0.9 + 0.2 * k).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
                out.append(buf.getvalue())
    return out


def real_chips() -> np.ndarray:
    from dedup.config import FaceSettings
    from dedup.face.prepare import PhotoBytes, Preparer

    prep = Preparer(FaceSettings(workers=1))
    chips = [prep.prepare(PhotoBytes(str(i), b)).chip for i, b in enumerate(test_photos())]
    return np.stack([c for c in chips if c is not None])


# The machine these ran on is shared: single-process timings use this process's CPU time
# (time.process_time), which other processes' load does not inflate; wall times are
# reported beside them, with the load average, for the end-to-end run.
def best_of(fn, repeats: int, clock=time.process_time) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        t = clock()
        fn()
        times.append(clock() - t)
    return min(times)


def bench_chips(chips: np.ndarray, batch: int = 64) -> dict[str, object]:
    import dlib
    import torch

    from dedup.config import FaceSettings
    from dedup.face import assets
    from dedup.face.model import load_model

    torch.set_num_threads(1)
    model = load_model(FaceSettings(device="cpu"))
    batch_chips = np.concatenate([chips] * (batch // len(chips) + 1))[:batch]
    model.embed(batch_chips[:8], batch_size=8)  # warm-up
    torch_s = best_of(lambda: model.embed(batch_chips, batch_size=batch), 3) / batch
    rec = dlib.face_recognition_model_v1(str(assets.model_file(assets.RESNET)))
    few = [np.ascontiguousarray(c) for c in chips[:8]]
    rec.compute_face_descriptor(few[0])  # warm-up
    dlib_s = best_of(lambda: [rec.compute_face_descriptor(c) for c in few], 2) / len(few)
    ours = model.embed(np.stack(few), batch_size=8)
    ref = np.array([np.array(rec.compute_face_descriptor(c)) for c in few])
    return {
        "threads": 1, "torch_batch": batch, "clock": "process CPU time",
        "torch_ms_per_chip": round(torch_s * 1e3, 2), "dlib_ms_per_chip": round(dlib_s * 1e3, 2),
        "torch_chips_per_s": round(1 / torch_s, 1), "dlib_chips_per_s": round(1 / dlib_s, 1),
        "speedup": round(dlib_s / torch_s, 1), "max_abs_diff_vs_dlib": float(np.abs(ours - ref).max()),
    }


def bench_stages(photos: list[bytes], reps: int = 3) -> dict[str, float]:
    """CPU milliseconds per photo for each stage, one process, one thread."""
    from dedup.config import FaceSettings
    from dedup.face.align import face_chip
    from dedup.face.decode import DecodeLimits, decode_image
    from dedup.face.detect import DetectParams, FaceDetector
    from dedup.face.model import load_model
    from dedup.face.quality import measure

    s = FaceSettings(device="cpu")
    limits = DecodeLimits(s.max_bytes, s.max_pixels, s.format_list)
    detector = FaceDetector(DetectParams(s.detect_max_side, s.detect_upsample, s.multi_face_area_ratio, s.multi_face_min_score))
    model = load_model(s)
    rgbs = [decode_image(p, limits) for p in photos]
    found = [detector.detect(r) for r in rgbs]
    chips = [face_chip(r, f.shape, 150, 0.25) for r, f in zip(rgbs, found)]
    n = len(photos)
    times = {
        "decode": best_of(lambda: [decode_image(p, limits) for p in photos], reps),
        "detect_and_landmarks": best_of(lambda: [detector.detect(r) for r in rgbs], reps),
        "align": best_of(lambda: [face_chip(r, f.shape, 150, 0.25) for r, f in zip(rgbs, found)], reps),
        "quality": best_of(lambda: [measure(f.landmarks, c) for f, c in zip(found, chips)], reps),
        "embed_batched": best_of(lambda: model.embed(np.stack(chips), batch_size=64), reps),
    }
    return {k: round(v / n * 1e3, 2) for k, v in times.items()}


def bench_end_to_end(photos: list[bytes], copies: int, workers: int) -> dict[str, object]:
    import torch

    from dedup.config import FaceSettings
    from dedup.face import embed
    from dedup.face.model import load_model

    torch.set_num_threads(1)
    settings = FaceSettings(device="cpu", workers=workers)
    model = load_model(settings)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for c in range(copies):
            for i, data in enumerate(photos):
                path = Path(tmp) / f"{c:03d}_{i:02d}.img"
                path.write_bytes(data)
                paths.append(str(path))
        t = time.perf_counter()
        result = embed.embed_photos(paths, settings, model=model)
        seconds = time.perf_counter() - t
    return {
        "photos": len(paths), "workers": workers, "torch_threads": 1, "seconds": round(seconds, 2),
        "photos_per_s": round(len(paths) / seconds, 2), "accepted": len(result.accepted),
        "note": "includes starting the worker processes (about 1 s of CPU each)",
    }


def run_cpu(out: Path) -> dict[str, object]:
    photos = test_photos()
    report = {
        "benchmark": "face-cpu", "machine": machine(),
        "chips": bench_chips(real_chips()),
        "stages_ms_per_photo_cpu_time": bench_stages(photos),
        "end_to_end": bench_end_to_end(photos, copies=8, workers=2),
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def run_gpu(out: Path) -> dict[str, object]:
    import torch

    from dedup.config import FaceSettings
    from dedup.face.model import load_model, set_tf32

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU visible to torch")
    chips = real_chips()
    cpu_model = load_model(FaceSettings(device="cpu"))
    gpu_model = load_model(FaceSettings(device="cuda"))
    rows = []
    for batch in (64, 128, 256, 512, 1024):
        data = np.concatenate([chips] * (batch // len(chips) + 1))[:batch]
        reference = cpu_model.embed(data[:64], batch_size=64)
        for tf32 in (False, True):
            set_tf32(tf32)
            gpu_model.embed(data, batch_size=batch)  # warm-up (cuDNN picks algorithms)
            torch.cuda.synchronize()
            seconds = best_of(lambda data=data, batch=batch: (gpu_model.embed(data, batch_size=batch), torch.cuda.synchronize()),
                              5, time.perf_counter)
            diff = float(np.abs(gpu_model.embed(data[:64], batch_size=64) - reference).max())
            rows.append({"batch": batch, "tf32": tf32, "chips_per_s": round(batch / seconds, 1), "max_abs_diff_vs_cpu": diff})
    set_tf32(False)
    report = {"benchmark": "face-gpu", "machine": machine(), "rows": rows,
              "note": "includes host->device copies and preprocessing; chips are real 150 px chips"}
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["cpu", "gpu"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(__file__).with_name(f"results-{args.which}.json")
    report = run_cpu(out) if args.which == "cpu" else run_gpu(out)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
