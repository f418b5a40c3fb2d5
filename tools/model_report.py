"""The figures of issue 15 for one model folder: test split, real-photo occlusion, empty arena and a whole video.

    python tools/model_report.py --model engines/dlc_mouse_coke [--data ../shared/data/dlc_openfield_mouse]
        [--split DATA/split.json] [--occluders ../shared/data/mmpose_samples] [--video DATA/videos/m3v1mp4.mp4]
        [--skip-video] [--export-dir DIR] [--debug-masks DIR] [--json out.json]

Everything runs through the path users run: still images through rtkp.backends.open_backend(model, "auto") and the
Tracker (rtkp.train.evaluate), the video through the real `rtkp export` command with its default settings.

1. Test split: RMSE, PCK@0.1 and the rate of labelled keypoints reported visible, on the split's `test` list only.
2. Real-photo occlusion (--occluders): occluders cut from photographs (evaluation-only material) at L0..L3; per level
   PCK@0.1 of the uncovered keypoints, its drop from L0 in points, covered keypoints reported hidden, uncovered ones
   reported visible.
3. Empty arena: the video's median background (no mouse) plus Gaussian sensor noise; the fraction of keypoints
   reported hidden should be >= 95 %. The background is evaluation-only material, never used for training.
4. Video: the fraction of keypoints reported visible (target >= 90 %), and of those the fraction with no mouse pixel
   within NEAR_PX (false visible, target <= 1 %). The mouse mask: pixels differing from the median background by more
   than DIFF_THRESHOLD grey levels, opened, reduced to the largest component plus small fragments next to it (the
   mouse's reflection on the arena wall is a large separate component and must not count as mouse).
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "dlc_openfield_mouse"

LEVEL_NAMES = ("L0", "L1", "L2", "L3")
BACKGROUND_FRAMES = 60
NOISE_SIGMAS = (2.0, 4.0, 8.0)
NOISE_DRAWS = 10
DIFF_THRESHOLD = 40  # grey levels: the black mouse differs by 100+, its grey tail by 60+, sensor noise by < 10
OPEN_PX = 3  # removes single-pixel noise but keeps the 3-5 px wide tail
JOIN_PX = 10  # fragments (a tail tip cut off by the opening) lie within a few px; the wall reflection usually further
FRAGMENT_MAX = 0.15  # ... and fragments are small; the reflection is 40-70 % of the mouse when near it
NEAR_PX = 15
GRID_PX = 20
TARGETS = {"empty_hidden": 0.95, "video_visible": 0.90, "false_visible": 0.01}


# ---------------------------------------------------------------- 1 and 2: labelled test frames


def split_figures(model: Path, data: Path, split: Path | None, occluders: Path | None, progress: bool) -> dict:
    """Test-split figures, and the real-photo occlusion levels when `occluders` is given."""
    from rtkp.data.load import load_split
    from rtkp.data.occlude import load_photos
    from rtkp.train.evaluate import evaluate

    test = load_split(data, split, "test")
    photos = load_photos(occluders) if occluders else None
    report = evaluate(
        model,
        test,
        occlusion=photos is not None,
        progress=progress,
        photos=photos,
        photos_source=str(occluders) if occluders else None,
    )
    out = {
        "backend": report["backend"],
        "precision": report["precision"],
        "test": {
            "images": report["images"],
            "rmse_px": report["rmse_px"],
            "pck_0.1": report["pck"]["0.1"],
            "visible_rate": report["visible_rate"],
        },
    }
    if photos is not None:
        out["occlusion"] = occlusion_levels(report["occlusion"])
        out["occlusion"]["occluders"] = report["occluders"]
        out["occlusion"]["photos"] = len(photos)
    return out


def occlusion_levels(levels: dict) -> dict:
    """the per-level figures -> {level: pck_0.1, drop_points, covered_hidden, uncovered_visible, ...}."""
    l0 = levels["L0"]["pck"]["0.1"]
    out = {}
    for name in LEVEL_NAMES:
        fig = levels[name]
        pck = fig["pck"]["0.1"]
        out[name] = {
            "coverage": fig["coverage"],
            "images": fig["images"],
            "pck_0.1": pck,
            "drop_points": (l0 - pck) * 100,
            "covered_hidden": fig["visibility_accuracy_covered"],  # None at L0: nothing is covered
            "uncovered_visible": fig["visible_rate_uncovered"],
            "covered": fig["covered"],
            "uncovered": fig["uncovered"],
        }
    return out


# ---------------------------------------------------------------- video frames and the median background


def frame_count(video: Path) -> int:
    """Frames in the video: the container's count, or (when it has none) its video packets, which need no decoding."""
    import av

    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for p in container.demux(stream) if p.size)


