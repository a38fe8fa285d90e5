"""The batched photo -> template steps on a torch device: detection, alignment, embedding.

:func:`dedup.face.embed.embed_photos_on` feeds it groups of photos decoded by CPU workers
(:class:`~dedup.face.prepare.Decoded`). Per group: RetinaFace on the detection-size copies,
stacked by size (no padding, so each photo's detections are its own); the no-face retry at
twice the resolution, batched the same way; the same face rules, dlib landmarks and quality
checks as the per-photo path (:class:`~dedup.face.prepare.Preparer`, CPU, about 2 ms per
photo); SFace's ArcFace crops warped in one ``grid_sample`` batch; the model's batches. The
device is a parameter, so the same code runs on a CPU in the tests, against the per-photo
path, and on a GPU in production.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dedup.config import FaceSettings
from dedup.face.arcface_align import arcface_matrix, warp_photos
from dedup.face.detect_retina import RetinaDetector, retry_scale, upscaled
from dedup.face.model import FaceModel
from dedup.face.prepare import Decoded, Prepared, Preparer, failed, make_detector
from dedup.face.retinaface import Face

# A retry photo (at most twice retinaface_max_side) is never shrunk again.
_NO_SHRINK = 1 << 30


class DeviceBatch:
    """RetinaFace on ``device`` with the per-photo rules, and the model that embeds the crops."""

    def __init__(self, settings: FaceSettings, model: FaceModel, device: str) -> None:
        detector = make_detector(settings, device)
        assert isinstance(detector, RetinaDetector)  # the batched path is RetinaFace's
        self.settings = settings
        self.model = model
        self.device = device
        self.retina = detector
        self.preparer = Preparer(settings, detector=detector)

    def run(self, group: Sequence[tuple[int, Decoded]]) -> list[tuple[int, Prepared, np.ndarray | None]]:
        """``(index, Prepared without crop, raw embedding or None)`` for every photo of the group."""
        s = self.settings
        out: dict[int, Prepared] = {}
        ok: list[tuple[int, Decoded]] = []
        for i, d in group:
            if d.reason is None:
                ok.append((i, d))
            else:
                out[i] = Prepared(d.source, d.reason, d.detail, None, 0.0, None, None)
        faces = self._faces([d for _, d in ok])
        cut_here = s.model != "sface"  # SFace's ArcFace crop is warped on the device below
        chips: dict[int, np.ndarray] = {}
        to_warp: list[tuple[int, np.ndarray, np.ndarray]] = []
        for (i, d), found_faces in zip(ok, faces):
            assert d.rgb is not None
            try:
                found = self.retina.decide(d.rgb, found_faces)
            except Exception as exc:  # noqa: BLE001 - one odd photo must not stop the batch
                out[i] = failed(d.source, exc)
                continue
            prep = self.preparer.finish(d.source, d.rgb, found, with_chip=cut_here)
            out[i] = prep
            if prep.reason is None:
                if prep.chip is not None:
                    chips[i] = prep.chip
                else:
                    assert found.points5 is not None  # RetinaFace always gives its 5 points
                    to_warp.append((i, d.rgb, arcface_matrix(found.points5)))
        for start in range(0, len(to_warp), s.batch_size):
            part = to_warp[start : start + s.batch_size]
            for (i, _, _), chip in zip(part, warp_photos([p for _, p, _ in part], [m for _, _, m in part], self.device)):
                chips[i] = chip
        order = sorted(chips)
        vectors = self.model.embed(np.stack([chips[i] for i in order]), s.batch_size) if order else None
        raw = {i: vectors[k] for k, i in enumerate(order)} if vectors is not None else {}
        return [(i, _without_chip(out[i]), raw.get(i)) for i, _ in group]

    def _faces(self, decoded: Sequence[Decoded]) -> list[list[Face]]:
        """Detections of each photo in photo pixels, with the no-face retry, both passes batched by size."""
        s = self.settings
        det = self.retina.detector
        smalls = [d.small for d in decoded]
        assert all(x is not None for x in smalls)
        # Already shrunk to retinaface_max_side by the decoder, so detect() stacks them as they are.
        first = det.detect(smalls, s.retinaface_min_score, s.retinaface_max_side, s.batch_size)  # type: ignore[arg-type]
        faces = [[Face(f.box / d.scale, f.score, f.landmarks / d.scale) for f in found] for d, found in zip(decoded, first)]
        retry: list[tuple[int, float]] = []
        for k, d in enumerate(decoded):
            assert d.rgb is not None
            second = retry_scale(d.rgb.shape, s.retinaface_max_side) if not faces[k] else None
            if second is not None:
                retry.append((k, second))
        if retry:
            bigs = [upscaled(decoded[k].rgb, second) for k, second in retry]  # type: ignore[arg-type]
            again = det.detect(bigs, s.retinaface_min_score, _NO_SHRINK, s.batch_size)
            for (k, second), found in zip(retry, again):
                faces[k] = [Face(f.box / second, f.score, f.landmarks / second) for f in found]
        return faces


def _without_chip(p: Prepared) -> Prepared:
    # Crops are biometric data too: none is kept once embedded.
    return Prepared(p.source, p.reason, p.detail, None, p.quality, p.report, p.landmarks)
