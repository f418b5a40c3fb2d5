"""Ground-truth videos of the target: smooth random motion, occlusion episodes, exact per-frame keypoints.

Used as the `demo` source (one fixed, cached video) and to measure tracking (RMSE, jitter, lag, re-acquisition).
Several targets (`targets` > 1) move side by side, each on its own trajectory, and keep their track id for the whole
video: ground truth for identity tracking (a page that slides over another hides the keypoints it covers).
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np

from rtkp.data.occlude import covered
from rtkp.demo.synth import (
    IMAGE_SIZE,
    SKIN,
    Pose,
    background,
    camera_effects,
    hand_mask,
    homography,
    project,
    warp_target_with_mask,
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


def side_by_side(poses: list[Pose], track: int, targets: int) -> list[Pose]:
    """Track `track` of `targets`: its trajectory moved into its own vertical strip of the image (centred on the strip,
    still swinging ±15 % of the width, so neighbours meet) and its page 1/sqrt(targets) as tall."""
    shift = IMAGE_SIZE[0] * ((track + 0.5) / targets - 0.5)
    return [Pose(p.cx + shift, p.cy, p.height / np.sqrt(targets), p.angle, p.tilt_x, p.tilt_y) for p in poses]


def render_video(
    path: Path, seconds: float, fps: float = 30.0, seed: int = 0, progress: bool = False, targets: int = 1
) -> Path:
    """Write `path` (MP4, H.264) and `path.with_suffix('.gt.json')` (keypoints, visibility, episodes per frame).

    targets > 1: the ground truth also has `targets` and, per frame, `instances`: [{"track", "kp", "visible"}] for
    every target in track order ("kp" and "visible" of the frame stay track 0's). The hand of an occlusion episode
    sweeps over target (episode number mod targets).
    """
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
    tracks = [poses]  # the other targets' motion from rngs of their own: one target draws exactly as it always did
    tracks += [trajectory(np.random.default_rng([seed, t]), n, fps) for t in range(1, targets)]
    if targets > 1:
        tracks = [side_by_side(track, t, targets) for t, track in enumerate(tracks)]
    gt = {"fps": fps, "size": list(IMAGE_SIZE), "names": target.names, "episodes": episodes, "frames": []}
    if targets > 1:
        gt["targets"] = targets
    w, hh = IMAGE_SIZE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    with av.open(str(tmp), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = IMAGE_SIZE[0], IMAGE_SIZE[1], "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for i in tqdm(range(n), desc="render", disable=not progress):
            frng = np.random.default_rng([seed, i])
            image, kps_all, vis_all = back, [], []
            for t in range(targets):
                h = homography(tracks[t][i], target.size_px)
                image, page = warp_target_with_mask(target, h, image)
                for below in range(t):  # the page on top hides what it covers
                    vis_all[below] &= ~covered(page > 0.5, kps_all[below])
                kps_all.append(project(h, target.keypoints_px))
                k = kps_all[-1]
                vis_all.append((k[:, 0] >= 0) & (k[:, 0] <= w - 1) & (k[:, 1] >= 0) & (k[:, 1] <= hh - 1))
            for e, ((s, e_end), (ang, size)) in enumerate(zip(episodes, hands)):
                if s <= i < e_end:
                    # the hand sweeps across the centre of target e mod targets along direction `ang`
                    u = (i - s) / (e_end - s) * 2 - 1
                    centre = kps_all[e % targets].mean(0) + u * 250 * np.array([np.cos(ang), np.sin(ang)])
                    height = tracks[e % targets][i].height
                    mask = hand_mask(np.random.default_rng(seed + s), image.shape[:2], centre, size * height)
                    image = image.copy()
                    image[mask] = np.clip(skin + frng.normal(0, 6, (int(mask.sum()), 3)), 0, 255).astype(np.uint8)
                    for t, kps in enumerate(kps_all):
                        inside = np.floor(kps + 0.5).astype(int)
                        covered_px = mask[np.clip(inside[:, 1], 0, hh - 1), np.clip(inside[:, 0], 0, w - 1)]
                        vis_all[t] = vis_all[t] & ~covered_px
            image = camera_effects(frng, image, strength=0.3)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
            record = {"kp": np.round(kps_all[0], 4).tolist(), "visible": vis_all[0].tolist()}
            if targets > 1:
                record["instances"] = [
                    {"track": t, "kp": np.round(k, 4).tolist(), "visible": v.tolist()}
                    for t, (k, v) in enumerate(zip(kps_all, vis_all))
                ]
            gt["frames"].append(record)
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
