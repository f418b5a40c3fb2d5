"""Model-only speed of two or more model folders, measured in one run: interleaved rounds of `rtkp bench`'s
model-only measurement, so that a busy machine slows every model alike; medians and ratios to the first model.

    python tools/model_speed.py engines/dlc_mouse_coke runs/final/dlc_mouse_coke --rounds 5 --seconds 4
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def main() -> None:
    import numpy as np

    from rtkp.cli.bench import model_only

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    # the cost of the graph does not depend on the pixels: 640×480 noise frames, letterboxed as `rtkp run` would
    images = list(np.random.default_rng(0).integers(0, 256, (8, 480, 640, 3), dtype=np.uint8))
    fps: dict[str, list[float]] = {m: [] for m in a.models}
    for _ in range(a.rounds):
        for m in a.models:
            r = model_only(m, a.backend, images, a.seconds, a.threads)
            fps[m].append(r["fps"])
    first = statistics.median(fps[a.models[0]])
    report = {
        m: {"median_fps": round(statistics.median(v), 2), "ratio": round(statistics.median(v) / first, 3)}
        for m, v in fps.items()
    }
    for m, r in report.items():
        print(f"{m}: model-only {r['median_fps']:.1f} fps (median of {a.rounds}), {r['ratio']:.3f}x the first")
    if a.json:
        a.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
