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
`--keypoint` is removed from the set first (unless --keep-trained); a model trained without it (`rtkp train
--keypoints`, tools/fewshot.py) shows it honestly: its features never saw that keypoint.

--occlude a:b covers the taught keypoint of the `--track` animal with a disc of a real photograph (--occluder, radius
--radius px, centred on its label) on frames a..b−1: the report gives how often the taught keypoint is still reported
visible within 0.1 × size there (it should not be: it is behind the photo), and after the span how many frames pass
until it is found again and its PCK@0.1 (visible) on the rest of the frames.
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
    ap.add_argument("--occlude", type=span, help="a:b frames on which a photo covers the taught keypoint of --track")
    ap.add_argument("--occluder", type=Path, default=Path("../shared/data/mmpose_samples/coco"), help="photo folder")
    ap.add_argument("--radius", type=int, default=40, help="occluder disc radius, source px (default 40)")
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
    if not a.keep_trained and a.keypoint in kset.names:
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
    index, lesson = teach_keypoint(
        kset,
        ShotReader.for_model(backend, info.manifest),
        name,
        images,
        np.stack(points),
    )
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
    photo = occluder_photo(a.occluder) if a.occlude else None
    occlusion = {"covered": 0, "seen_through": 0, "after": 0, "after_hit": 0, "found_again_after_frames": None}
    for f in sorted(frames):
        samples = frames[f]
        image = samples[0].load_image()
        covered = a.occlude is not None and a.occlude[0] <= f < a.occlude[1]
        after = a.occlude is not None and f >= a.occlude[1]
        target = next((s for s in samples if s.track == a.track and s.visible[k]), None)
        if covered and target is not None:
            image = cover(image, photo, target.keypoints[k], a.radius)
        kf = tracker.process(Frame(f, f / 25, 0, image))
        for s in samples:
            t = tally.setdefault(s.track, {"labelled": 0, "taught_hit": 0, "trained_hit": 0})
            if not s.visible[k]:
                continue
            side = box_side(s.keypoints, s.visible)
            near = [i for i in kf.instances if np.linalg.norm(i.keypoints[index] - s.keypoints[k]) <= 0.1 * side]
            hit = any(i.visible[index] for i in near)
            if s is target and (covered or after):
                occlusion["covered" if covered else "after"] += 1
                occlusion["seen_through" if covered else "after_hit"] += hit
                if after and hit and occlusion["found_again_after_frames"] is None:
                    occlusion["found_again_after_frames"] = f - a.occlude[1]
            if covered:
                continue  # the covered span is reported above, not in the per-animal figures
            t["labelled"] += 1
            t["taught_hit"] += hit
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
        "lesson": {
            "margin": lesson.margin,
            "visible": lesson.visible,
            "lookalike": lesson.lookalike,
            **lesson.placement(),
        },
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
    if a.occlude:
        report["occlusion"] = {"frames": list(a.occlude[:2]), "radius_px": a.radius, **occlusion}
    print(f"{name}: taught from {len(picked)} clicks on {a.track!r} only (margin {lesson.margin:.3f})")
    for track, t in report["per_track"].items():
        extra = f", trained keypoint {t['trained_pck@0.1_visible']:.3f}" if "trained_pck@0.1_visible" in t else ""
        print(
            f"  {track}: visible and within 0.1 x size on {t['taught_pck@0.1_visible']:.3f} of {t['labelled']} "
            f"labelled frames{extra}"
        )
    if a.occlude:
        o = occlusion
        print(
            f"  covered on {a.track!r} for frames {a.occlude[0]}..{a.occlude[1] - 1}: reported visible at its label on "
            f"{o['seen_through']} of {o['covered']} frames; found again {o['found_again_after_frames']} frame(s) "
            f"after the cover went, then on {o['after_hit']} of {o['after']} labelled frames"
        )
    if a.json:
        a.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


def occluder_photo(folder: Path) -> np.ndarray:
    """The first photograph of `folder` (rtkp.data.occlude.load_photos), to cut discs from."""
    from rtkp.data.occlude import load_photos

    photos = load_photos(folder)
    if not photos:
        sys.exit(f"teach_instances: no photographs in {folder}")
    return photos[0]


def cover(image: np.ndarray, photo: np.ndarray, centre, radius: int) -> np.ndarray:
    """image with a disc of `photo` (its middle, resized to cover the disc) of `radius` px centred on `centre`."""
    import cv2

    out = image.copy()
    side = 2 * radius + 1
    ph, pw = photo.shape[:2]
    s = min(ph, pw)
    patch = cv2.resize(photo[(ph - s) // 2 : (ph + s) // 2, (pw - s) // 2 : (pw + s) // 2], (side, side))
    mask = np.zeros(out.shape[:2], np.uint8)
    cv2.circle(mask, (int(round(centre[0])), int(round(centre[1]))), radius, 1, -1)
    canvas = np.zeros_like(out)
    x0, y0 = int(round(centre[0])) - radius, int(round(centre[1])) - radius
    h, w = out.shape[:2]
    xs, ys = slice(max(x0, 0), min(x0 + side, w)), slice(max(y0, 0), min(y0 + side, h))
    canvas[ys, xs] = patch[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
    out[mask > 0] = canvas[mask > 0]
    return out


if __name__ == "__main__":
    sys.exit(main())
