"""Give a trained CoKe model the prototypes of `coke.final_prototypes: frames` (rtkp.train.prototypes): each keypoint's
mean unit feature at its labels on the whole training frames, from the model's own network; then re-choose its
visibility margins for them (rtkp.train.calibrate) and write both into the model folder. The network's weights are not
touched, so the comparison with the bank's prototypes is free of the training's draw (docs/MODEL.md).

    python tools/frame_prototypes.py runs/abl/H1L2000 --data ../shared/data/dlc_openfield_mouse \
        --split runs/splits/mouse_val.json [--out runs/abl/H1L2000_frames]

For models trained with `coke.final_prototypes: bank` (the default). Uses only the split's `train` frames
(the ones the model was trained on; every frame without --split) and the training config stored in the manifest.
Held-out figures in the manifest (`evaluation`, `report`) described the old prototypes and are dropped: measure
again. Without --out the folder is rewritten in place.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path


def main() -> int:
    from rtkp.errors import RtkpError

    try:
        return frame_prototypes_cli()
    except RtkpError as exc:  # a missing folder, a model without weights, unreadable data: one line
        print(f"frame_prototypes: {exc}", file=sys.stderr)
        return exc.exit_code


def frame_prototypes_cli() -> int:
    from rtkp.config import config_from_dict
    from rtkp.data.load import load_dataset
    from rtkp.manifest import read_manifest
    from rtkp.model.checkpoint import load_model, save_model
    from rtkp.train.batches import BatchMaker
    from rtkp.train.calibrate import calibrate_margins
    from rtkp.train.prototypes import frame_prototypes

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--data", type=Path, required=True, help="the data the model was trained on")
    ap.add_argument("--split", type=Path, help="the split it was trained on (its `train` list); none: every frame")
    ap.add_argument("--out", type=Path, help="write a new model folder here (default: rewrite MODEL)")
    a = ap.parse_args()
    net, manifest, protos, clutter = load_model(a.model)
    if protos is None:
        raise SystemExit(f"frame_prototypes: {a.model} is not a CoKe model (no prototypes); nothing to do")
    settings = manifest.extra["training"]["config"]
    settings["coke"] = dict(settings.get("coke", {}), final_prototypes="frames")
    cfg = config_from_dict(settings)
    data = load_dataset(a.data)
    if a.split:
        data = data.subset(json.loads(a.split.read_text())["train"], str(a.split))
    maker = BatchMaker(data, cfg)
    new = frame_prototypes(net, maker, tuple(cfg.model.input_size), protos)
    common, per_keypoint = calibrate_margins(net, maker, cfg, new, clutter)
    out = a.out or a.model
    if a.out:
        if a.out.exists():
            raise SystemExit(f"frame_prototypes: {a.out} exists; choose another --out or remove it")
        shutil.copytree(a.model, a.out, ignore=shutil.ignore_patterns("onnx", "trt", "exports.json", "checkpoint"))
    else:  # the exported graphs are keyed on the weights file, which is written again
        for derived in ("onnx", "trt"):
            shutil.rmtree(out / derived, ignore_errors=True)
        (out / "exports.json").unlink(missing_ok=True)
    command = f"python tools/frame_prototypes.py {a.model} --data {a.data}" + (f" --split {a.split}" if a.split else "")
    training = dict(manifest.extra["training"], config=cfg.to_dict(), prototypes_command=command)
    manifest = read_manifest(a.model).updated(
        drop=("evaluation", "report"),
        visibility_margin=common,
        visibility_margins=per_keypoint,
        prototypes=new.tolist(),
        training=training,
    )
    save_model(out, net, manifest, new, clutter)
    cosine = (new * protos).sum(1).tolist()
    print(
        f"{out}: prototypes from the training frames of {len(data.samples)} samples (cosine to the old: "
        f"{', '.join(f'{c:.3f}' for c in cosine)}); margins {per_keypoint} (common {common})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
