"""Random occluders pasted over an object, with controlled coverage of its box (as in OccludedPASCAL3D+).

Occlusion levels follow OccludedPASCAL3D+: L0 none, L1 20–40 %, L2 40–60 %, L3 60–80 % of the object's box covered.
The occluders' pixels are synthetic textures by default, or cut from real photographs (`load_photos`): real photos
have the edges, shading and clutter that a model trained on synthetic textures has never seen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
PHOTO_SCALE = (0.5, 2.0)

LEVELS = {"L0": (0.0, 0.0), "L1": (0.2, 0.4), "L2": (0.4, 0.6), "L3": (0.6, 0.8)}


def object_box(keypoints: np.ndarray, visible: np.ndarray, pad: float = 0.1) -> np.ndarray:
    """(x0, y0, x1, y1): the box of the visible keypoints, grown by `pad` × its larger side on every edge.

    The padding keeps thin objects (a mouse seen side-on has a box a few pixels tall) from having a degenerate box.
    """
    pts = keypoints[visible]
    if len(pts) == 0:
        return np.zeros(4, np.float32)
    lo, hi = pts.min(0), pts.max(0)
    margin = pad * max(float((hi - lo).max()), 1.0)
    return np.concatenate([lo - margin, hi + margin]).astype(np.float32)


def texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An (h, w, 3) uint8 fill: flat colour, coloured noise, stripes or blotches."""
    import cv2

    kind = rng.integers(4)
    colour = rng.integers(0, 256, 3)
    if kind == 0:
        tex = np.broadcast_to(colour, (h, w, 3)).astype(np.float32)
        tex = tex + rng.normal(0, 8, (h, w, 1))
    elif kind == 1:
        tex = rng.integers(0, 256, (h, w, 3)).astype(np.float32)
    elif kind == 2:
        period = rng.uniform(4, 16)
        angle = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[:h, :w]
        wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)[..., None]
        other = rng.integers(0, 256, 3)
        tex = np.where(wave > 0, colour, other).astype(np.float32)
    else:
        small = rng.integers(0, 256, (max(h // 8, 2), max(w // 8, 2), 3)).astype(np.uint8)
        tex = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    return np.clip(tex, 0, 255).astype(np.uint8)


def load_photos(folder: str | Path) -> list[np.ndarray]:
    """Every .jpg/.jpeg/.png under `folder` (recursive, in sorted path order) as (H, W, 3) uint8 RGB arrays."""
    import cv2

    from rtkp.errors import DataError

    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"the occluder folder {root} does not exist or is not a folder")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
    if not paths:
        raise DataError(f"no .jpg/.jpeg/.png images in the occluder folder {root}")
    photos = []
    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)  # always 3 channels, 8 bits: grey and RGBA files too
        if bgr is None:
            raise DataError(f"cannot read the occluder photo {path}")
        photos.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return photos


def _photo_fill(rng: np.random.Generator, photos: list[np.ndarray], h: int, w: int) -> np.ndarray:
    """An (h, w, 3) uint8 fill cut from a random photo, rescaled by a random factor in PHOTO_SCALE, at a random place.

    Crops the source region first and resizes only that (the same pixels as rescaling the whole photo, then cropping,
    at a fraction of the cost for large photos); a photo smaller than the region is mirror-padded until it fits.
    """
    import cv2

    photo = photos[int(rng.integers(len(photos)))]
    scale = rng.uniform(*PHOTO_SCALE)
    need_h, need_w = max(int(np.ceil(h / scale)), 1), max(int(np.ceil(w / scale)), 1)
    ph, pw = photo.shape[:2]
    if ph < need_h or pw < need_w:
        # symmetric padding repeats mirrored copies as often as needed, so any small photo tiles without seams
        photo = np.pad(photo, ((0, max(need_h - ph, 0)), (0, max(need_w - pw, 0)), (0, 0)), mode="symmetric")
        ph, pw = photo.shape[:2]
    y0, x0 = int(rng.integers(ph - need_h + 1)), int(rng.integers(pw - need_w + 1))
    crop = photo[y0 : y0 + need_h, x0 : x0 + need_w]
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(crop, (w, h), interpolation=interp))