def read_frames(video: Path, wanted: set[int] | None = None):
    """Yield (index, (H, W, 3) uint8 RGB) in decode order; index counts every decoded frame, as `rtkp export` does."""
    import av

    last = max(wanted) if wanted else None
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if wanted is None or i in wanted:
                yield i, frame.to_ndarray(format="rgb24")
            if last is not None and i >= last:
                return


def median_background(video: Path, n: int = BACKGROUND_FRAMES) -> np.ndarray:
    """(H, W, 3) uint8: the per-pixel median of `n` frames spread evenly over the video (the moving mouse drops out)."""
    total = frame_count(video)
    wanted = set(np.linspace(0, total - 1, min(n, total)).round().astype(int).tolist())
    frames = [image for _, image in read_frames(video, wanted)]
    return np.median(np.stack(frames), axis=0).round().astype(np.uint8)


# ---------------------------------------------------------------- 3: empty arena


def noisy_backgrounds(background: np.ndarray, sigma: float, draws: int) -> list[np.ndarray]:
    """`draws` copies of background (H, W, 3) uint8 plus N(0, sigma) noise per pixel and channel, seeded by sigma."""
    out = []
    for d in range(draws):
        rng = np.random.default_rng([15, int(sigma * 100), d])
        noisy = background.astype(np.float32) + rng.normal(0, sigma, background.shape).astype(np.float32)
        out.append(np.clip(noisy.round(), 0, 255).astype(np.uint8))
    return out


def empty_arena(model: Path, background: np.ndarray, sigmas=NOISE_SIGMAS, draws: int = NOISE_DRAWS) -> dict:
    """Fraction of keypoints reported hidden on the noisy empty arena, per sigma and over all draws."""
    from rtkp.backends import open_backend, read_model_info
    from rtkp.train.evaluate import predict_all

    manifest = read_model_info(model).manifest
    backend = open_backend(model, "auto")
    try:
        per_sigma = {}
        for sigma in sigmas:
            _, visible = predict_all(backend, manifest, noisy_backgrounds(background, sigma, draws))
            per_sigma[f"{sigma:g}"] = float((~visible).mean())
        return {
            "backend": backend.name,
            "draws_per_sigma": draws,
            "hidden_by_sigma": per_sigma,
            "hidden": float(np.mean(list(per_sigma.values()))),  # same number of keypoints per sigma
        }
    finally:
        backend.close()


# ---------------------------------------------------------------- 4: the whole video


