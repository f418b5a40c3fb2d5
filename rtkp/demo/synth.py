"""Synthetic training data with exact ground truth: the target under random perspective, light, blur, noise
and occluders.

Like SuperPoint's synthetic pre-training, every label is computed, not annotated: a keypoint's position is the page
position mapped by the homography that warped the page, so labels are exact (up to float rounding). Occluders (hand
shapes and random objects) mark the keypoints they cover as not visible.

Several targets per image (`targets` > 1, `rtkp synth --targets N`) are identical pages, smaller, at separate random
places: the multi-instance case of identical animals. A page pasted over another one hides the keypoints it covers
(labelled v = 1, exactly like an occluder), and each annotation carries the target's `track_id` (0 .. N−1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from rtkp.data.occlude import covered, occluder_mask, texture
from rtkp.demo.target import Target, render_target

IMAGE_SIZE = (640, 480)
SKIN = [(224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172), (241, 194, 125)]


@dataclass(frozen=True)
class Pose:
    """Where the page lands in the image: centre (px), height of the page (px), rotation (rad), perspective tilt."""

    cx: float
    cy: float
    height: float
    angle: float
    tilt_x: float
    tilt_y: float


def homography(pose: Pose, page_size: tuple[int, int]) -> np.ndarray:
    """3×3 homography from page pixels to image pixels (pixel-centre convention on both sides)."""
    import cv2

    w, h = page_size
    src = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]], np.float32)
    scale = pose.height / h
    half = np.array([[-w, -h], [w, -h], [w, h], [-w, h]], np.float64) * scale / 2
    # perspective: shrink the far edge, widen the near one
    half[:, 0] *= 1 + pose.tilt_y * np.sign(half[:, 1])
    half[:, 1] *= 1 + pose.tilt_x * np.sign(half[:, 0])
    rot = np.array([[np.cos(pose.angle), -np.sin(pose.angle)], [np.sin(pose.angle), np.cos(pose.angle)]])
    dst = (half @ rot.T + [pose.cx, pose.cy]).astype(np.float32)
    return cv2.getPerspectiveTransform(src, dst)


def project(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(N, 2) points mapped by a 3×3 homography."""
    p = np.concatenate([pts, np.ones((len(pts), 1))], 1) @ h.T
    return p[:, :2] / p[:, 2:3]


def random_pose(rng: np.random.Generator, size=IMAGE_SIZE) -> Pose:
    w, h = size
    return Pose(
        rng.uniform(0.3, 0.7) * w,
        rng.uniform(0.3, 0.7) * h,
        rng.uniform(0.55, 1.3) * h,
        rng.uniform(-np.pi, np.pi),
        rng.uniform(-0.25, 0.25),
        rng.uniform(-0.25, 0.25),
    )


