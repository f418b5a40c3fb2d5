"""Training augmentation: one affine warp to a crop (scale, rotation, translation, flip), photometric
changes, occluders.

The whole geometric chain is composed into a single 2×3 matrix so the image is resampled once and keypoints are mapped
with exactly the same transform.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rtkp.config import AugmentConfig
from rtkp.data.occlude import covered, object_box, paste_occluders


def crop_matrix(
    centre: np.ndarray, crop_size: tuple[int, int], scale: float, angle_deg: float, flip: bool
) -> np.ndarray:
    """(2, 3) affine taking source pixels around `centre` to a crop of `crop_size` (pixel-centre convention)."""
    cw, ch = crop_size
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) * scale
    if flip:
        rot = rot @ np.diag([-1.0, 1.0])
    t = np.array([(cw - 1) / 2, (ch - 1) / 2]) - rot @ np.asarray(centre, np.float64)
    return np.concatenate([rot, t[:, None]], 1)


def photometric(rng: np.random.Generator, image: np.ndarray, cfg: AugmentConfig) -> np.ndarray:
    """Brightness, contrast, blur and sensor noise on a uint8 image."""
    import cv2

    img = image.astype(np.float32)
    mean = img.mean()
    contrast = 1 + rng.uniform(-cfg.contrast, cfg.contrast)
    brightness = rng.uniform(-cfg.brightness, cfg.brightness) * 255
    img = (img - mean) * contrast + mean + brightness
    if rng.random() < cfg.blur:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 1.5)))
    if cfg.noise > 0:
        img = img + rng.normal(0, rng.uniform(0, cfg.noise) * 255, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


class AugmentedCrop(NamedTuple):
    """A training crop: crop (h, w, 3) uint8; keypoints (K, 2) crop pixels; visible (K,) bool (False when outside the
    crop or under an occluder); flipped: mirrored (its left/right keypoints swapped). With `others`: their
    other_keypoints (M, K, 2) crop px, other_visible (M, K) and centres (1 + M, 2) crop px, this animal's first."""

    crop: np.ndarray
    keypoints: np.ndarray
    visible: np.ndarray
    flipped: bool
    other_keypoints: np.ndarray | None = None
    other_visible: np.ndarray | None = None
    centres: np.ndarray | None = None


def augment_sample(
    rng: np.random.Generator,
    image: np.ndarray,
    keypoints: np.ndarray,
    visible: np.ndarray,
    cfg: AugmentConfig,
    flip_pairs: list[tuple[int, int]],
    base_scale: float = 1.0,
    centre: np.ndarray | None = None,
    photos: list[np.ndarray] | None = None,
    others: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> AugmentedCrop:
    """A random training crop.

    image: (H, W, 3) uint8; keypoints: (K, 2) source pixels; visible: (K,) bool.
    base_scale: the scale the model sees this image at (its letterbox scale), so crops match inference resolution.
    centre: (2,) source pixels to centre the crop on exactly (a hard negative, rtkp.train.mining), instead of a random
    centre near the object or anywhere. photos: training photographs that a `photo_share` of occluders are cut from.
    Returns an AugmentedCrop.

    others: the frame's other animals, as (keypoints (M, K, 2) source px, visible (M, K), centres (1 + M, 2) source px
    of every animal, this one first): they get the same warp, flip and occluders, and the result carries theirs too.
    The crop still centres on this animal.
    """
    import cv2

    cw, ch = cfg.crop_size
    h, w = image.shape[:2]
    if centre is not None:
        centre = np.asarray(centre, np.float64)
    elif visible.any() and rng.random() >= cfg.background_crop:
        x0, y0, x1, y1 = object_box(keypoints, visible, pad=0.0)
        centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        centre = centre + rng.uniform(-1, 1, 2) * cfg.translation * np.array([cw, ch]) / base_scale / 2
    else:
        centre = rng.uniform([0, 0], [w - 1, h - 1])
    scale = base_scale * np.exp(rng.uniform(np.log(cfg.scale[0]), np.log(cfg.scale[1])))
    angle = rng.uniform(-cfg.rotation, cfg.rotation)
    flip = rng.random() < cfg.flip
    m = crop_matrix(centre, (cw, ch), scale, angle, flip)
    crop = cv2.warpAffine(image, m, (cw, ch), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    kp, vis = _warp_points(keypoints, visible, m, flip, flip_pairs, (cw, ch))
    if others is not None:
        other_kp, other_vis, centres = others
        warped = [_warp_points(p, v, m, flip, flip_pairs, (cw, ch)) for p, v in zip(other_kp, other_vis)]
        other_kp = np.stack([w[0] for w in warped]) if warped else np.zeros((0,) + kp.shape, np.float32)
        other_vis = np.stack([w[1] for w in warped]) if warped else np.zeros((0,) + vis.shape, bool)
        centres = np.asarray(centres, np.float64) @ m[:, :2].T + m[:, 2]
    if vis.any() and rng.random() < cfg.occluder:
        fill = photos if photos and rng.random() < cfg.photo_share else None
        crop, mask = paste_occluders(rng, crop, object_box(kp, vis), tuple(cfg.occluder_cover), fill)
        vis &= ~covered(mask, kp)
        if others is not None:
            for i in range(len(other_kp)):
                other_vis[i] &= ~covered(mask, other_kp[i])
    crop = photometric(rng, crop, cfg)
    if others is not None:
        return AugmentedCrop(crop, kp, vis, flip, other_kp, other_vis, centres.astype(np.float32))
    return AugmentedCrop(crop, kp, vis, flip)


def _warp_points(keypoints, visible, m, flip, flip_pairs, size) -> tuple[np.ndarray, np.ndarray]:
    """(K, 2) source px, (K,) -> (K, 2) float32 crop px, (K,) visible and inside the crop; sides swapped if flipped."""
    cw, ch = size
    kp = keypoints @ m[:, :2].T + m[:, 2]
    vis = visible.copy()
    if flip:
        for i, j in flip_pairs:
            kp[[i, j]] = kp[[j, i]]
            vis[[i, j]] = vis[[j, i]]
    inside = (kp[:, 0] >= 0) & (kp[:, 0] <= cw - 1) & (kp[:, 1] >= 0) & (kp[:, 1] <= ch - 1)
    return kp.astype(np.float32), vis & inside
