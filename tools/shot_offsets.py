"""How often a shot measures its offset to a trained keypoint on the wrong animal: the offsets teaching reads from a
shot (rtkp.teach.shots.anchor_offsets, as `rtkp keypoints add` reads them) against the shot frame's own labels.

    python tools/shot_offsets.py --model runs/fs/flies3/base --data ../shared/data/sleap_flies_clip/clip_train.slp \
        --split runs/splits/flies_val.json --keypoints eyeL,wingL,midlegL4 [--shots 40] [--peaks 1] [--no-votes]

For each keypoint K, --shots training samples with K labelled, spread evenly over them, are read through the model
(the trained features); an offset from K to a trained keypoint that the model's ring rows would anchor on (its steady
ones on a multi-instance model, KeypointSet.reach_rows) counts as wrong when it is more than 0.1 of the animal's size
(the longer side of its labelled box) from the labelled offset. --peaks: the peaks per trained keypoint the offsets
choose from (default: the model's max_instances, as teaching does; 1: the best peak); among them teaching takes the
one whose centre vote meets the click's (--no-votes: the one nearest the click, the rule before the votes).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split")
    ap.add_argument("--keypoints", required=True, help="comma-separated taught keypoints (labelled in --data)")
    ap.add_argument("--shots", type=int, default=40)
    ap.add_argument("--peaks", type=int)
    ap.add_argument("--no-votes", action="store_true", help="the peak nearest the click, not the centre votes")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    from rtkp.backends import open_backend
    from rtkp.data.load import load_split
    from rtkp.eval.matching import box_side
    from rtkp.geometry import Letterbox
    from rtkp.teach.keypoint_set import KeypointSet
    from rtkp.teach.shots import anchor_offsets

    backend = open_backend(a.model, "onnxruntime")
    info = backend.info
    kset = KeypointSet.from_model(info.manifest, info.prototypes, info.clutter)
    peaks = a.peaks or info.manifest.max_instances or 1
    data = load_split(a.data, a.split, "train")
    names = data.keypoint_names
    rows = {n: r for n, r in kset.reach_rows().items() if n in names}
    d = kset.clutter.shape[1]
    trained = kset.prototypes[list(rows.values()), :d]
    report = {"model": a.model, "peaks": peaks, "votes": not a.no_votes, "anchors": list(rows), "keypoints": {}}
    for kp in a.keypoints.split(","):
        k = names.index(kp)
        pool = [s for s in data.samples if s.visible[k]]
        picked = [pool[int(i)] for i in np.linspace(0, len(pool) - 1, min(a.shots, len(pool))).round()]
        wrong, total, per = 0, 0, {}
        for s in picked:
            image = s.load_image()
            box = Letterbox.fit((image.shape[1], image.shape[0]), info.input_size)
            feats, centres = backend.shot_maps(box.apply(image)[None])  # what teaching reads from a shot
            votes = None if centres is None or a.no_votes else centres[0]
            point = box.to_model(s.keypoints[k])
            found = anchor_offsets(feats[0, :d], point, trained, info.manifest.stride, kset.clutter, peaks, votes)
            size = box_side(s.keypoints, s.visible) * box.scale
            for j, name in enumerate(rows):
                t = names.index(name)
                if not s.visible[t] or not np.isfinite(found[j]).all():
                    continue
                off = np.linalg.norm(found[j] - (box.to_model(s.keypoints[t]) - point)) > 0.1 * size
                total += 1
                wrong += bool(off)
                per[name] = per.get(name, 0) + bool(off)
        report["keypoints"][kp] = {"shots": len(picked), "offsets": total, "wrong": wrong, "wrong_by_anchor": per}
        print(f"{kp}: {wrong} of {total} offsets more than 0.1 x size from the labels ({len(picked)} shots) {per}")
    backend.close()
    if a.json:
        a.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
