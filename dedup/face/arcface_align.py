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


def warp_batch(images: torch.Tensor, matrices: np.ndarray, size: int = ARCFACE_SIZE) -> torch.Tensor:
    """ArcFace crops of a batch on the images' device (GPU path): (N, 3, H, W) float -> (N, 3, size, size).

    Same geometry as :func:`arcface_chip` (pixel centres at integer coordinates, bilinear,
    black outside), computed by ``grid_sample``; values stay float (no rounding to uint8).
    """
    import torch
    import torch.nn.functional as F

    n, _, h, w = images.shape
    inv = np.stack([np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2] for m in matrices])  # crop -> photo
    inv_t = torch.as_tensor(inv, dtype=torch.float32, device=images.device)
    coords = torch.arange(size, dtype=torch.float32, device=images.device)
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    crop = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).reshape(1, -1, 3)  # (1, S*S, 3)
    src = crop @ inv_t.transpose(1, 2)  # (N, S*S, 2) photo pixel coordinates
    # grid_sample (align_corners=False) puts pixel i's centre at (2 i + 1) / W - 1.
    scale = torch.tensor([2.0 / w, 2.0 / h], device=images.device)
    grid = (src * scale + scale / 2 - 1.0).reshape(n, size, size, 2)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
