"""Measure temporal smoothing on a clip with known motion: jitter, accuracy and lag for none / One Euro / Kalman.

The clip is a DLC test frame (real mouse, real labels) panned along a smooth random trajectory with sub-pixel
warps, so the ground truth of every frame is the labels plus the known shift. Every frame goes through the same
Tracker that `rtkp run` uses.

    python tools/smoothing_on_moving_clip.py [--data ../shared/data/dlc_openfield_mouse] \
        [--model engines/dlc_mouse_coke] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def trajectory(n: int, fps: float, seed: int = 0) -> np.ndarray:
    """(n, 2) shifts in px: 2 s at rest, then a sum of slow sinusoids (peak speed ~150 px/s)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fps
    shift = np.zeros((n, 2))
    for _ in range(3):
        f, a, ph = rng.uniform(0.1, 0.4), rng.uniform(15, 30), rng.uniform(0, 2 * np.pi, 2)
        shift += a * np.stack([np.sin(2 * np.pi * f * t + ph[0]), np.cos(2 * np.pi * f * t + ph[1])], 1)
    rest = int(2 * fps)
    shift[:rest] = shift[rest]
    return shift


def lag_frames(est: np.ndarray, truth: np.ndarray, max_lag: int = 10) -> int:
    """The delay d (frames) minimising RMSE between est[t] and truth[t - d]."""
    errs = [np.sqrt(((est[d:] - truth[: len(truth) - d]) ** 2).mean()) for d in range(max_lag + 1)]
    return int(np.argmin(errs))


def main() -> None:
    import cv2

    from rtkp.backends import open_backend, read_model_info
    from rtkp.config import SmoothingConfig
    from rtkp.data.load import load_split
    from rtkp.messages import Frame
    from rtkp.tracker import Tracker

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared/data/dlc_openfield_mouse"))
    ap.add_argument("--model", default=str(REPO / "engines/dlc_mouse_coke"))
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--noise", type=float, default=6.0, help="std of Gaussian sensor noise (grey levels)")
    ap.add_argument("--json")
    args = ap.parse_args()
    data = load_split(args.data, Path(args.data) / "split.json", "test")
    sample = data.samples[0]
    image = sample.load_image()
    shifts = trajectory(args.frames, args.fps)
    frames, truth = [], []
    rng = np.random.default_rng(1)
    for dx, dy in shifts:
        m = np.array([[1, 0, dx], [0, 1, dy]], np.float64)
        warped = cv2.warpAffine(image, m, image.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        # sensor noise, so that a still scene does not give bit-identical frames
        noisy = warped.astype(np.float32) + rng.normal(0, args.noise, warped.shape)
        frames.append(np.clip(noisy, 0, 255).astype(np.uint8))
        truth.append(sample.keypoints + [dx, dy])
    truth = np.stack(truth)
    info = read_model_info(args.model)
    backend = open_backend(args.model, "onnxruntime")
    pre = Tracker(backend, info.manifest)
    raw_rows = [backend.infer(pre.preprocess(img)[None])[0] for img in frames]
    rest = int(2 * args.fps)
    results = {}
    for name in ("none", "one_euro", "kalman"):
        tracker = Tracker(backend, info.manifest, SmoothingConfig(filter=name))
        est = []
        for i, raw in enumerate(raw_rows):
            meta = Frame(i, i / args.fps, time.monotonic_ns(), None)
            est.append(tracker.finish(meta, image.shape[1::-1], raw, {}).keypoints)
        est = np.stack(est).astype(np.float64)
        err = np.linalg.norm(est - truth, axis=2)
        second = np.linalg.norm(np.diff(est, 2, axis=0), axis=2)
        true_second = np.linalg.norm(np.diff(truth, 2, axis=0), axis=2)
        lags = [lag_frames(est[rest:, k], truth[rest:, k]) for k in range(est.shape[1])]
        results[name] = {
            "rmse_px": round(float(np.sqrt((err**2).mean())), 3),
            "jitter_rest_px": round(float(second[: rest - 2].mean()), 3),
            "jitter_motion_px": round(float(np.abs(second[rest:] - true_second[rest:]).mean()), 3),
            "lag_ms": round(float(np.median(lags)) / args.fps * 1000, 1),
        }
    print(f"{'filter':>9} {'RMSE px':>8} {'jitter@rest':>12} {'jitter@motion':>14} {'lag ms':>7}")
    for name, r in results.items():
        row = f"{name:>9} {r['rmse_px']:8.2f} {r['jitter_rest_px']:12.3f} {r['jitter_motion_px']:14.3f}"
        print(f"{row} {r['lag_ms']:7.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
