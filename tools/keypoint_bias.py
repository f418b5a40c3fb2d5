"""Systematic offsets: where a model puts each keypoint on average, against its labels, on one part of a split.

    python tools/keypoint_bias.py --model engines/dlc_mouse_coke --data ../shared/data/dlc_openfield_mouse \
        --split runs/splits/mouse_val.json --part train --part test --axis snout,tailbase

Through the same backend and Tracker as `rtkp export` (one fresh Tracker per frame: no smoothing). Per keypoint: the
mean signed error (prediction − label) in image pixels and in the animal's own frame (along the `--axis` line from its
first keypoint to its second, and across it, positive to the left of that direction in image coordinates), the RMSE,
and the median error. An error that averages to zero is scatter; one that does not is a bias some decision of the
recipe put there, and the one kind a model cannot learn under horizontal flips is the *across* offset of a keypoint on
the axis itself (a snout labelled a pixel to one side of the midline becomes, mirrored, a pixel to the other side).
Only frames where the keypoint and both axis keypoints are labelled count. One animal per frame.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def predictions(model: Path, samples) -> np.ndarray:
    """(N, K, 2) source-pixel predictions of the model for each sample's image, keypoints in the model's order."""
    from rtkp.backends import open_backend
    from rtkp.manifest import read_manifest
    from rtkp.messages import Frame
    from rtkp.tracker import Tracker

    backend = open_backend(model, "auto")
    manifest = read_manifest(model)
    out = [
        Tracker(backend, manifest).process(Frame(i, None, 0, s.load_image())).keypoints for i, s in enumerate(samples)
    ]
    backend.close()
    return np.asarray(out, np.float64)


def offsets(pred: np.ndarray, labels: np.ndarray, visible: np.ndarray, axis: tuple[int, int]) -> dict:
    """pred, labels (N, K, 2), visible (N, K) bool, axis (a, b) keypoint indices -> figures, each a list of K."""
    err = pred - labels
    direction = labels[:, axis[1]] - labels[:, axis[0]]
    length = np.linalg.norm(direction, axis=1, keepdims=True)
    ok_axis = visible[:, axis[0]] & visible[:, axis[1]] & (length[:, 0] > 0)
    u = direction / np.where(length > 0, length, 1.0)
    v = np.stack([u[:, 1], -u[:, 0]], 1)  # to the left of a→b when y points down (image coordinates)
    along, across = (err * u[:, None]).sum(-1), (err * v[:, None]).sum(-1)
    rows: dict = {k: [] for k in ("n", "image_dx", "image_dy", "along", "across", "se", "rmse", "median")}
    for k in range(labels.shape[1]):
        m = visible[:, k] & ok_axis
        d = np.linalg.norm(err[m, k], axis=1)
        rows["n"].append(int(m.sum()))
        for key, values in (("image_dx", err[m, k, 0]), ("image_dy", err[m, k, 1]), ("along", along[m, k])):
            rows[key].append(round(float(values.mean()), 2) if m.any() else None)
        rows["across"].append(round(float(across[m, k].mean()), 2) if m.any() else None)
        # the standard error of a mean offset (per axis, pooled): an offset within ~2 of it is what scatter gives
        se = float(np.sqrt((err[m, k] ** 2).mean() / max(m.sum() - 1, 1))) if m.any() else None
        rows["se"].append(round(se, 2) if se is not None else None)
        rows["rmse"].append(round(float(np.sqrt((d**2).mean())), 2) if m.any() else None)
        rows["median"].append(round(float(np.median(d)), 2) if m.any() else None)
    return rows


def main() -> None:
    from rtkp.data.load import load_split

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", type=Path, help="split JSON (default: the data's split.json)")
    ap.add_argument("--part", action="append", help="split part(s) to measure (default: test)")
    ap.add_argument("--axis", required=True, help="two keypoint names, e.g. snout,tailbase: the animal's own frame")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    report = {}
    for part in a.part or ["test"]:
        data = load_split(a.data, a.split or a.data / "split.json", part)
        names = data.keypoint_names
        pair = a.axis.split(",")
        if len(pair) != 2 or any(n not in names for n in pair):
            raise SystemExit(f"--axis: give two of {', '.join(names)}, e.g. {names[0]},{names[-1]}")
        labels = np.asarray([s.keypoints for s in data.samples], np.float64)
        visible = np.asarray([s.visible for s in data.samples], bool)
        axis = (names.index(pair[0]), names.index(pair[1]))
        rows = offsets(predictions(a.model, data.samples), labels, visible, axis)
        report[part] = {"keypoints": names, **rows}
        print(f"{part} ({len(data.samples)} frames): mean signed error px (image dx, dy | along, across {a.axis})")
        for k, name in enumerate(names):
            print(
                f"  {name:>12} n={rows['n'][k]:3d}  image {rows['image_dx'][k]:+5.2f} {rows['image_dy'][k]:+5.2f}  |"
                f"  along {rows['along'][k]:+5.2f}  across {rows['across'][k]:+5.2f}  (± {rows['se'][k]:.2f})  |"
                f"  RMSE {rows['rmse'][k]:5.2f}"
                f"  median {rows['median'][k]:5.2f}"
            )
    if a.json:
        a.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
