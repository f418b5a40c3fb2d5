"""`rtkp eval` of a multi-instance model: the Tracker over labelled frames, then rtkp.eval.instances' figures.

Frames of one video are tracked in time order by one Tracker (so track ids carry from frame to frame and IDF1 means
something); unrelated images each get a fresh Tracker, as the single-instance evaluation does.
"""

from __future__ import annotations

from pathlib import Path

from rtkp.data.sample import Dataset
from rtkp.errors import DataError
from rtkp.eval.instances import as_predicted, evaluate_instances, labelled_frames
from rtkp.eval.names import match_keypoints, not_scored_lines


def evaluate_model_instances(
    model_dir: Path,
    data: Dataset,
    backend: str = "auto",
    precision: str | None = None,
    max_instances: int | None = None,
    progress: bool = True,
) -> dict:
    """Figures (evaluate_instances' report, plus "model", "backend") for a multi-instance model on `data`."""
    import sys

    from tqdm import tqdm

    from rtkp.backends import open_backend
    from rtkp.messages import Frame
    from rtkp.smoothing import NOMINAL_STEP_S
    from rtkp.tracker import Tracker

    opened = open_backend(str(model_dir), backend, precision=precision)
    manifest = opened.info.manifest
    names = list(manifest.keypoint_names)
    common, left_out = match_keypoints(names, data.keypoint_names)
    if not common:
        raise DataError(f"the data's keypoints ({', '.join(data.keypoint_names)}) share none with the model's")
    cols = [names.index(n) for n in common]
    data = data.select_keypoints(common, "--keypoints") if common != data.keypoint_names else data
    frames = labelled_frames(data)
    predicted, tracker, video = [], None, None
    for i, samples in enumerate(tqdm(frames, desc="eval", unit="frame", disable=not progress, file=sys.stderr)):
        first = samples[0]
        this_video = (first.image_path, None) if first.frame is not None else None
        if this_video is None or this_video != video or tracker is None:
            tracker = Tracker(opened, manifest, max_instances=max_instances)  # a new video, or an unrelated image
        video = this_video
        # a video's frames keep their spacing in time (the nominal step per frame: only ratios matter here)
        pts = first.frame * NOMINAL_STEP_S if first.frame is not None else None
        result = tracker.process(Frame(first.frame if first.frame is not None else i, pts, 0, first.load_image()))
        predicted.append([as_predicted(inst, cols) for inst in result.instances])
    opened.close()
    report = dict(evaluate_instances(predicted, frames, common), model=str(model_dir), backend=opened.name)
    if left_out:
        report["not_scored"] = left_out
    return report


def format_instances_report(report: dict) -> str:
    """The report as a short table: per labelled track, then all animals, misses, OKS mAP and tracking."""
    lines = [f"{'animal':<16}{'labelled':>9}{'found':>7}{'PCK@0.05':>10}{'PCK@0.1':>9}{'RMSE px':>9}"]
    rows = list(report["per_track"].items()) + [("all", report)]
    for name, t in rows:
        instances = t.get("instances", t.get("labelled_instances"))
        lines.append(
            f"{name:<16}{instances:>9}{t['found']:>7}{t['pck']['0.05']:>10.3f}{t['pck']['0.1']:>9.3f}"
            f"{t['rmse_px']:>9.2f}"
        )
    lines.append(
        f"missed {report['missed']}, extra {report['extra']}, all animals found in {report['all_found_share']:.1%} "
        f"of frames, OKS mAP {report['oks']['map']:.3f} (AP50 {report['oks']['map50']:.3f})"
    )
    tracking = report["tracking"]
    if tracking:
        lines.append(
            f"IDF1 {tracking['idf1']:.3f}, ID switches {tracking['id_switches']} in {tracking['switch_frames']} "
            f"frame(s), MOTA {tracking['mota']:.3f}"
        )
    else:
        lines.append("tracking: not scored (labels or predictions without track ids)")
    return "\n".join(lines + not_scored_lines(report))