def background(rng: np.random.Generator, size=IMAGE_SIZE, photos: list[np.ndarray] | None = None) -> np.ndarray:
    """A procedural background (multi-scale noise, gradients, stripes, shapes) or a crop of a given photo."""
    import cv2

    w, h = size
    if photos and rng.random() < 0.7:
        photo = photos[rng.integers(len(photos))]
        scale = max(w / photo.shape[1], h / photo.shape[0]) * rng.uniform(1.0, 1.5)
        big = cv2.resize(photo, (int(photo.shape[1] * scale) + 1, int(photo.shape[0] * scale) + 1))
        y, x = rng.integers(0, big.shape[0] - h + 1), rng.integers(0, big.shape[1] - w + 1)
        return big[y : y + h, x : x + w].copy()
    img = np.zeros((h, w, 3), np.float32)
    for octave in (4, 16, 64):
        small = rng.uniform(0, 255, (max(h // octave, 2), max(w // octave, 2), 3)).astype(np.float32)
        img += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) * rng.uniform(0.1, 0.5)
    img = img / img.max() * 255 if img.max() > 0 else img
    yy, xx = np.mgrid[:h, :w]
    ang = rng.uniform(0, np.pi)
    img += (np.cos(ang) * xx + np.sin(ang) * yy)[..., None] / max(w, h) * rng.uniform(-80, 80)
    for _ in range(rng.integers(5, 25)):
        colour = rng.integers(0, 256, 3).tolist()
        p = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if rng.random() < 0.5:
            cv2.circle(img, p, int(rng.integers(5, 60)), colour, -1)
        else:
            q = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(img, p, q, colour, int(rng.integers(1, 8)))
    return np.clip(img, 0, 255).astype(np.uint8)


def warp_target(target: Target, h: np.ndarray, canvas: np.ndarray) -> np.ndarray:
    """Paste the page onto `canvas` through homography h (bilinear, anti-aliased edge)."""
    return warp_target_with_mask(target, h, canvas)[0]


def warp_target_with_mask(target: Target, h: np.ndarray, canvas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(canvas with the page pasted through h, (H, W) float32 page coverage in [0, 1])."""
    import cv2

    size = (canvas.shape[1], canvas.shape[0])
    page = cv2.warpPerspective(target.image, h, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    mask = cv2.warpPerspective(np.ones(target.image.shape[:2], np.float32), h, size, flags=cv2.INTER_LINEAR)
    return (canvas * (1 - mask[..., None]) + page * mask[..., None]).astype(np.uint8), mask


def hand_mask(rng: np.random.Generator, shape: tuple[int, int], centre, size: float) -> np.ndarray:
    """A hand-like silhouette: an elliptical palm and four or five finger capsules."""
    import cv2

    m = np.zeros(shape, np.uint8)
    ang = rng.uniform(0, 2 * np.pi)
    cx, cy = centre
    cv2.ellipse(m, (int(cx), int(cy)), (int(size * 0.45), int(size * 0.55)), np.degrees(ang), 0, 360, 1, -1)
    for f in range(int(rng.integers(4, 6))):
        a = ang - np.pi / 2 + (f - 2) * 0.35 + rng.normal(0, 0.05)
        length = size * rng.uniform(0.6, 0.9)
        base = np.array([cx, cy]) + size * 0.45 * np.array([np.cos(a), np.sin(a)])
        tip = base + length * np.array([np.cos(a), np.sin(a)])
        cv2.line(m, tuple(base.astype(int)), tuple(tip.astype(int)), 1, max(int(size * 0.16), 2))
    return m.astype(bool)


def add_occluders(rng, image, kps, vis, box, coverage):
    """Paste a hand (60 %) or random objects with the given coverage of `box`; update visibility."""
    if coverage[1] <= 0:
        return image, vis
    if rng.random() < 0.6:
        x0, y0, x1, y1 = box
        side = max(x1 - x0, y1 - y0)
        lo, hi = coverage
        best = None
        for _ in range(30):
            size = side * np.sqrt(rng.uniform(lo, hi)) * 0.8
            centre = (rng.uniform(x0, x1), rng.uniform(y0, y1))
            mask = hand_mask(rng, image.shape[:2], centre, size)
            area = max((x1 - x0) * (y1 - y0), 1)
            ix0, iy0 = int(max(x0, 0)), int(max(y0, 0))
            frac = mask[iy0 : int(max(y1, 0)) + 1, ix0 : int(max(x1, 0)) + 1].sum() / area
            if lo <= frac <= hi:
                best = mask
                break
        if best is not None:
            skin = np.array(SKIN[rng.integers(len(SKIN))], np.float32)
            shade = rng.normal(0, 8, image.shape[:2])[..., None]
            out = image.copy()
            out[best] = np.clip(skin + shade[best], 0, 255).astype(np.uint8)
            return out, vis & ~covered(best, kps)
    mask = occluder_mask(rng, image.shape[:2], box, coverage)
    out = image.copy()
    out[mask] = texture(rng, *image.shape[:2])[mask]
    return out, vis & ~covered(mask, kps)


def camera_effects(rng: np.random.Generator, image: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Lighting (gain, offset, gradient, colour cast, vignette), blur (Gaussian or motion), noise, JPEG artefacts."""
    import cv2

    h, w = image.shape[:2]
    img = image.astype(np.float32)
    img = img * rng.uniform(1 - 0.4 * strength, 1 + 0.3 * strength) + rng.uniform(-30, 30) * strength
    img *= (1 + rng.uniform(-0.1, 0.1, 3) * strength)[None, None]
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    img *= (1 + 0.3 * strength * ((np.cos(ang) * xx + np.sin(ang) * yy) / max(w, h) - 0.5))[..., None]
    r2 = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (w * w / 4)
    img *= (1 - rng.uniform(0, 0.3) * strength * r2)[..., None]
    if rng.random() < 0.5 * strength:
        k = int(rng.integers(3, 9))
        kernel = np.zeros((k, k), np.float32)
        cv2.line(kernel, (0, int(rng.integers(k))), (k - 1, int(rng.integers(k))), 1.0, 1)
        img = cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1))
    elif rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.5 * strength + 0.3))
    img += rng.normal(0, rng.uniform(1, 8 * strength + 1), img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 95))])
        img = cv2.imdecode(enc, cv2.IMREAD_UNCHANGED)
    return img


