"""What several animals cost: a multi-instance model against its single-instance twin at the same input size.

    python tools/instance_speed.py --model engines/sleap_flies_coke \
        --video ../shared/data/sleap_flies_clip/clip_train.mp4 [--frames 60] [--json OUT]

The twin is the same network without the centre head, its graph reading one peak per keypoint (what a single-instance
model at this input size runs). Both run through ONNX Runtime on the same frames, interleaved frame by frame, batch
1, in one process (medians; machines are shared and noisy, so only the ratio is meant to be read). Then the Tracker's
per-frame step after the graph (grouping, track ids, smoothing per track) with --max-instances 1, 2, ... on the same
frames: its growth per animal is the cost of each further instance (the graph itself does not change with it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def twin(model: Path, out: Path) -> Path:
    """A single-instance copy of a multi-instance model folder (without the centre head and its manifest keys)."""
    from rtkp.manifest import read_manifest
    from rtkp.model.checkpoint import load_model, save_model
    from rtkp.model.network import KeypointNet

    net, manifest, protos, clutter = load_model(model)
    single = KeypointNet(
        "coke",
        len(manifest.keypoint_names),
        manifest.feature_dim,
        manifest.decoder_channels,
        manifest.backbone,
        pretrained=False,
    )
    single.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("centre.")})
    kept = read_manifest(model).to_dict()
    for key in ("max_instances", "default_instances", "instance_size", "weights_sha256", "evaluation"):
        kept.pop(key, None)
    save_model(out, single.eval(), kept, protos, clutter)
    return out


def frames(video: str, n: int):
    import av

    with av.open(video) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i >= n:
                break
            yield frame.to_ndarray(format="rgb24")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--video", required=True)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    from rtkp.backends import open_backend
    from rtkp.messages import Frame
    from rtkp.tracker import Tracker

    images = list(frames(a.video, a.frames))
    with tempfile.TemporaryDirectory() as tmp:
        multi = open_backend(str(a.model), "onnxruntime")
        single = open_backend(str(twin(a.model, Path(tmp) / "twin")), "onnxruntime")
        manifest = multi.info.manifest
        box = Tracker(multi, manifest).model
        inputs = [box.preprocess(im)[None] for im in images]
        times = {"multi": [], "single": []}
        for x in inputs[:2]:  # warm-up
            multi.infer(x), single.infer(x)
        for x in inputs:
            for name, backend in (("multi", multi), ("single", single)):
                t0 = time.perf_counter()
                backend.infer(x)
                times[name].append((time.perf_counter() - t0) * 1e3)
        step = {}
        for n in range(1, manifest.max_instances + 1):
            tracker = Tracker(multi, manifest, max_instances=n)
            ms, found = [], []
            for i, im in enumerate(images):
                result = tracker.model.run([Frame(i, i / 25, 0, im)])[0]
                t0 = time.perf_counter()
                kf = tracker.keypoints.finish(result)
                ms.append((time.perf_counter() - t0) * 1e3)
                found.append(len(kf.instances))
            step[n] = {"ms": statistics.median(ms), "animals": statistics.median(found)}
        multi.close(), single.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    report = {
        "model": str(a.model),
        "frames": len(images),
        "graph_ms": med,
        "graph_ratio_single_over_multi": med["single"] / med["multi"],
        "after_graph_ms_by_max_instances": step,
    }
    print(
        f"graph (ONNX Runtime, batch 1, median of {len(images)}): multi-instance {med['multi']:.1f} ms, "
        f"single-instance twin {med['single']:.1f} ms: fps ratio multi/single {med['single'] / med['multi']:.2f}"
    )
    for n, s in step.items():
        print(f"--max-instances {n}: {s['animals']:g} animals per frame, grouping + ids + smoothing {s['ms']:.2f} ms")
    if a.json:
        a.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
