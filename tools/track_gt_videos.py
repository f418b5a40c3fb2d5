"""Tracking quality on ground-truth videos of the target (from `rtkp synth --videos N`): raw vs causal vs offline.

For each video: RMSE on frames where the keypoint is visible in the ground truth, jitter (mean |second difference|
of the estimate minus that of the truth), lag (the delay that best aligns estimate and truth), and the time to
re-acquire a keypoint after an occlusion episode (from the episode's end until the keypoint is reported visible
within 5 px of the truth).

    python tools/track_gt_videos.py runs/synth_test/videos/*.mp4 [--model engines/target_coke] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def lag_frames(est: np.ndarray, truth: np.ndarray, ok: np.ndarray, max_lag: int = 8) -> int:
    errs = []
    for d in range(max_lag + 1):
        m = ok[d:] & ok[: len(ok) - d]
        errs.append(np.sqrt(((est[d:][m] - truth[: len(truth) - d][m]) ** 2).sum(-1).mean()) if m.any() else np.inf)
    return int(np.argmin(errs))


def evaluate(frames, gt, fps) -> dict:
    est = np.stack([kf.keypoints for kf in frames]).astype(np.float64)
    vis_pred = np.stack([kf.visible for kf in frames])
    truth = np.array([f["kp"] for f in gt["frames"]])[: len(est)]
    vis = np.array([f["visible"] for f in gt["frames"]])[: len(est)]
    err = np.linalg.norm(est - truth, axis=2)
    d2 = np.linalg.norm(np.diff(est, 2, axis=0) - np.diff(truth, 2, axis=0), axis=2)
    ok2 = vis[2:] & vis[1:-1] & vis[:-2]
    lags = [lag_frames(est[:, k], truth[:, k], vis[:, k]) for k in range(est.shape[1])]
    reacq = []
    for _, end in gt["episodes"]:
        for k in range(est.shape[1]):
            hidden = not vis[end - 1, k] if end - 1 < len(vis) else False
            if not hidden:
                continue
            found = next((i for i in range(end, len(est)) if vis_pred[i, k] and err[i, k] < 5), None)
            if found is not None:
                reacq.append((found - end) / fps * 1000)
    return {
        "rmse_px": float(np.sqrt((err[vis] ** 2).mean())),
        "median_px": float(np.median(err[vis])),
        "p90_px": float(np.percentile(err[vis], 90)),
        "jitter_px": float(d2[ok2].mean()),
        "lag_ms": float(np.median(lags)) / fps * 1000,
        "reacquire_ms_median": float(np.median(reacq)) if reacq else None,
        "reacquire_count": len(reacq),
    }


def main() -> None:
    from rtkp.backends import open_backend, read_model_info
    from rtkp.config import SmoothingConfig
    from rtkp.export.offline_smoothing import smooth_frames as offline_smooth
    from rtkp.messages import Frame, ModelResult
    from rtkp.pipeline.sources import Source, parse_source
    from rtkp.tracker import KeypointStage, ModelStage

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("videos", nargs="+")
    ap.add_argument("--model", default=str(REPO / "engines/target_coke"))
    ap.add_argument("--json")
    args = ap.parse_args()
    info = read_model_info(args.model)
    backend = open_backend(args.model, "onnxruntime")
    pre = ModelStage(backend, info.manifest)
    modes = {
        "raw": SmoothingConfig(filter="none"),
        "one_euro": SmoothingConfig(filter="one_euro"),
        "kalman": SmoothingConfig(filter="kalman"),
    }
    totals: dict[str, list] = {m: [] for m in list(modes) + ["offline"]}
    for video in args.videos:
        gt = json.loads(Path(video).with_suffix(".gt.json").read_text())
        metas, raws, size = [], [], None
        for frame in Source(parse_source(video)):
            raws.append(backend.infer(pre.preprocess(frame.image)[None])[0])
            metas.append(Frame(frame.index, frame.pts, time.monotonic_ns(), None))
            size = frame.image.shape[1::-1]
        for name, cfg in modes.items():
            stage = KeypointStage(info.manifest, cfg)
            frames = [stage.finish(ModelResult(m, size, r, {})) for m, r in zip(metas, raws)]
            totals[name].append(evaluate(frames, gt, gt["fps"]))
            if name == "raw":
                totals["offline"].append(evaluate(offline_smooth(frames, SmoothingConfig()), gt, gt["fps"]))
    summary = {}
    for name, rows in totals.items():
        summary[name] = {
            k: round(float(np.mean([r[k] for r in rows if r[k] is not None])), 3)
            for k in ("rmse_px", "median_px", "p90_px", "jitter_px", "lag_ms", "reacquire_ms_median")
        }
    print(
        f"{'mode':>9} {'RMSE px':>8} {'median px':>10} {'p90 px':>7} {'jitter px':>10} {'lag ms':>7} {'re-acq ms':>10}"
    )
    for name, r in summary.items():
        row = f"{name:>9} {r['rmse_px']:8.2f} {r['median_px']:10.2f} {r['p90_px']:7.2f} {r['jitter_px']:10.3f}"
        print(f"{row} {r['lag_ms']:7.1f} {r['reacquire_ms_median']:10.1f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"videos": args.videos, "summary": summary, "per_video": totals}, indent=1) + "\n"
        )


if __name__ == "__main__":
    main()
