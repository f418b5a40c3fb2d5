"""Set a model folder's `crop_size` (the window rtkp.follow tracks the animal with on the CPU) by the training rule.

    python tools/follow_window.py --model engines/dlc_mouse_coke --data ../shared/data/dlc_openfield_mouse \
        --split ../shared/data/dlc_openfield_mouse/split.json [--write]

`rtkp train` writes `crop_size` itself (rtkp.train.recipe.follow_crop_size); this applies the same rule, on the same
training frames, to a model folder trained before it existed. Prints the window (or that none pays); --write puts it
in the manifest (the weights, and so the checksum, are untouched).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np


def main() -> int:
    from rtkp.data.load import load_split
    from rtkp.data.sample import read_image
    from rtkp.errors import RtkpError
    from rtkp.geometry import Letterbox
    from rtkp.manifest import read_manifest, write_manifest
    from rtkp.train.recipe import follow_crop_size

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="the model's training data")
    ap.add_argument("--split", help="its split file (the train part is used)")
    ap.add_argument("--write", action="store_true", help="write crop_size into the manifest")
    args = ap.parse_args()
    try:
        manifest = read_manifest(args.model)
        data = load_split(args.data, args.split, "train")
        sizes: dict = {}
        for s in data.samples:  # one image per file is enough to know its size (videos: one frame)
            key = s.image_path
            if key not in sizes:
                image = s.load_image() if s.video is not None else read_image(s.image_path)
                sizes[key] = (image.shape[1], image.shape[0])
        scales = [Letterbox.fit(sizes[s.image_path], manifest.input_size).scale for s in data.samples]
        crop = follow_crop_size(data, scales, manifest.input_size)
    except RtkpError as exc:
        print(f"follow_window: {exc}", file=sys.stderr)
        return 2
    boxes = len(data.frames())
    print(f"{args.model}: input {manifest.input_size[0]}x{manifest.input_size[1]}, {boxes} labelled frames -> ", end="")
    print(f"crop_size {crop[0]}x{crop[1]}" if crop else "no window (the animals fill too much of the frame)")
    if args.write:
        write_manifest(args.model, dataclasses.replace(manifest, crop_size=tuple(crop) if crop else None))
        print("written" if crop else "crop_size removed")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
