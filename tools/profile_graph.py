"""Where a model's CPU time goes: ONNX Runtime's profiler over the exported graph, grouped by part of the network.

    python tools/profile_graph.py --model engines/dlc_mouse_coke --video ../shared/data/dlc_openfield_mouse/<video> \
        [--frames 40] [--batch 1] [--threads 0] [--size W H] [--json OUT]

The graph is the one `rtkp run` and `rtkp export` execute (rtkp.graphs.onnx, session options as
rtkp.backends.onnxruntime sets them). Every kernel of the profiled runs (warm-up excluded) is attributed to a part by
its node's name, which the ONNX export takes from the PyTorch module path: the backbone (by MobileNetV2 stage), the
hypercolumn decoder (its lateral projections, the upsampling and sum, the refinement, the final projection and
normalisation), and what follows the features (matching against the prototypes, peak finding and the sub-pixel step,
the clutter score); a folder with taught keypoints (`rtkp keypoints add`) profiles the generic variant they run, with
its generic branch, as tracking runs it (without the features output). Prints milliseconds per frame for each part
and its share. --size profiles the graph at another input size, on windows of that size cut from the middle of each
model input: the window `rtkp.follow` runs on the CPU (the manifest's crop_size).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np


def part_of(node: str, op: str) -> str:
    """A kernel's part of the network, from its node's exported name (e.g. /backbone/features.3/conv/conv.2/...,
    /refine/refine.2/..., /Einsum): ONNX Runtime keeps the PyTorch module path, minus the graph's own wrapper."""
    stage = re.search(r"/backbone/features\.(\d+)/", node)
    if stage:
        i = int(stage.group(1))
        stride = 2 if i <= 1 else 4 if i <= 3 else 8 if i <= 6 else 16 if i <= 13 else 32
        return f"backbone, stride-{stride} stages"
    for key, part in (
        ("/backbone/", "backbone, other"),
        ("/lateral", "decoder: lateral 1x1 projections"),
        ("/refine", "decoder: refinement at stride 4"),
        ("/project", "decoder: final projection to D"),
        ("/centre", "centre head (multi-instance)"),
        ("/generic/", "generic branch (taught keypoints)"),
    ):
        if key in node:
            return part
    if op == "Resize":
        return "decoder: upsampling to stride 4"
    if op in ("Einsum", "MatMul") and node.rstrip("/").endswith(("/Einsum", "/MatMul")):
        return "matching: similarity to K_max prototypes"  # the first product after the features (graph v2: Einsum)
    if op in ("Einsum", "MatMul"):
        return "clutter score"
    if op in ("ReduceL2", "Div", "Clip", "Expand") and "Reorder" not in node:
        return "L2 normalisation / input scaling"
    if op.startswith("Reorder"):
        return "layout reorders (NCHWc)"
    return "peaks, sub-pixel step, other small ops"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--video", required=True)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), help="input size (default: the model's)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    import av
    import onnxruntime as ort

    from rtkp.backends.base import read_model_info
    from rtkp.backends.onnx_cache import ensure_onnx
    from rtkp.geometry import Letterbox
    from rtkp.graphs.outputs import keep_outputs
    from rtkp.graphs.prototypes import graph_width, pad_prototypes, uses_generic

    info = read_model_info(a.model)
    size = tuple(a.size) if a.size else tuple(info.input_size)
    # a folder with taught keypoints runs the generic variant, cut to its keypoints output as tracking runs it
    generic = info.is_coke and uses_generic(info.prototypes, info.manifest.feature_dim)
    path = ensure_onnx(info, size, False, generic)
    frames = []
    with av.open(a.video) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i >= a.frames + a.batch:
                break
            image = frame.to_ndarray(format="rgb24")
            image = Letterbox.fit((image.shape[1], image.shape[0]), info.input_size).apply(image)
            x0, y0 = (image.shape[1] - size[0]) // 2, (image.shape[0] - size[1]) // 2
            frames.append(np.ascontiguousarray(image[y0 : y0 + size[1], x0 : x0 + size[0]]))
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = a.threads or min(os.cpu_count() or 1, 8)
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "profile")
        graph = keep_outputs(path, ["keypoints"]) if generic else str(path)
        session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
        protos, active = pad_prototypes(
            info.prototypes, info.max_keypoints, graph_width(info.manifest.feature_dim, generic)
        )
        feeds = {"prototypes": protos, "clutter": np.ascontiguousarray(info.clutter, np.float32), "active": active}
        batches = [np.stack(frames[i : i + a.batch]) for i in range(0, len(frames) - a.batch + 1, a.batch)]
        session.run(["keypoints"], dict(feeds, images=batches[0]))  # warm-up, dropped below
        for batch in batches[1:]:
            session.run(["keypoints"], dict(feeds, images=batch))
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in events if e.get("name") == "model_run"]
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    first_run_end = runs[0]["ts"] + runs[0]["dur"]
    kernels = [e for e in kernels if e["ts"] >= first_run_end]
    n_frames = (len(runs) - 1) * a.batch
    by_part: dict[str, float] = defaultdict(float)
    for e in kernels:
        node = e["name"][: -len("_kernel_time")]
        by_part[part_of(node, e.get("args", {}).get("op_name", ""))] += e["dur"] / 1e3
    wall = sum(r["dur"] for r in runs[1:]) / 1e3 / n_frames
    total = sum(by_part.values()) / n_frames
    rows = sorted(((p, ms / n_frames) for p, ms in by_part.items()), key=lambda r: -r[1])
    print(f"{a.model}: {size[0]}x{size[1]}, batch {a.batch}, {n_frames} frames profiled")
    print(f"{'part':<40}{'ms/frame':>10}{'share':>8}")
    for part, ms in rows:
        print(f"{part:<40}{ms:>10.2f}{ms / total:>8.1%}")
    print(f"{'kernels, all':<40}{total:>10.2f}\n{'model_run wall time':<40}{wall:>10.2f}")
    if a.json:
        a.json.write_text(json.dumps({"parts_ms_per_frame": dict(rows), "kernels_ms": total, "wall_ms": wall}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
