"""Re-choose a trained model's visibility margins with the current calibration, on its own training
frames, and write them into its manifest.

    python tools/recalibrate.py runs/abl/E --data ../shared/data/dlc_openfield_mouse --split runs/splits/mouse_val.json
        [--balanced]

--balanced: balanced accuracy for every keypoint (the rule before issue 29), also for keypoints absent in most frames.

Uses the training config stored in the manifest and only the split's `train` frames (the ones it was trained on).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    from rtkp.config import config_from_dict
    from rtkp.data.load import load_dataset
    from rtkp.manifest import read_manifest, write_manifest
    from rtkp.model.checkpoint import load_model
    from rtkp.train.batches import BatchMaker
    from rtkp.train.calibrate import calibrate_margins

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", type=Path, required=True)
    ap.add_argument("--balanced", action="store_true", help="balanced accuracy for every keypoint (the old rule)")
    a = ap.parse_args()
    net, manifest, protos, clutter = load_model(a.model)
    cfg = config_from_dict(manifest.extra["training"]["config"])
    data = load_dataset(a.data).subset(json.loads(a.split.read_text())["train"], str(a.split))
    common, per_keypoint = calibrate_margins(
        net, BatchMaker(data, cfg), cfg, protos, clutter, weigh_absent=not a.balanced
    )
    manifest = read_manifest(a.model)
    old = list(manifest.visibility_margins) if manifest.visibility_margins else manifest.visibility_margin
    write_manifest(a.model, manifest.updated(visibility_margin=common, visibility_margins=per_keypoint))
    print(f"{a.model}: margins {old} -> {per_keypoint} (common {common})")


if __name__ == "__main__":
    main()
