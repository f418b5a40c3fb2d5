"""Median milliseconds of a model's graph with the code of the checkout this runs in (ONNX Runtime, CPU, batch 1).

    python tools/graph_time.py engines/dlc_mouse_coke [--size 640 480] [--threads 2] [--runs 40]

Runs `OnnxRuntimeBackend.infer` (what `rtkp export` calls) on a copy of the model folder, so the export of the graph is
this checkout's and the folder's own cache is left alone. To compare two versions of the graph code, run it from a
checkout of each, alternately (e.g. `git worktree add --detach /tmp/old <commit>`, then `cd /tmp/old && python
/path/to/tools/graph_time.py /path/to/model`, with `PYTHONPATH` unset so the checkout's own `rtkp` is imported).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), help="input size (default: the model's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=40)
    args = ap.parse_args()
    sys.path.insert(0, str(Path.cwd()))  # this checkout's rtkp, not an installed one
    from rtkp.backends.base import read_model_info
    from rtkp.backends.onnxruntime import OnnxRuntimeBackend

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model"
        model.mkdir()
        for name in ("manifest.json", "model.safetensors"):
            shutil.copy(Path(args.model) / name, model / name)
        info = read_model_info(model)
        size = tuple(args.size) if args.size else tuple(info.input_size)
        backend = OnnxRuntimeBackend(info, threads=args.threads, input_size=size)
        x = np.random.default_rng(0).integers(0, 255, (1, size[1], size[0], 3), dtype=np.uint8)
        for _ in range(5):
            backend.infer(x)
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            backend.infer(x)
            times.append(time.perf_counter() - t0)
    print(f"{args.model} {size[0]}x{size[1]}: {np.median(times) * 1e3:.2f} ms (median of {args.runs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
