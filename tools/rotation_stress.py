"""Stress test: a model on its held-out frames rotated through 360° (the recipe trains with ±180° rotation; this shows
how far that carries), through the same backend and Tracker as `rtkp export`.

    python tools/rotation_stress.py --model engines/dlc_mouse_coke --data ../shared/data/dlc_openfield_mouse

Per angle: PCK@0.1 (0.1 × the larger side of the frame's labelled-keypoint box), RMSE and the share of labelled
keypoints reported visible, over the `test` split's frames rotated about their centre (edges replicated; keypoints
that leave the frame are not counted).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    import cv2

    from rtkp.backends import open_backend
    from rtkp.data.load import load_split
    from rtkp.manifest import read_manifest
    from rtkp.messages import Frame
    from rtkp.tracker import Tracker
    from rtkp.train.evaluate import object_size

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", type=Path)
    ap.add_argument("--angles", type=int, default=12, help="angles spread over 360°")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    data = load_split(a.data, a.split or a.data / "split.json", "test")
    backend = open_backend(a.model, "auto")
    manifest = read_manifest(a.model)
    report = {}
    for angle in np.arange(a.angles) * 360.0 / a.angles:
        errors, scales, visible = [], [], []
        for i, s in enumerate(data.samples):
            image = s.load_image()
            h, w = image.shape[:2]
            m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), float(angle), 1.0)
            rotated = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
            kp = s.keypoints @ m[:, :2].T + m[:, 2]
            inside = s.visible & (kp[:, 0] >= 0) & (kp[:, 0] <= w - 1) & (kp[:, 1] >= 0) & (kp[:, 1] <= h - 1)
            out = Tracker(backend, manifest).process(Frame(i, None, 0, rotated))
            errors.append(np.linalg.norm(out.keypoints - kp, axis=1)[inside])
            scales.append(np.full(inside.sum(), object_size(kp[s.visible])))
            visible.append(out.visible[inside])
        e, sc, v = np.concatenate(errors), np.concatenate(scales), np.concatenate(visible)
        report[f"{angle:g}"] = {
            "pck_0.1": round(float((e <= 0.1 * sc).mean()), 3),
            "rmse_px": round(float(np.sqrt((e**2).mean())), 2),
            "visible": round(float(v.mean()), 3),
            "keypoints": int(e.size),
        }
        r = report[f"{angle:g}"]
        print(f"{angle:6.1f}°: PCK@0.1 {r['pck_0.1']:.3f}  RMSE {r['rmse_px']:6.2f} px  visible {r['visible']:.1%}")
    backend.close()
    if a.json:
        a.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
