"""OKS mAP through pycocotools' COCOeval, on ground truth and detections built in memory.

OKS needs a per-keypoint sigma (COCO's people have measured ones); animals have none, so a uniform DEFAULT_SIGMA is
used unless the caller gives its own. A labelled animal's area is the area of its labelled keypoints' box (COCO uses
the segment's area, which labels here do not have), at least 1 px².
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from rtkp.errors import require

DEFAULT_SIGMA = 0.05


def _flat(xy: np.ndarray, flags: np.ndarray) -> list[float]:
    xy = np.where(np.isfinite(xy), xy, 0.0)  # COCO has no NaN: a position never reported is far from any label
    return [float(v) for row, f in zip(xy, flags) for v in (row[0], row[1], int(f))]


def _box(xy: np.ndarray, labelled: np.ndarray) -> list[float]:
    points = xy[labelled]
    if not len(points):
        return [0.0, 0.0, 0.0, 0.0]
    low, high = points.min(0), points.max(0)
    return [float(low[0]), float(low[1]), float(high[0] - low[0]), float(high[1] - low[1])]


def coco_documents(predicted: list, labelled: list) -> tuple[dict, list[dict]]:
    """Per frame: predicted instances (`.keypoints` (K, 2), `.visible` (K,), `.score`) and labelled Samples ->
    (the ground-truth COCO dict, the detections list); image id = frame position + 1."""
    images, gt, dt = [], [], []
    k = 0
    for i, (preds, samples) in enumerate(zip(predicted, labelled)):
        images.append({"id": i + 1})
        for s in samples:
            k = len(s.keypoints)
            box = _box(s.keypoints, s.visible)
            gt.append(
                {
                    "id": len(gt) + 1,
                    "image_id": i + 1,
                    "category_id": 1,
                    "keypoints": _flat(s.keypoints, np.where(s.visible, 2, 0)),
                    "num_keypoints": int(s.visible.sum()),
                    "bbox": box,
                    "area": max(box[2] * box[3], 1.0),
                    "iscrowd": 0,
                }
            )
        for p in preds:
            xy, visible = np.asarray(p.keypoints, np.float64), np.asarray(p.visible, bool)
            score = float(p.score) if np.isfinite(p.score) else 0.0
            flat = _flat(xy, np.where(visible, 2, 0))
            dt.append({"image_id": i + 1, "category_id": 1, "keypoints": flat, "score": score})
    categories = [{"id": 1, "name": "animal", "keypoints": [f"kp{j}" for j in range(k)]}]
    return {"images": images, "annotations": gt, "categories": categories}, dt


def oks_map(predicted: list, labelled: list, sigmas: np.ndarray | None = None) -> dict:
    """{"map", "map50", "map75"}: COCOeval's keypoint AP over OKS 0.50:0.95, at 0.50 and at 0.75 (0 with no
    detections; NaN with no labelled keypoint). sigmas: (K,) per keypoint, default DEFAULT_SIGMA for each."""
    require("pycocotools", "eval")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_doc, dt = coco_documents(predicted, labelled)
    if not any(a["num_keypoints"] for a in gt_doc["annotations"]):
        return {"map": float("nan"), "map50": float("nan"), "map75": float("nan")}
    if not dt:
        return {"map": 0.0, "map50": 0.0, "map75": 0.0}
    k = len(gt_doc["categories"][0]["keypoints"])
    sigmas = np.full(k, DEFAULT_SIGMA) if sigmas is None else np.asarray(sigmas, np.float64)
    if sigmas.shape != (k,):
        raise ValueError(f"sigmas: expected {k} values (one per keypoint), got shape {sigmas.shape}")
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval reports by printing
        coco_gt = COCO()
        coco_gt.dataset = gt_doc
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dt)
        run = COCOeval(coco_gt, coco_dt, "keypoints")
        run.params.kpt_oks_sigmas = sigmas
        run.evaluate()
        run.accumulate()
        run.summarize()
    stats = [float(v) for v in run.stats[:3]]
    return {"map": stats[0], "map50": stats[1], "map75": stats[2]}