def render_sample(rng, target: Target, coverage=(0.0, 0.0), photos=None, pose: Pose | None = None):
    """(image (H, W, 3) uint8 RGB, keypoints (K, 2), visible (K,), homography (3, 3)) for one synthetic frame."""
    pose = pose or random_pose(rng)
    h = homography(pose, target.size_px)
    canvas = background(rng, IMAGE_SIZE, photos)
    image = warp_target(target, h, canvas)
    kps = project(h, target.keypoints_px)
    w, hh = IMAGE_SIZE
    vis = (kps[:, 0] >= 0) & (kps[:, 0] <= w - 1) & (kps[:, 1] >= 0) & (kps[:, 1] <= hh - 1)
    if vis.any():
        lo, hi = kps[vis].min(0), kps[vis].max(0)
        pad = 0.1 * (hi - lo).max()
        image, vis = add_occluders(rng, image, kps, vis, np.concatenate([lo - pad, hi + pad]), coverage)
    image = camera_effects(rng, image)
    return image, kps.astype(np.float32), vis, h


def inside_image(kps: np.ndarray, size=IMAGE_SIZE) -> np.ndarray:
    """(...,) bool: which points (..., 2) lie inside an image of `size` (W, H)."""
    w, h = size
    return (kps[..., 0] >= 0) & (kps[..., 0] <= w - 1) & (kps[..., 1] >= 0) & (kps[..., 1] <= h - 1)


def random_poses(rng: np.random.Generator, n: int, size=IMAGE_SIZE) -> list[Pose]:
    """`n` poses of `n` targets in one image. One: random_pose. Several: pages 1/sqrt(n) as tall, their centres at least
    0.6 page heights apart where 50 tries allow (a page is 0.71 heights wide, so neighbours may overlap a little, as
    animals touch)."""
    if n == 1:
        return [random_pose(rng, size)]
    w, h = size
    poses: list[Pose] = []
    for _ in range(n):
        for _try in range(50):
            pose = random_pose(rng, size)
            pose = replace(
                pose, cx=rng.uniform(0.15, 0.85) * w, cy=rng.uniform(0.15, 0.85) * h, height=pose.height / np.sqrt(n)
            )
            if all(np.hypot(pose.cx - q.cx, pose.cy - q.cy) > 0.6 * max(pose.height, q.height) for q in poses):
                break
        poses.append(pose)
    return poses


def render_scene(rng, target: Target, n: int = 1, coverage=(0.0, 0.0), photos=None):
    """(image (H, W, 3) uint8 RGB, keypoints (n, K, 2) float32, visible (n, K) bool, homographies (n, 3, 3)) for one
    synthetic frame with `n` targets, pasted in order (target t covers targets < t where they overlap). n = 1 is
    render_sample, draw for draw."""
    if n == 1:
        image, kps, vis, h = render_sample(rng, target, coverage, photos)
        return image, kps[None], vis[None], h[None]
    hs = np.stack([homography(pose, target.size_px) for pose in random_poses(rng, n)])
    image = background(rng, IMAGE_SIZE, photos)
    kps = np.stack([project(h, target.keypoints_px) for h in hs])
    vis = inside_image(kps)
    for t, h in enumerate(hs):
        image, page = warp_target_with_mask(target, h, image)
        for below in range(t):  # a keypoint under this page is hidden (the same rule as an occluder's)
            vis[below] &= ~covered(page > 0.5, kps[below])
    for t in range(n):  # each target gets its occluders; they may cover the other targets' keypoints too
        if vis[t].any():
            lo, hi = kps[t][vis[t]].min(0), kps[t][vis[t]].max(0)
            pad = 0.1 * (hi - lo).max()
            box = np.concatenate([lo - pad, hi + pad])
            image, flat = add_occluders(rng, image, kps.reshape(-1, 2), vis.reshape(-1), box, coverage)
            vis = flat.reshape(vis.shape)
    image = camera_effects(rng, image)
    return image, kps.astype(np.float32), vis, hs


