"""How often a model reports keypoints where its object is not: scenes without the object, through the same backend
and Tracker as `rtkp run` and `rtkp export`.

    python tools/no_object_report.py --model engines/target_coke [--frames 60] [--json out.json]

Scenes: `lavfi:testsrc2` (FFmpeg's test pattern), blank walls rendered like `rtkp synth`'s backgrounds and camera
effects but without the target (a seed no training set uses), and the OpenCV sample video and images
(../shared/data/opencv_samples, when present). Prints the share of keypoints reported hidden per scene (the target of
issue 16: >= 95 %).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WALL_SEED = 424242  # rtkp synth's sets use seeds 1 and 2


def lavfi_frames(n: int) -> list[np.ndarray]:
    from rtkp.pipeline.sources import Source, parse_source

    return [frame.image for frame in Source(parse_source("lavfi:testsrc2=size=640x480:rate=30"), max_frames=n)]


def blank_walls(n: int) -> list[np.ndarray]:
    from rtkp.demo.synth import IMAGE_SIZE, background, camera_effects

    rng = np.random.default_rng(WALL_SEED)
    return [camera_effects(rng, background(rng, IMAGE_SIZE)) for _ in range(n)]


def opencv_samples(n: int) -> list[np.ndarray]:
    import av

    from rtkp.data.occlude import load_photos

    folder = SHARED / "opencv_samples"
    if not folder.is_dir():
        return []
    frames = list(load_photos(folder))
    with av.open(str(folder / "vtest.avi")) as container:
        for i, f in enumerate(container.decode(video=0)):
            if i % 10 == 0:
                frames.append(f.to_ndarray(format="rgb24"))
            if len(frames) >= n:
                break
    return frames


def hidden_share(model: Path, images: list[np.ndarray]) -> float:
    from rtkp.backends import open_backend
    from rtkp.manifest import read_manifest
    from rtkp.messages import Frame
    from rtkp.tracker import Tracker

    backend = open_backend(model, "auto")
    manifest = read_manifest(model)
    try:
        visible = [Tracker(backend, manifest).process(Frame(i, None, 0, im)).visible for i, im in enumerate(images)]
    finally:
        backend.close()
    return float(1 - np.mean(visible))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    scenes = {"testsrc2": lavfi_frames(a.frames), "blank wall": blank_walls(a.frames)}
    samples = opencv_samples(a.frames)
    if samples:
        scenes["opencv samples"] = samples
    report = {name: round(hidden_share(a.model, images), 4) for name, images in scenes.items()}
    for name, share in report.items():
        print(f"{a.model}: {name:>15}: {share:.1%} of keypoints hidden ({len(scenes[name])} frames)")
    if a.json:
        a.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
