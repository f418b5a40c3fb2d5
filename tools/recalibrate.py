"""Re-choose a trained model's visibility margins with the current calibration, on its own training
frames, and write them into its manifest.

    python tools/recalibrate.py runs/abl/E --data ../shared/data/dlc_openfield_mouse --split runs/splits/mouse_val.json

Uses the training config stored in the manifest and only the split's `train` frames (the ones it was trained on).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    from rtkp.config import config_from_dict
    from rtkp.data.load import load_dataset
    from rtkp.files import write_json_atomic
    from rtkp.model.checkpoint import load_model
    from rtkp.train.calibrate import calibrate_margins
    from rtkp.train.loop import BatchMaker

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", type=Path, required=True)
    a = ap.parse_args()
    net, manifest, protos, clutter = load_model(a.model)
    cfg = config_from_dict(manifest["training"]["config"])
    data = load_dataset(a.data).subset(json.loads(a.split.read_text())["train"], str(a.split))
    common, per_keypoint = calibrate_margins(net, BatchMaker(data, cfg), cfg, protos, clutter)
    path = a.model / "manifest.json"
    manifest = json.loads(path.read_text())
    old = manifest.get("visibility_margins", manifest.get("visibility_margin"))
    manifest["visibility_margin"], manifest["visibility_margins"] = common, per_keypoint
    write_json_atomic(path, manifest)
    print(f"{a.model}: margins {old} -> {per_keypoint} (common {common})")


if __name__ == "__main__":
    main()
