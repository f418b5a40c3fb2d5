"""Carve a validation split out of a data set's `train` list, for choosing a recipe without touching `test`.

    python tools/val_split.py ../shared/data/dlc_openfield_mouse/split.json --every 5 --out runs/splits/mouse_val.json

The output has the split format `rtkp train/eval --split` read: `train` keeps the other frames, `test` holds every
`every`-th training frame (sorted by name). The original `test` list is left out entirely.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("split", type=Path)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--offset", type=int, default=2, help="which frame of each group of `every` goes to validation")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    train = sorted(json.loads(a.split.read_text())["train"])
    val = [f for i, f in enumerate(train) if i % a.every == a.offset]
    keep = [f for f in train if f not in set(val)]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    about = f"validation split carved from the train list of {a.split} (every {a.every}th frame); test is not used"
    a.out.write_text(json.dumps({"about": about, "train": keep, "test": val}, indent=1))
    print(f"{a.out}: {len(keep)} train, {len(val)} validation frames")


if __name__ == "__main__":
    main()
