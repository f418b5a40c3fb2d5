"""Figures for choosing a recipe, on training material only (a validation split carved from `train`).

    python tools/ablation_report.py runs/abl/A runs/abl/B --data ../shared/data/dlc_openfield_mouse \
        --split runs/splits/mouse_val.json [--json out.json]

Per model folder: RMSE and PCK@0.1 on the validation frames; under synthetic occluders (rtkp eval's levels) the
PCK@0.1 drop of uncovered keypoints at L2, covered keypoints reported hidden and uncovered ones reported visible; and
the share of keypoints reported hidden on the training frames' median (an empty scene) with sensor noise and a
brightness change. Held-out figures belong to the `test` split and tools/model_report.py, never here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def empty_scene_hidden(model: Path, data, draws: int = 12) -> float:
    """Share of keypoints reported hidden on the frames' median with noise (σ 2–8) and brightness ±15 %."""
    from rtkp.backends import open_backend
    from rtkp.data.background import MIN_FRAMES, empty_background
    from rtkp.messages import Frame
    from rtkp.tracker import Tracker

    images = [s.load_image() for s in data.samples]
    median, why = empty_background(images, [s.keypoints for s in data.samples], [s.visible for s in data.samples])
    if median is None:
        raise SystemExit(f"no empty scene ({why}; needs {MIN_FRAMES}+ frames)")
    backend = open_backend(model, "auto")
    hidden = []
    for d in range(draws):
        rng = np.random.default_rng([99, d])
        img = median.astype(np.float32) * rng.uniform(0.85, 1.15) + rng.normal(0, 2 + 6 * d / draws, median.shape)
        frame = Frame(d, None, 0, np.clip(img, 0, 255).astype(np.uint8))
        hidden.append(~Tracker(backend, backend_manifest(model)).process(frame).visible)
    backend.close()
    return float(np.mean(hidden))


def backend_manifest(model: Path):
    from rtkp.manifest import read_manifest

    return read_manifest(model)


def report(model: Path, data_path: Path, split: Path) -> dict:
    from rtkp.data.load import load_dataset
    from rtkp.train.evaluate import evaluate

    names = json.loads(split.read_text())
    full = load_dataset(data_path)
    val, train = full.subset(names["test"], "val"), full.subset(names["train"], "train")
    r = evaluate(model, val, occlusion=True, progress=False)
    l2 = r["occlusion"]["L2"]
    return {
        "model": str(model),
        "rmse_px": round(r["rmse_px"], 2),
        "pck_0.1": round(r["pck"]["0.1"], 3),
        "pck_0.05": round(r["pck"]["0.05"], 3),
        "visible_rate": round(r["visible_rate"], 3),
        "L2_drop_points": round(100 * (r["occlusion"]["L0"]["pck"]["0.1"] - l2["pck"]["0.1"]), 1),
        "L2_covered_hidden": round(l2["visibility_accuracy_covered"], 3),
        "L2_uncovered_visible": round(l2["visible_rate_uncovered"], 3),
        "empty_hidden": round(empty_scene_hidden(model, train), 3),
        "per_keypoint_rmse": {k: round(v["rmse_px"], 2) for k, v in r["per_keypoint"].items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", type=Path, required=True)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    rows = [report(m, a.data, a.split) for m in a.models]
    for r in rows:
        print(json.dumps(r))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