def mouse_mask(frame: np.ndarray, background: np.ndarray, threshold: int = DIFF_THRESHOLD) -> np.ndarray:
    """(H, W) bool: the mouse in frame (H, W, 3) uint8, from its difference to background (H, W, 3) uint8.

    The largest changed component is the mouse; other components join it only when small and within JOIN_PX (a tail
    piece the opening cut off), so the mouse's reflection on the wall, a large blob a few px away, stays out.
    """
    import cv2

    diff = np.abs(frame.astype(np.int16) - background.astype(np.int16)).max(-1)
    changed = (diff > threshold).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (OPEN_PX, OPEN_PX))
    changed = cv2.morphologyEx(changed, cv2.MORPH_OPEN, kernel)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(changed, connectivity=8)
    if n <= 1:
        return np.zeros(changed.shape, bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    mouse = 1 + int(np.argmax(areas))
    keep = [mouse]
    small = [j for j in range(1, n) if j != mouse and areas[j - 1] <= FRAGMENT_MAX * areas[mouse - 1]]
    if small:
        # distance of every pixel to the mouse component (0 on it)
        dist = cv2.distanceTransform((labels != mouse).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        keep += [j for j in small if dist[labels == j].min() <= JOIN_PX]
    return np.isin(labels, keep)


def far_from_mask(mask: np.ndarray, xy: np.ndarray, radius: float = NEAR_PX) -> np.ndarray:
    """(K,) bool: keypoints xy (K, 2) with no mask pixel within `radius` px (all of them when the mask is empty).

    A keypoint outside the image is measured from the nearest image pixel plus its distance to the image (an upper
    bound on the true distance: it can only call such rare points far, never near, by mistake).
    """
    import cv2

    if not mask.any():
        return np.ones(len(xy), bool)
    h, w = mask.shape
    dist = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    clamped = np.stack([np.clip(xy[:, 0], 0, w - 1), np.clip(xy[:, 1], 0, h - 1)], 1)
    outside = np.linalg.norm(xy - clamped, axis=1)
    ij = np.floor(clamped + 0.5).astype(int)
    return dist[ij[:, 1], ij[:, 0]] + outside > radius


def run_export(video: Path, model: Path, out_dir: Path, quiet: bool) -> tuple[Path, float]:
    """`rtkp export VIDEO --model M --out DIR --format jsonl` (default settings otherwise) -> (JSONL path, seconds)."""
    cmd = [sys.executable, "-m", "rtkp", "export", str(video), "--model", str(model), "--out", str(out_dir)]
    cmd += ["--format", "jsonl"] + (["--quiet"] if quiet else [])
    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    print(done.stdout, end="", file=sys.stderr)
    if done.returncode != 0:
        raise SystemExit(f"model_report: `{' '.join(cmd)}` failed with exit code {done.returncode}")
    return out_dir / f"{video.stem}.jsonl", seconds


def read_records(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """An `rtkp export` JSONL file -> (names, frame indices (N,), xy (N, K, 2) float32, visible (N, K) bool).

    One record a line (jsonl_line): {"frame": i, "keypoints": {name: [x, y, score, visible, state]}}.
    """
    frames, xy, visible, names = [], [], [], None
    with open(path) as fh:
        for line in fh:
            rec = json.loads(line)
            names = names or list(rec["keypoints"])
            frames.append(rec["frame"])
            xy.append([rec["keypoints"][n][:2] for n in names])
            visible.append([rec["keypoints"][n][3] for n in names])
    if names is None:
        raise SystemExit(f"model_report: {path} holds no records")
    return names, np.array(frames), np.array(xy, np.float32), np.array(visible, bool)


def false_visible_figures(names: list[str], xy: np.ndarray, visible: np.ndarray, far: np.ndarray) -> dict:
    """xy (N, K, 2), visible and far (N, K) bool -> visible rate, false-visible fraction and where, overall and per
    keypoint. False visible: reported visible with no mouse pixel within NEAR_PX."""
    false = visible & far

    def figures(v: np.ndarray, f: np.ndarray, pts: np.ndarray) -> dict:
        cells = collections.Counter(tuple(int(c) for c in np.round(p / GRID_PX) * GRID_PX) for p in pts)
        return {
            "visible": float(v.mean()),
            "false_visible": float(f.sum() / v.sum()) if v.any() else None,
            "false_visible_count": int(f.sum()),
            "top_false_locations": [{"xy": list(c), "count": n} for c, n in cells.most_common(3)],
        }

    out = figures(visible, false, xy[false])
    out["per_keypoint"] = {n: figures(visible[:, k], false[:, k], xy[:, k][false[:, k]]) for k, n in enumerate(names)}
    return out


def video_figures(
    video: Path, model: Path, background: np.ndarray, export_dir: Path, quiet: bool, debug_dir: Path | None
) -> dict:
    """Export the whole video with `rtkp export`, then pair each record with its decoded frame's mouse mask."""
    jsonl, seconds = run_export(video, model, export_dir, quiet)
    names, index, xy, visible = read_records(jsonl)
    row = {int(i): r for r, i in enumerate(index)}
    far = np.zeros_like(visible)
    debug = set(np.linspace(0, len(index) - 1, 6).round().astype(int).tolist()) if debug_dir else set()
    empty_masks, decoded = 0, 0
    for i, frame in read_frames(video):
        decoded += 1
        r = row.get(i)
        if r is None:
            continue
        mask = mouse_mask(frame, background)
        empty_masks += not mask.any()
        far[r] = far_from_mask(mask, xy[r])
        if r in debug:
            save_debug(debug_dir / f"frame{i:05d}.png", frame, mask, xy[r], visible[r], far[r])
    out = {
        "video": str(video),
        "frames_decoded": decoded,
        "records": len(index),
        "frames_without_mouse_mask": int(empty_masks),
        "export_seconds": seconds,
        "near_px": NEAR_PX,
    }
    out.update(false_visible_figures(names, xy, visible, far))
    return out


def save_debug(path: Path, frame, mask, xy, visible, far) -> None:
    """The frame with the mask outlined in green, visible keypoints as dots (red: false visible), hidden as rings."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    out = frame.copy()
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, (0, 255, 0), 1)
    for (x, y), v, f in zip(xy, visible, far):
        centre = (int(round(x)), int(round(y)))
        cv2.circle(out, centre, 4, (255, 0, 0) if f else (0, 120, 255), -1 if v else 1)
    cv2.imwrite(str(path), cv2.cvtColor(out, cv2.COLOR_RGB2BGR))


# ---------------------------------------------------------------- output


def _pct(v) -> str:
    return "  n/a" if v is None else f"{100 * v:5.1f}%"


def _mark(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def format_table(report: dict) -> str:
    """The compact table printed at the end."""
    t = report["test"]
    lines = [
        f"{report['model']} ({report['backend']}, {report['precision']})",
        f"test split ({t['images']} images): RMSE {t['rmse_px']:.2f} px  PCK@0.1 {t['pck_0.1']:.3f}  "
        f"visible {_pct(t['visible_rate'])}",
    ]
    if "occlusion" in report:
        occ = report["occlusion"]
        lines.append(f"occlusion, {occ['occluders']} ({occ['photos']} photos):")
        lines.append("  level  coverage  PCK@0.1  drop pts  covered->hidden  uncovered->visible")
        for name in LEVEL_NAMES:
            o = occ[name]
            cov = f"{o['coverage'][0]:.0%}-{o['coverage'][1]:.0%}"
            lines.append(
                f"  {name:5}  {cov:>8}  {o['pck_0.1']:7.3f}  {o['drop_points']:8.1f}  "
                f"{_pct(o['covered_hidden']):>15}  {_pct(o['uncovered_visible']):>18}"
            )
    if "empty_arena" in report:
        e = report["empty_arena"]
        by = "  ".join(f"sigma {s}: {_pct(v)}" for s, v in e["hidden_by_sigma"].items())
        ok = _mark(e["hidden"] >= TARGETS["empty_hidden"])
        lines.append(f"empty arena, hidden: {_pct(e['hidden'])} [{ok}, target >= 95%]  ({by})")
    if "video" in report:
        v = report["video"]
        lines.append(
            f"video ({v['records']} frames, export {v['export_seconds']:.0f} s): visible {_pct(v['visible'])} "
            f"[{_mark(v['visible'] >= TARGETS['video_visible'])}, target >= 90%], false visible "
            f"{_pct(v['false_visible'])} [{_mark((v['false_visible'] or 0) <= TARGETS['false_visible'])}, "
            f"target <= 1%]"
        )
        for name, k in v["per_keypoint"].items():
            top = ", ".join(f"({c['xy'][0]},{c['xy'][1]})x{c['count']}" for c in k["top_false_locations"])
            lines.append(
                f"  {name:>10}: visible {_pct(k['visible'])}  false visible {_pct(k['false_visible'])} "
                f"({k['false_visible_count']}){'  at ' + top if top else ''}"
            )
        top = ", ".join(f"({c['xy'][0]},{c['xy'][1]}) x{c['count']}" for c in v["top_false_locations"])
        lines.append(f"  most common false-visible places ({GRID_PX} px cells): {top or 'none'}")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model folder")
    p.add_argument(
        "--data", default=str(DEFAULT_DATA), help="DeepLabCut project folder (default: the open-field mouse)"
    )
    p.add_argument("--split", help="split JSON (default: DATA/split.json)")
    p.add_argument("--occluders", help="folder of photos to cut occluders from (e.g. ../shared/data/mmpose_samples)")
    p.add_argument(
        "--video", help="video of the empty-arena background and the video figures (default: DATA/videos/m3v1mp4.mp4)"
    )
    p.add_argument("--skip-video", action="store_true", help="skip the whole-video figures (the empty arena stays)")
    p.add_argument("--export-dir", help="keep the `rtkp export` output here (a re-run reuses it); default: temporary")
    p.add_argument("--debug-masks", metavar="DIR", help="write 6 frames with mouse mask and keypoints as PNGs here")
    p.add_argument("--json", help="write the report to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    model, data = Path(args.model), Path(args.data)
    split = Path(args.split) if args.split else data / "split.json"
    video = Path(args.video) if args.video else data / "videos" / "m3v1mp4.mp4"
    report = {"model": str(model)}
    report.update(split_figures(model, data, split, Path(args.occluders) if args.occluders else None, not args.quiet))
    background = median_background(video)
    report["empty_arena"] = empty_arena(model, background)
    report["empty_arena"]["background"] = f"median of {BACKGROUND_FRAMES} frames of {video}"
    if not args.skip_video:
        debug = Path(args.debug_masks) if args.debug_masks else None
        if args.export_dir:
            report["video"] = video_figures(video, model, background, Path(args.export_dir), args.quiet, debug)
        else:
            with tempfile.TemporaryDirectory(prefix="model_report_") as tmp:
                report["video"] = video_figures(video, model, background, Path(tmp), args.quiet, debug)
    print(format_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
