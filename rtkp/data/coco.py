"""COCO-keypoints reader: an annotation JSON plus its images folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rtkp.data.sample import Dataset, Sample
from rtkp.errors import DataError


def _image_dirs(ann_path: Path, images: Path | None) -> list[Path]:
    """Folders a `file_name` is resolved against, in order: `images` when given, <json folder>/images, the json folder.

    So both common layouts work: `file_name` relative to the images folder ("f0.png" with the files in images/), and
    relative to the JSON's folder ("images/f0.png").
    """
    dirs = [Path(images)] if images is not None else []
    dirs += [ann_path.parent / "images", ann_path.parent]
    return list(dict.fromkeys(dirs))


def _resolve_image(file_name: str, dirs: list[Path]) -> tuple[Path, list[Path]]:
    """(the first candidate path that is a file, or else the first candidate; every candidate tried)."""
    if Path(file_name).is_absolute():
        candidates = [Path(file_name)]
    else:
        candidates = list(dict.fromkeys(d / file_name for d in dirs))
    found = next((c for c in candidates if c.is_file()), None)
    return (found or candidates[0]), candidates


def read_coco(ann_path: Path, images: Path | None = None, check_images: bool = True) -> Dataset:
    """Read a COCO-keypoints annotation file; one Sample per annotation with at least one labelled keypoint.

    An image's `file_name` is looked for under `images` (when given), then <json folder>/images/, then the JSON's
    folder; a missing image is a DataError naming every path tried.

    Keypoint names and skeleton come from `categories` (the first category with `keypoints`; skeleton is 1-based in
    COCO and becomes 0-based pairs here). Visibility flag v > 0 counts as labelled. An annotation with no labelled
    keypoint is skipped (a file with none is a DataError). An annotation's `track_id`, where it has one, becomes the
    Sample's track (as a string; annotations without one are untracked).
    """
    ann_path = Path(ann_path)
    try:
        doc = json.loads(ann_path.read_text())
    except FileNotFoundError:
        raise DataError(f"{ann_path}: annotation file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{ann_path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{ann_path}: malformed JSON at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(doc, dict) or not all(k in doc for k in ("images", "annotations", "categories")):
        raise DataError(f"{ann_path}: not a COCO-keypoints file (needs images, annotations and categories)")
    cats = [c for c in doc["categories"] if isinstance(c, dict) and c.get("keypoints")]
    if not cats:
        # Some face sets (e.g. WFLW in MMPose) list no names: number the keypoints from the annotations instead.
        first = next((a.get("keypoints") for a in doc["annotations"] if isinstance(a, dict)), None)
        if not isinstance(first, list) or not first or len(first) % 3:
            raise DataError(f"{ann_path}: no category lists keypoint names, and no annotation shows how many there are")
        cats = [{"keypoints": [f"kp{i}" for i in range(len(first) // 3)]}]
    names = [str(n) for n in cats[0]["keypoints"]]
    for c in cats[1:]:
        if [str(n) for n in c["keypoints"]] != names:
            raise DataError(f"{ann_path}: categories disagree on keypoint names ({c.get('name')!r} differs)")
    k = len(names)
    skeleton = []
    for pair in cats[0].get("skeleton") or []:
        a, b = int(pair[0]) - 1, int(pair[1]) - 1
        if not (0 <= a < k and 0 <= b < k):
            raise DataError(f"{ann_path}: skeleton pair {pair} refers to a keypoint that does not exist (K={k})")
        skeleton.append((a, b))
    if images is not None and not Path(images).is_dir():
        raise DataError(f"{images}: images folder not found")
    dirs = _image_dirs(ann_path, images)
    image_dir = next((d for d in dirs if d.is_dir()), ann_path.parent)
    files = {}
    for im in doc["images"]:
        try:
            files[im["id"]] = str(im["file_name"])
        except (KeyError, TypeError):
            raise DataError(f"{ann_path}: an image entry lacks id or file_name: {im!r}"[:200]) from None
    # Some sets (e.g. WFLW in MMPose) mark every labelled keypoint v = 1 and never use 2: there 1 means visible.
    uses_two = any(
        isinstance(a, dict) and isinstance(a.get("keypoints"), list) and 2 in a["keypoints"][2::3]
        for a in doc["annotations"]
    )
    visible_flag = 2 if uses_two else 1
    samples = []
    paths: dict = {}
    for i, ann in enumerate(doc["annotations"]):
        try:
            kp = np.asarray(ann["keypoints"], np.float32)
            image_id = ann["image_id"]
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{ann_path}: annotation #{i} lacks a numeric keypoints list or image_id") from None
        if kp.shape != (3 * k,):
            raise DataError(f"{ann_path}: annotation #{i} has {kp.size} keypoint numbers, expected {3 * k} (K={k})")
        if image_id not in files:
            raise DataError(f"{ann_path}: annotation #{i} refers to image id {image_id}, which is not listed")
        kp = kp.reshape(k, 3)
        visible = kp[:, 2] >= visible_flag
        if not visible.any():
            continue
        if image_id not in paths:
            paths[image_id] = _resolve_image(files[image_id], dirs)
        path, tried = paths[image_id]
        if check_images and not path.is_file():
            raise DataError(
                f"{files[image_id]}: image file not found (listed in {ann_path}); looked for "
                + ", ".join(str(c) for c in tried)
            )
        box = np.asarray(ann["bbox"], np.float32) if "bbox" in ann else None
        track = str(ann["track_id"]) if ann.get("track_id") is not None else None
        samples.append(Sample(path, kp[:, :2].copy(), visible, files[image_id], box, track=track))
    if not samples:
        raise DataError(
            f"{ann_path}: no annotation has a visible keypoint (v = 2, or v = 1 in a file that never uses 2): label "
            "at least one, or check that this is the labels file and not an empty template"
        )
    return Dataset(samples, names, skeleton, image_dir, "coco")
