"""Offline annotation writers: COCO-keypoints JSON, JSON lines, DeepLabCut-style CSV.

Every writer produces exactly one record per frame, in order, and writes to a temporary file that is renamed into
place only when complete, so an interrupted export never leaves a file that looks finished.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from .messages import KeypointFrame
from .pipeline.smooth import PREDICTED

FORMATS = ("coco", "jsonl", "csv")
SUFFIX = {"coco": ".coco.json", "jsonl": ".jsonl", "csv": ".csv"}


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def _commit(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)


def _coco_v(kf: KeypointFrame, k: int) -> int:
    """COCO visibility: 2 visible, 1 present but hidden (held on a prediction), 0 not reported."""
    if not kf.visible[k]:
        return 0
    return 1 if kf.state[k] == PREDICTED else 2


def write_coco(path: Path, frames: list[KeypointFrame], names: list[str], skeleton, source: str, model: str) -> None:
    """images = frames (with frame_index, pts, file_name), one annotation per frame, categories with names/skeleton."""
    images, anns = [], []
    for i, kf in enumerate(frames):
        w, h = kf.source_size
        file_name = kf.name or f"{Path(source).stem}#{kf.index:06d}"
        images.append(
            {"id": i + 1, "file_name": file_name, "width": w, "height": h, "frame_index": kf.index, "pts": kf.pts}
        )
        flat = []
        for k in range(len(names)):
            flat += [round(float(kf.keypoints[k, 0]), 3), round(float(kf.keypoints[k, 1]), 3), _coco_v(kf, k)]
        vis = kf.visible
        score = float(kf.scores[vis].mean()) if vis.any() else 0.0
        pts = kf.keypoints[vis]
        bbox = (
            [float(pts[:, 0].min()), float(pts[:, 1].min()), float(np.ptp(pts[:, 0])), float(np.ptp(pts[:, 1]))]
            if len(pts)
            else [0.0, 0.0, 0.0, 0.0]
        )
        anns.append(
            {
                "id": i + 1,
                "image_id": i + 1,
                "category_id": 1,
                "keypoints": flat,
                "num_keypoints": int(vis.sum()),
                "score": round(score, 5),
                "keypoint_scores": [round(float(s), 5) for s in kf.scores],
                "bbox": bbox,
                "iscrowd": 0,
                "area": bbox[2] * bbox[3],
            }
        )
    doc = {
        "info": {"description": f"rtkp export of {source}", "model": model},
        "images": images,
        "annotations": anns,
        "categories": [
            {
                "id": 1,
                "name": "object",
                "supercategory": "object",
                "keypoints": list(names),
                "skeleton": [[a + 1, b + 1] for a, b in skeleton],
            }
        ],
    }
    tmp = _tmp(path)
    tmp.write_text(json.dumps(doc))
    _commit(tmp, path)


def write_jsonl(path: Path, frames: list[KeypointFrame], names: list[str]) -> None:
    """One JSON object per frame: frame, pts, file, and per keypoint [x, y, score, visible, state]."""
    tmp = _tmp(path)
    with open(tmp, "w") as fh:
        for kf in frames:
            rec = {
                "frame": kf.index,
                "pts": kf.pts,
                "file": kf.name,
                "keypoints": {
                    n: [
                        round(float(kf.keypoints[k, 0]), 3),
                        round(float(kf.keypoints[k, 1]), 3),
                        round(float(kf.scores[k]), 5),
                        bool(kf.visible[k]),
                        int(kf.state[k]),
                    ]
                    for k, n in enumerate(names)
                },
            }
            fh.write(json.dumps(rec) + "\n")
    _commit(tmp, path)


def write_dlc_csv(path: Path, frames: list[KeypointFrame], names: list[str], scorer: str) -> None:
    """DeepLabCut's analysis CSV: rows scorer / bodyparts / coords (x, y, likelihood), then one row per frame.

    likelihood = the score clipped to [0, 1] for a visible keypoint and 0 for a hidden one, so DLC's `pcutoff`
    filtering drops what rtkp reports hidden.
    """
    tmp = _tmp(path)
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["scorer"] + [scorer] * 3 * len(names))
        w.writerow(["bodyparts"] + [n for n in names for _ in range(3)])
        w.writerow(["coords"] + ["x", "y", "likelihood"] * len(names))
        for kf in frames:
            row = [kf.name or kf.index]
            for k in range(len(names)):
                like = float(np.clip(kf.scores[k], 0, 1)) if kf.visible[k] else 0.0
                row += [f"{kf.keypoints[k, 0]:.3f}", f"{kf.keypoints[k, 1]:.3f}", f"{like:.5f}"]
            w.writerow(row)
    _commit(tmp, path)