def _shape_mask(rng: np.random.Generator, shape: tuple[int, int], centre, radius: float) -> np.ndarray:
    """A filled ellipse, rectangle or random polygon of about `radius`, as an (H, W) bool mask."""
    import cv2

    mask = np.zeros(shape, np.uint8)
    cx, cy = centre
    kind = rng.integers(3)
    if kind == 0:
        axes = (max(int(radius * rng.uniform(0.6, 1.4)), 1), max(int(radius * rng.uniform(0.6, 1.4)), 1))
        cv2.ellipse(mask, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
        n = 4 if kind == 1 else int(rng.integers(5, 10))
        angles = (
            np.sort(rng.uniform(0, 2 * np.pi, n)) if kind == 2 else np.arange(4) * np.pi / 2 + rng.uniform(0, np.pi)
        )
        radii = radius * (rng.uniform(0.6, 1.4, n) if kind == 2 else rng.uniform(0.8, 1.3))
        pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1)
    return mask.astype(bool)


def occluder_mask(
    rng: np.random.Generator,
    image_shape: tuple[int, int],
    box: np.ndarray,
    coverage: tuple[float, float],
    tries: int = 50,
) -> np.ndarray:
    """An (H, W) bool mask of random shapes covering a fraction of `box` inside `coverage` = (lo, hi).

    Shapes are added until the covered fraction reaches lo; a draw that overshoots hi is discarded and redrawn.
    """
    h, w = image_shape
    lo, hi = coverage
    x0, y0, x1, y1 = [float(v) for v in box]
    bx0, by0 = int(np.clip(np.floor(x0 + 0.5), 0, w)), int(np.clip(np.floor(y0 + 0.5), 0, h))
    bx1, by1 = int(np.clip(np.floor(x1 + 0.5) + 1, 0, w)), int(np.clip(np.floor(y1 + 0.5) + 1, 0, h))
    area = max((bx1 - bx0) * (by1 - by0), 1)
    if hi <= 0 or bx1 <= bx0 or by1 <= by0:
        return np.zeros((h, w), bool)
    best, best_err = np.zeros((h, w), bool), np.inf
    for _ in range(tries):
        mask = np.zeros((h, w), bool)
        target = rng.uniform(lo, hi)
        for _ in range(12):
            frac = mask[by0:by1, bx0:bx1].sum() / area
            if frac >= lo:
                break
            need = max(target - frac, 0.03) * area
            radius = np.sqrt(need / np.pi) * rng.uniform(0.8, 1.2)
            centre = (rng.uniform(bx0, bx1), rng.uniform(by0, by1))
            mask |= _shape_mask(rng, (h, w), centre, radius)
        frac = mask[by0:by1, bx0:bx1].sum() / area
        if lo <= frac <= hi:
            return mask
        err = min(abs(frac - lo), abs(frac - hi))
        if err < best_err:
            best, best_err = mask, err
    return best


def paste_occluders(
    rng: np.random.Generator,
    image: np.ndarray,
    box: np.ndarray,
    coverage: tuple[float, float],
    photos: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Paste occluders over `image` (H, W, 3) uint8; returns (new image, (H, W) bool mask).

    photos: (h, w, 3) uint8 RGB images (load_photos) to cut the occluders' pixels from; None: synthetic textures.
    The mask is drawn first either way, so a seed gives the same occluder shapes with and without photos, and with
    photos=None the draws (and so every image) are exactly those of earlier versions.
    """
    mask = occluder_mask(rng, image.shape[:2], box, coverage)
    if not mask.any():
        return image, mask
    h, w = image.shape[:2]
    fill = texture(rng, h, w) if photos is None else _photo_fill(rng, photos, h, w)
    out = image.copy()
    out[mask] = fill[mask]
    return out, mask


def covered(mask: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """(K,) bool: which keypoints (K, 2) fall on a masked pixel (outside the image counts as not covered)."""
    h, w = mask.shape
    ij = np.floor(keypoints + 0.5).astype(int)
    inside = (ij[:, 0] >= 0) & (ij[:, 0] < w) & (ij[:, 1] >= 0) & (ij[:, 1] < h)
    out = np.zeros(len(keypoints), bool)
    out[inside] = mask[ij[inside, 1], ij[inside, 0]]
    return out
