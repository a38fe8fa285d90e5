"""ArcFace 5-point alignment: a 112 x 112 crop with the face's landmarks on a fixed template.

The template is the one published with InsightFace's ArcFace models (``arcface_dst`` in
``insightface/utils/face_align.py``; also OpenCV's FaceRecognizerSF), in pixel coordinates of
the 112 px crop: eye on the crop's left, other eye, nose tip, left and right mouth corners.
The similarity transform (rotation, uniform scale, translation) that best maps the
detector's 5 landmarks onto it is the closed-form least-squares solution (Umeyama 1991),
written here; the photo is then resampled bilinearly, pixel centres at integer coordinates
(as OpenCV's warpAffine does), outside the photo black.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

ARCFACE_SIZE = 112
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2 x 3 matrix M minimising sum |M [src; 1] - dst|^2 over rotations, scales, translations."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0  # a reflection would fit better: not allowed for a face
    rot = u @ np.diag(sign) @ vt
    var_s = (s**2).sum() / len(src)
    scale = float((sigma * sign).sum() / var_s) if var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def arcface_chip(rgb: np.ndarray, landmarks: np.ndarray, size: int = ARCFACE_SIZE) -> np.ndarray:
    """(size, size, 3) uint8 RGB crop aligned on the ArcFace template (scaled to ``size``)."""
    m = arcface_matrix(landmarks, size)
    inv = np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2]
    # Pillow maps output pixel centres (x + 0.5, y + 0.5) through the matrix and samples at
    # (u - 0.5, v - 0.5); shifting by half a pixel on both sides gives integer-centre maths.
    a, b, c = inv[0]
    d, e, f = inv[1]
    coeffs = (a, b, c + 0.5 - 0.5 * (a + b), d, e, f + 0.5 - 0.5 * (d + e))
    img = Image.fromarray(np.ascontiguousarray(rgb)).transform((size, size), Image.Transform.AFFINE, coeffs,
                                                              Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
    return np.asarray(img, dtype=np.uint8).copy()


def arcface_matrix(landmarks: np.ndarray, size: int = ARCFACE_SIZE) -> np.ndarray:
    """The 2 x 3 photo -> crop similarity transform for one face's 5 landmarks."""
    return similarity_transform(landmarks, ARCFACE_TEMPLATE * (size / ARCFACE_SIZE))


def warp_batch(images: torch.Tensor, matrices: np.ndarray, size: int = ARCFACE_SIZE,
               photo_boxes: np.ndarray | None = None) -> torch.Tensor:
    """ArcFace crops of a batch on the images' device (GPU path): (N, 3, H, W) float -> (N, 3, size, size).

    Same geometry and edge rule as :func:`arcface_chip`, computed by ``grid_sample``. Pillow's
    bilinear transform returns the fill (black) for a sample outside the photo's pixel area
    and otherwise clamps its taps to the edge; here: ``padding_mode="border"`` and a mask.
    ``photo_boxes`` (N, 4): each photo's x0, y0, x1, y1 (pixels, exclusive ends) in tensor
    coordinates, when an image is a cut-out of its photo (default: the whole tensor). Values
    stay float; Pillow truncates to uint8 (``floor``).
    """
    import torch
    import torch.nn.functional as F

    n, _, h, w = images.shape
    inv = np.stack([np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2] for m in matrices])  # crop -> photo
    inv_t = torch.as_tensor(inv, dtype=torch.float32, device=images.device)
    coords = torch.arange(size, dtype=torch.float32, device=images.device)
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    crop = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).reshape(1, -1, 3)  # (1, S*S, 3)
    src = crop @ inv_t.transpose(1, 2)  # (N, S*S, 2) photo pixel coordinates, centres at integers
    boxes = np.array([[0, 0, w, h]] * n, dtype=np.float64) if photo_boxes is None else np.asarray(photo_boxes, dtype=np.float64)
    lo = torch.as_tensor(boxes[:, None, :2] - 0.5, dtype=torch.float32, device=images.device)
    hi = torch.as_tensor(boxes[:, None, 2:] - 0.5, dtype=torch.float32, device=images.device)
    inside = ((src >= lo) & (src < hi)).all(dim=-1).reshape(n, 1, size, size)
    # Taps clamp to the photo's edge pixels: clamp the coordinate into [x0, x1 - 1] first.
    src = torch.minimum(torch.maximum(src, lo + 0.5), hi - 0.5)
    # grid_sample (align_corners=False) puts pixel i's centre at (2 i + 1) / W - 1.
    scale = torch.tensor([2.0 / w, 2.0 / h], device=images.device)
    grid = (src * scale + scale / 2 - 1.0).reshape(n, size, size, 2)
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out * inside


def warp_photos(photos: list[np.ndarray], matrices: list[np.ndarray], device: torch.device | str,
                size: int = ARCFACE_SIZE) -> np.ndarray:
    """ArcFace crops of photos of any sizes, warped in one batch on ``device``: (N, size, size, 3) uint8.

    Only the region of each photo the crop samples from travels to the device: the box
    around the crop's corner pixel centres mapped into the photo, widened by 2 pixels for
    the bilinear taps, beyond the photo's edge repeating its edge pixels (the taps Pillow
    clamps). Regions are zero-padded to one size to stack them; no tap reaches the padding
    (the box holds every sample, the crop being the affine image of a grid), so each crop is
    its full photo's warp. Truncated to uint8 as Pillow does, it equals :func:`arcface_chip`
    up to float32 rounding (1 grey level on about 1 pixel in 10^4, measured).
    """
    import torch

    corners = np.array([[0.0, 0.0, 1.0], [size - 1.0, 0.0, 1.0], [0.0, size - 1.0, 1.0], [size - 1.0, size - 1.0, 1.0]])
    regions: list[np.ndarray] = []
    shifted: list[np.ndarray] = []
    boxes: list[tuple[int, int, int, int]] = []
    for rgb, m in zip(photos, matrices):
        inv = np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2]
        pts = corners @ inv.T  # (4, 2) photo x, y
        x0, y0 = (int(v) - 2 for v in np.floor(pts.min(axis=0)))
        x1, y1 = (int(v) + 3 for v in np.floor(pts.max(axis=0)))
        h, w = rgb.shape[:2]
        rows = np.clip(np.arange(y0, y1), 0, h - 1)
        cols = np.clip(np.arange(x0, x1), 0, w - 1)
        regions.append(rgb[rows[:, None], cols[None, :]])
        boxes.append((-x0, -y0, w - x0, h - y0))  # the photo in region coordinates
        # crop = A photo + t and photo = region + (x0, y0), so crop = A region + (t + A (x0, y0)).
        m2 = np.array(m, dtype=np.float64)
        m2[:, 2] = m2[:, 2] + m2[:, :2] @ np.array([x0, y0], dtype=np.float64)
        shifted.append(m2)
    if not regions:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    batch = np.zeros((len(regions), max(r.shape[0] for r in regions), max(r.shape[1] for r in regions), 3), dtype=np.uint8)
    for i, r in enumerate(regions):
        batch[i, : r.shape[0], : r.shape[1]] = r
    images = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2)
    with torch.inference_mode():
        crops = warp_batch(images, np.stack(shifted), size, np.array(boxes))
        out = crops.floor().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return np.ascontiguousarray(out.cpu().numpy())