def page_box(target: Target, h: np.ndarray, size=IMAGE_SIZE) -> list[float]:
    """COCO bbox [x, y, w, h] of the page's corners mapped by h, clipped to the image."""
    pw, ph = target.size_px
    corners = project(h, np.array([[-0.5, -0.5], [pw - 0.5, -0.5], [pw - 0.5, ph - 0.5], [-0.5, ph - 0.5]]))
    lo = np.clip(corners.min(0), 0, np.array(size) - 1)
    hi = np.clip(corners.max(0), 0, np.array(size) - 1)
    return [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]


def keypoint_triples(kps: np.ndarray, vis: np.ndarray) -> list[float]:
    """COCO's flat [x, y, v, ...]: v = 2 visible, 1 inside the image but hidden, 0 outside it."""
    flat = []
    for (x, y), v, ins in zip(kps, vis, inside_image(kps)):
        flat += [float(x), float(y), 2 if v else (1 if ins else 0)]
    return flat


def write_coco_set(
    out: Path,
    n: int,
    seed: int,
    levels: dict[str, tuple[float, float]] | None = None,
    photos=None,
    progress: bool = True,
    targets: int = 1,
) -> Path:
    """`n` images (+ COCO JSON with names, visibility and per-image homography) into `out`.

    levels: occlusion coverage per image, cycled (default: 50 % unoccluded, the rest 10–70 %).
    targets: targets per image. Several: one annotation per target with its `track_id` (0 .. targets−1), its own
    `homography`, `bbox` (the page, clipped) and `area`; the image entry has no homography then.
    """
    import cv2
    from tqdm import tqdm

    target = render_target(4.0)
    (out / "images").mkdir(parents=True, exist_ok=True)
    levels = levels or {"none": (0.0, 0.0), "some": (0.1, 0.7)}
    names = list(levels)
    images, anns = [], []
    for i in tqdm(range(n), desc=f"synth {out.name}", disable=not progress):
        rng = np.random.default_rng([seed, i])
        level = names[i % len(names)]
        image, kps, vis, hs = render_scene(rng, target, targets, levels[level], photos)
        name = f"{i:05d}.jpg"
        cv2.imwrite(str(out / "images" / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        entry = {"id": i + 1, "file_name": name, "width": IMAGE_SIZE[0], "height": IMAGE_SIZE[1]}
        if targets == 1:  # the single-target file as it always was
            images.append({**entry, "homography": hs[0].tolist(), "occlusion": level})
            flat = keypoint_triples(kps[0], vis[0])
            anns.append(
                {"id": i + 1, "image_id": i + 1, "category_id": 1, "keypoints": flat, "num_keypoints": int(vis.sum())}
            )
            continue
        images.append({**entry, "occlusion": level})
        for t in range(targets):
            box = page_box(target, hs[t])
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": 1,
                    "track_id": t,
                    "keypoints": keypoint_triples(kps[t], vis[t]),
                    "num_keypoints": int(vis[t].sum()),
                    "homography": hs[t].tolist(),
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    info = {"description": "rtkp synthetic target data", "seed": seed}
    doc = {
        "info": info if targets == 1 else {**info, "targets": targets},
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "rtkp_target", "keypoints": target.names, "skeleton": []}],
    }
    path = out / "annotations.json"
    path.write_text(json.dumps(doc))
    return path
