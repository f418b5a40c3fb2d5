"""Ground-truth videos of the target: smooth random motion, occlusion episodes, exact per-frame keypoints.

Used as the `demo` source (one fixed, cached video) and to measure tracking (RMSE, jitter, lag, re-acquisition).
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np

from rtkp.demo.synth import (
    IMAGE_SIZE,
    SKIN,
    Pose,
    background,
    camera_effects,
    hand_mask,
    homography,
    project,
    warp_target,
)
from rtkp.demo.target import render_target

DEMO_SEED = 7
DEMO_SECONDS = 20.0


def trajectory(rng: np.random.Generator, n: int, fps: float) -> list[Pose]:
    """Smoothly varying poses: each parameter is a base value plus two slow sinusoids."""
    t = np.arange(n) / fps
    w, h = IMAGE_SIZE

    def wave(base, amp):
        f = rng.uniform(0.05, 0.25, 2)
        ph = rng.uniform(0, 2 * np.pi, 2)
        return base + amp * (0.6 * np.sin(2 * np.pi * f[0] * t + ph[0]) + 0.4 * np.sin(2 * np.pi * f[1] * t + ph[1]))

    cx, cy = wave(w / 2, w * 0.15), wave(h / 2, h * 0.12)
    height = wave(h * 0.8, h * 0.15)
    angle = wave(rng.uniform(-0.5, 0.5), 0.6)
    tx, ty = wave(0, 0.15), wave(0, 0.15)
    return [Pose(*v) for v in zip(cx, cy, height, angle, tx, ty)]


def occlusion_episodes(rng, n: int, fps: float, every_s: float = 5.0, length_s: float = 1.5) -> list[tuple[int, int]]:
    """(start, end) frame ranges in which a hand sweeps over the page."""
    eps, start = [], int(rng.uniform(1.5, 3.0) * fps)
    while start + int(length_s * fps) < n:
        eps.append((start, start + int(length_s * fps)))
        start += int(rng.uniform(0.7, 1.3) * every_s * fps)
    return eps


def render_video(path: Path, seconds: float, fps: float = 30.0, seed: int = 0, progress: bool = False) -> Path:
    """Write `path` (MP4, H.264) and `path.with_suffix('.gt.json')` (keypoints, visibility, episodes per frame)."""
    import av
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    target = render_target(4.0)
    n = int(round(seconds * fps))
    poses = trajectory(rng, n, fps)
    episodes = occlusion_episodes(rng, n, fps)
    back = background(rng, IMAGE_SIZE)
    skin = np.array(SKIN[rng.integers(len(SKIN))], np.float32)
    hand_rng = np.random.default_rng(seed + 1000)
    hands = [(hand_rng.uniform(0, 2 * np.pi), hand_rng.uniform(0.35, 0.55)) for _ in episodes]
    gt = {"fps": fps, "size": list(IMAGE_SIZE), "names": target.names, "episodes": episodes, "frames": []}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    with av.open(str(tmp), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = IMAGE_SIZE[0], IMAGE_SIZE[1], "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for i in tqdm(range(n), desc="render", disable=not progress):
            frng = np.random.default_rng([seed, i])
            h = homography(poses[i], target.size_px)
            image = warp_target(target, h, back)
            kps = project(h, target.keypoints_px)
            w, hh = IMAGE_SIZE
            vis = (kps[:, 0] >= 0) & (kps[:, 0] <= w - 1) & (kps[:, 1] >= 0) & (kps[:, 1] <= hh - 1)
            for (s, e), (ang, size) in zip(episodes, hands):
                if s <= i < e:
                    # the hand sweeps across the page centre along direction `ang`
                    u = (i - s) / (e - s) * 2 - 1
                    centre = kps.mean(0) + u * 250 * np.array([np.cos(ang), np.sin(ang)])
                    mask = hand_mask(np.random.default_rng(seed + s), image.shape[:2], centre, size * poses[i].height)
                    image = image.copy()
                    image[mask] = np.clip(skin + frng.normal(0, 6, (int(mask.sum()), 3)), 0, 255).astype(np.uint8)
                    inside = np.floor(kps + 0.5).astype(int)
                    ok = vis.copy()
                    vis = ok & ~mask[np.clip(inside[:, 1], 0, hh - 1), np.clip(inside[:, 0], 0, w - 1)]
            image = camera_effects(frng, image, strength=0.3)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
            gt["frames"].append({"kp": np.round(kps, 4).tolist(), "visible": vis.tolist()})
        for packet in stream.encode():
            out.mux(packet)
    tmp.replace(path)
    path.with_suffix(".gt.json").write_text(json.dumps(gt))
    return path


def demo_video(cache_dir: Path, progress: bool = True) -> Path:
    """The demo clip (20 s, deterministic), rendered once into `cache_dir` and reused."""
    path = Path(cache_dir) / f"demo-v1-{DEMO_SEED}.mp4"
    if not path.is_file() or not path.with_suffix(".gt.json").is_file():
        render_video(path, DEMO_SECONDS, 30.0, DEMO_SEED, progress)
    return path
