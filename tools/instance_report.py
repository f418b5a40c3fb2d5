"""Score a multi-instance model's COCO export against a SLEAP file's labels, as issue 28 judges it.

    python tools/instance_report.py --coco PRED.json --labels clip.slp [--frames a:b] [--offset N] [--json OUT]

PRED.json: `rtkp export --format coco` of a multi-instance model on the labels' video (or on a cut of it): one
annotation per animal with `track_id`, images with `frame_index`. Export frame i is frame i + offset of the labels;
the offset defaults to a with --frames a:b (an export of the cut starting at frame a), else 0. Only labelled frames in
[a, b) are scored. Targets: every fly's PCK@0.1 >= 0.9, all flies found in >= 98 % of frames, IDF1 >= 0.95, at most
one ID switch (motmetrics' count: one labelled fly whose predicted id changes; two flies swapping ids make two).
Prints a table and writes the whole report as JSON (default: beside PRED.json, <name>.instances.json).

    python tools/instance_report.py --coco val_export.json --labels ../shared/data/sleap_flies_clip/clip_train.slp \
        --frames 1000:1250
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

TARGETS = {  # name: (what is compared, target, True when the value must be at least the target)
    "pck@0.1 of every fly": ("min_track_pck", 0.9, True),
    "all flies found (share of frames)": ("all_found_share", 0.98, True),
    "IDF1": ("idf1", 0.95, True),
    "ID switches": ("id_switches", 1, False),
}


def parse_frames(text: str | None) -> tuple[int, int | None]:
    if text is None:
        return 0, None
    try:
        a, b = text.split(":")
        start, stop = int(a or 0), (int(b) if b else None)
    except ValueError:
        raise SystemExit(f"--frames {text!r}: give a:b (label frames, b excluded), e.g. 1000:1250") from None
    if start < 0 or (stop is not None and stop <= start):
        raise SystemExit(f"--frames {text!r}: needs 0 <= a < b")
    return start, stop


def score(coco: Path, labels: Path, start: int, stop: int | None, offset: int) -> dict:
    """The evaluate_instances report of the export against the labelled frames in [start, stop), plus targets."""
    from rtkp.data.load import load_dataset
    from rtkp.errors import DataError
    from rtkp.eval.coco_predictions import read_predicted_coco, select_keypoints
    from rtkp.eval.instances import evaluate_instances, labelled_frames

    data = load_dataset(labels, check_images=False)
    videos = {s.image_path for s in data.samples}
    if len(videos) != 1 or any(s.frame is None for s in data.samples):
        raise DataError(f"{labels}: labels of {len(videos)} videos or of images; this scores one video's labels")
    names, predicted = read_predicted_coco(coco)
    common = [n for n in data.keypoint_names if n in names]
    if not common:
        raise DataError(f"{coco}: its keypoints {names} and the labels' {data.keypoint_names} have none in common")
    if common != data.keypoint_names:
        data = data.select_keypoints(common, "the keypoints that export and labels share")
    predicted = select_keypoints(predicted, names, common)
    frames = [f for f in labelled_frames(data) if f[0].frame >= start and (stop is None or f[0].frame < stop)]
    frames.sort(key=lambda f: f[0].frame)
    scored = [f for f in frames if f[0].frame - offset in predicted]
    if not scored:
        raise DataError(
            f"{coco}: none of its frames ({len(predicted)}) is a labelled frame in the range once shifted by "
            f"--offset {offset}: check --frames and --offset"
        )
    report = evaluate_instances([predicted[f[0].frame - offset] for f in scored], scored, common)
    report["frames_without_export"] = len(frames) - len(scored)
    report["frame_numbers"] = [scored[0][0].frame, scored[-1][0].frame]
    report["frames_not_all_found"] = [scored[i][0].frame for i in report["frames_not_all_found"]]
    report["targets"] = targets(report)
    return report


def targets(report: dict) -> dict:
    tracking = report["tracking"] or {}
    values = {
        "min_track_pck": min((t["pck"]["0.1"] for t in report["per_track"].values()), default=float("nan")),
        "all_found_share": report["all_found_share"],
        "idf1": tracking.get("idf1", float("nan")),
        "id_switches": tracking.get("id_switches", float("nan")),
    }
    out = {}
    for name, (key, target, at_least) in TARGETS.items():
        value = values[key]
        met = not math.isnan(value) and (value >= target if at_least else value <= target)
        out[name] = {"value": value, "target": target, "met": bool(met)}
    return out


def print_table(report: dict) -> None:
    first, last = report["frame_numbers"]
    print(
        f"frames {first}..{last}: {report['frames']} scored ({report['frames_without_export']} labelled frames "
        "without an exported frame)"
    )
    print(f"{'fly':<16}{'labelled':>9}{'found':>7}{'PCK@0.05':>10}{'PCK@0.1':>9}{'RMSE px':>9}")
    for name, t in report["per_track"].items():
        print(
            f"{name:<16}{t['instances']:>9}{t['found']:>7}{t['pck']['0.05']:>10.3f}{t['pck']['0.1']:>9.3f}"
            f"{t['rmse_px']:>9.2f}"
        )
    print(
        f"{'all':<16}{report['labelled_instances']:>9}{report['found']:>7}{report['pck']['0.05']:>10.3f}"
        f"{report['pck']['0.1']:>9.3f}{report['rmse_px']:>9.2f}"
    )
    print(
        f"missed {report['missed']}, extra {report['extra']}, OKS mAP {report['oks']['map']:.3f} "
        f"(AP50 {report['oks']['map50']:.3f})"
    )
    tracking = report["tracking"]
    if tracking:
        print(
            f"IDF1 {tracking['idf1']:.3f}, ID switches {tracking['id_switches']} in {tracking['switch_frames']} "
            f"frame(s), MOTA {tracking['mota']:.3f}"
        )
    else:
        print("tracking: not scored (labels or predictions without track ids)")
    for name, t in report["targets"].items():
        comparison = ">=" if TARGETS[name][2] else "<="
        print(f"{'met ' if t['met'] else 'MISS'} {name}: {t['value']:.4g} (target {comparison} {t['target']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco", type=Path, required=True, help="COCO export of a multi-instance model")
    parser.add_argument("--labels", type=Path, required=True, help="SLEAP .slp (or other labels) of the same video")
    parser.add_argument("--frames", help="a:b, the labels' frames to score (b excluded)")
    parser.add_argument("--offset", type=int, help="label frame = export frame_index + offset (default: a)")
    parser.add_argument("--json", type=Path, help="where to write the report (default: beside --coco)")
    args = parser.parse_args(argv)
    start, stop = parse_frames(args.frames)
    offset = start if args.offset is None else args.offset
    from rtkp.errors import RtkpError

    try:
        report = score(args.coco, args.labels, start, stop, offset)
    except RtkpError as exc:
        print(f"instance_report: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    print_table(report)
    out = args.json or args.coco.with_name(args.coco.stem + ".instances.json")
    out.write_text(json.dumps(report, indent=1))
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
