"""A keypoint taught from clicks on ONE animal is found on EVERY animal (live teaching, multi-instance model).

    python tools/teach_instances.py --model engines/sleap_flies_coke \
        --labels ../shared/data/sleap_flies_clip/clip_train.slp --keypoint head --track female --shots 5 \
        --teach-frames 0:1000 --frames 1000:1250 [--json OUT]

The shots are clicks at the labelled `--keypoint` of the `--track` animal only, on `--shots` frames spread over
`--teach-frames`, taught under a new name through the same code as `rtkp keypoints add` and the control socket
(rtkp.teach.shots.teach_keypoint). The Tracker then runs with the taught keypoint on the `--frames` frames (held out
from the shots), and for every labelled animal the report gives how often the taught keypoint is visible on it and
its PCK@0.1 against that animal's label of `--keypoint` (threshold 0.1 × the longer side of its labelled box), next to
the trained keypoint's own figures. To show it on a keypoint the model was not trained on, the trained prototype of
`--keypoint` is removed from the set first (--remove-trained, the default).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def span(text: str) -> tuple[int, int, int]:
    """a:b or a:b:step -> (a, b, step)."""
    parts = [int(v) for v in text.split(":")]
    return parts[0], parts[1], parts[2] if len(parts) > 2 else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--labels", type=Path, required=True)
    ap.add_argument("--keypoint", required=True)
    ap.add_argument("--track", required=True)
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--teach-frames", type=span, default=(0, 1000, 1))
    ap.add_argument("--frames", type=span, default=(1000, 1250, 1), help="a:b[:step] of the labels scored")
    ap.add_argument("--keep-trained", action="store_true", help="keep the trained keypoint in the set")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    from rtkp.backends import open_backend
    from rtkp.data.load import load_dataset
    from rtkp.eval.matching import box_side
    from rtkp.geometry import Letterbox
    from rtkp.messages import Frame
    from rtkp.teach.keypoint_set import KeypointSet
    from rtkp.teach.shots import ShotReader, teach_keypoint
    from rtkp.tracker import Tracker

    data = load_dataset(a.labels)
    k = data.keypoint_names.index(a.keypoint)
    backend = open_backend(a.model, "onnxruntime")
    info = backend.info
    kset = KeypointSet.from_model(info.manifest, info.prototypes, info.clutter)
    before = list(kset.names)
    if not a.keep_trained:
        kset.remove(a.keypoint)
    lo, hi, _ = a.teach_frames
    pool = [s for s in data.samples if s.track == a.track and s.visible[k] and lo <= s.frame < hi]
    picked = [pool[int(i)] for i in np.linspace(0, len(pool) - 1, a.shots).round()]
    images, points = [], []
    for s in picked:
        image = s.load_image()
        box = Letterbox.fit((image.shape[1], image.shape[0]), info.input_size)
        images.append(box.apply(image))
        points.append(box.to_model(s.keypoints[k]))
    name = f"taught_{a.keypoint}"
    index, lesson = teach_keypoint(kset, ShotReader(backend, info.manifest.stride), name, images, np.stack(points))
    tracker = Tracker(backend, info.manifest)
    previous = [before.index(n) if n in before else -1 for n in kset.names]
    tracker.change_keypoints(kset.prototypes, kset.clutter, list(kset.names), kset.margins.copy(), previous)
    trained = kset.names.index(a.keypoint) if a.keypoint in kset.names else None

    lo, hi, step = a.frames
    frames = {}
    for s in data.samples:
        if lo <= s.frame < hi and (s.frame - lo) % step == 0:
            frames.setdefault(s.frame, []).append(s)
    tally: dict[str, dict] = {}
    for f in sorted(frames):
        samples = frames[f]
        kf = tracker.process(Frame(f, f / 25, 0, samples[0].load_image()))
        for s in samples:
            t = tally.setdefault(s.track, {"labelled": 0, "taught_hit": 0, "trained_hit": 0})
            if not s.visible[k]:
                continue
            t["labelled"] += 1
            side = box_side(s.keypoints, s.visible)
            near = [i for i in kf.instances if np.linalg.norm(i.keypoints[index] - s.keypoints[k]) <= 0.1 * side]
            t["taught_hit"] += any(i.visible[index] for i in near)
            if trained is not None:
                t["trained_hit"] += any(
                    np.linalg.norm(i.keypoints[trained] - s.keypoints[k]) <= 0.1 * side and i.visible[trained]
                    for i in kf.instances
                )
    backend.close()
    report = {
        "model": a.model,
        "keypoint": a.keypoint,
        "taught_on_track": a.track,
        "shots": [s.name for s in picked],
        "lesson": {"margin": lesson.margin, "visible": lesson.visible, "lookalike": lesson.lookalike},
        "frames": [lo, hi, step],
        "per_track": {
            track: {
                "labelled": t["labelled"],
                "taught_pck@0.1_visible": t["taught_hit"] / max(t["labelled"], 1),
                **(
                    {"trained_pck@0.1_visible": t["trained_hit"] / max(t["labelled"], 1)} if trained is not None else {}
                ),
            }
            for track, t in sorted(tally.items())
        },
    }
    print(f"{name}: taught from {len(picked)} clicks on {a.track!r} only (margin {lesson.margin:.3f})")
    for track, t in report["per_track"].items():
        extra = f", trained keypoint {t['trained_pck@0.1_visible']:.3f}" if "trained_pck@0.1_visible" in t else ""
        print(
            f"  {track}: visible and within 0.1 x size on {t['taught_pck@0.1_visible']:.3f} of {t['labelled']} "
            f"labelled frames{extra}"
        )
    if a.json:
        a.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
