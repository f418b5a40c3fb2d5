"""Dense self-supervised features: the same scene point must have the same feature under a known warp.

CoKe's contrastive loss only shapes the features at the labelled keypoints and pushes everything else ("clutter")
away from their prototypes; nothing asks an unlabelled part of the animal to look alike from frame to frame, which a
keypoint taught from a few clicks (rtkp.teach.shots) needs. This term does, in the spirit of SuperPoint's homographic
adaptation and of contrastive landmark learning on hypercolumns (Cheng et al., ICCV 2021): each training crop is warped
by a random rotation, scaling and shift with a photometric change; points spread over the crop and their images under
the warp must match each other better than any other point of that crop (InfoNCE, both directions). It needs no label,
so it trains every pixel of every crop, background and unlabelled body parts alike.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from rtkp.model.loss import sample_features


def random_warps(
    rng: np.random.Generator, n: int, size: tuple[int, int], rotation: float, scale: tuple[float, float], shift: float
) -> torch.Tensor:
    """(n, 2, 3) affine maps from a crop's pixels to its warped view's pixels, about the crop centre.

    size: (width, height); rotation in degrees (uniform in ±rotation); scale: (min, max), log-uniform;
    shift: a fraction of the crop size (uniform in ±shift on each axis).
    """
    w, h = size
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    out = np.empty((n, 2, 3), np.float32)
    for i in range(n):
        a = math.radians(rng.uniform(-rotation, rotation))
        s = math.exp(rng.uniform(math.log(scale[0]), math.log(scale[1])))
        m = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        t = centre - m @ centre + rng.uniform(-shift, shift, 2) * np.array([w, h])
        out[i, :, :2], out[i, :, 2] = m, t
    return torch.from_numpy(out)


def apply_warps(points: torch.Tensor, warps: torch.Tensor) -> torch.Tensor:
    """points: (n, N, 2) pixels; warps: (n, 2, 3) -> (n, N, 2) the points' pixels in the warped views."""
    return points @ warps[:, :, :2].transpose(1, 2) + warps[:, None, :, 2]


def warp_images(images: torch.Tensor, warps: torch.Tensor) -> torch.Tensor:
    """The warped views: images (n, H, W, 3) uint8 or float -> (n, H, W, 3) float 0..255, zero outside the crop."""
    n, h, w, _ = images.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    target = torch.stack([xs, ys], -1).reshape(1, -1, 2).expand(n, -1, -1)  # pixels of the warped view
    m, t = warps[:, :, :2], warps[:, :, 2]
    source = (target - t[:, None]) @ torch.linalg.inv(m).transpose(1, 2)  # where they come from in the crop
    grid = torch.stack([source[..., 0] / (w - 1), source[..., 1] / (h - 1)], -1) * 2 - 1
    x = images.permute(0, 3, 1, 2).float()
    out = F.grid_sample(x, grid.view(n, h, w, 2), mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.permute(0, 2, 3, 1)


def grid_points(rng: np.random.Generator, n: int, size: tuple[int, int], per_side: int) -> torch.Tensor:
    """(n, per_side², 2) pixels: one point jittered inside each cell of a per_side × per_side grid over the crop.

    A grid keeps the points apart, so each point's negatives are other places, not its own neighbourhood.
    """
    w, h = size
    cells = np.stack(np.meshgrid(np.arange(per_side), np.arange(per_side)), -1).reshape(-1, 2)
    jitter = rng.uniform(0.15, 0.85, (n, len(cells), 2))
    pts = (cells[None] + jitter) / per_side * np.array([w - 1, h - 1])
    return torch.from_numpy(pts.astype(np.float32))


def equivariance_loss(
    feats: torch.Tensor,
    warped_feats: torch.Tensor,
    points: torch.Tensor,
    warped_points: torch.Tensor,
    stride: int,
    temperature: float,
    margin_px: float = 4.0,
) -> torch.Tensor:
    """InfoNCE between each point's feature and its image's feature in the warped view, within each crop.

    feats, warped_feats: (n, D, h, w) unit features of the crops and of their warped views; points: (n, N, 2) crop
    pixels; warped_points: (n, N, 2) their pixels in the warped views (apply_warps). Points whose image falls outside
    the warped view (or within `margin_px` of its border) are left out. Cross-entropy both ways, with the matching
    point as target and the crop's other points as negatives.
    """
    n, _, fh, fw = warped_feats.shape
    size = torch.tensor([fw * stride - 1, fh * stride - 1], dtype=points.dtype)
    inside = ((warped_points >= margin_px) & (warped_points <= size - margin_px)).all(-1)  # (n, N)
    fa = sample_features(feats, points, stride)
    fb = sample_features(warped_feats, warped_points, stride)
    terms = []
    for i in range(n):
        keep = inside[i]
        if keep.sum() < 2:
            continue
        a, b = fa[i, keep], fb[i, keep]
        logits = a @ b.T / temperature
        target = torch.arange(len(a))
        terms.append((F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2)
    if not terms:
        return feats.new_zeros(())
    return torch.stack(terms).mean()
