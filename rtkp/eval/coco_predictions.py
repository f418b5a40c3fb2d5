"""Read a COCO export of a multi-instance model (`rtkp export --format coco`) back as predicted instances per frame.

Each image carries `frame_index` (the frame in the source video); each annotation is one animal, with `keypoints`
(x, y, v per keypoint; v > 0: reported), `track_id` (absent: untracked) and `score`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rtkp.errors import DataError
from rtkp.eval.instances import PredictedInstance, as_predicted


def _document(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: predictions file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("images", "annotations")):
        raise DataError(f"{path}: not a COCO file (needs images and annotations lists); give an `rtkp export` COCO")
    return doc


def _names(path: Path, doc: dict) -> list[str]:
    cats = [c for c in doc.get("categories") or [] if isinstance(c, dict) and c.get("keypoints")]
    if not cats:
        raise DataError(f"{path}: no category names its keypoints; give an `rtkp export` COCO file")
    return [str(n) for n in cats[0]["keypoints"]]


def _frames(path: Path, doc: dict) -> dict:
    """image id -> frame_index."""
    out = {}
    for im in doc["images"]:
        try:
            out[im["id"]] = int(im["frame_index"])
        except (KeyError, TypeError, ValueError):
            raise DataError(
                f"{path}: image {im.get('id') if isinstance(im, dict) else im!r} has no frame_index: this needs an "
                "`rtkp export` COCO file of a video"
            ) from None
    return out


def read_predicted_coco(path: str | Path) -> tuple[list[str], dict[int, list[PredictedInstance]]]:
    """(keypoint names, {frame_index: the frame's PredictedInstances}); every listed image is a frame, also one
    without annotations (no animal found). DataError (one line) for anything that is not such a file."""
    path = Path(path)
    doc = _document(path)
    names = _names(path, doc)
    frame_of = _frames(path, doc)
    out: dict[int, list[PredictedInstance]] = {f: [] for f in frame_of.values()}
    k = len(names)
    for i, ann in enumerate(doc["annotations"]):
        try:
            flat = np.asarray(ann["keypoints"], np.float64)
            frame = frame_of[ann["image_id"]]
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path}: annotation #{i} lacks a numeric keypoints list or a listed image_id") from None
        if flat.shape != (3 * k,):
            raise DataError(f"{path}: annotation #{i} has {flat.size} keypoint numbers, expected {3 * k} (K={k})")
        flat = flat.reshape(k, 3)
        track = ann.get("track_id")
        score = ann.get("score")
        out[frame].append(
            PredictedInstance(
                keypoints=flat[:, :2].copy(),
                visible=flat[:, 2] > 0,
                track=int(track) if isinstance(track, (int, float)) else track,
                score=float(score) if isinstance(score, (int, float)) else 1.0,
            )
        )
    return names, out


def select_keypoints(instances: dict[int, list[PredictedInstance]], names: list[str], wanted: list[str]) -> dict:
    """The same frames with each instance's keypoints reordered to `wanted` (names that must all be in `names`)."""
    cols = [names.index(n) for n in wanted]
    return {f: [as_predicted(p, cols) for p in preds] for f, preds in instances.items()}
