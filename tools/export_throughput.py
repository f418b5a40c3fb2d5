"""Offline export throughput against the model-only throughput of the same backend and model, in one run.

    python tools/export_throughput.py [VIDEO] [--model engines/dlc_mouse_coke] [--backend onnxruntime]

Model-only: batch-1 `backend.infer` on preprocessed frames of the same video (what "the model can do"). Export: the
whole `rtkp export` of the video (decode, inference, matching, all writers), timed from start to finish.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    from rtkp.cli.bench import first_frames, model_only

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video", nargs="?", default=str(REPO.parent / "shared/data/dlc_openfield_mouse/videos/m3v1mp4.mp4"))
    ap.add_argument("--model", default=str(REPO / "engines/dlc_mouse_coke"))
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    mo = model_only(args.model, args.backend, first_frames(args.video, 30), args.seconds, 0)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "rtkp",
                "export",
                args.video,
                "--out",
                out,
                "--model",
                args.model,
                "--backend",
                args.backend,
                "--quiet",
            ],
            check=True,
        )
        secs = time.perf_counter() - t0
        frames = len((Path(out) / (Path(args.video).stem + ".jsonl")).read_text().splitlines())
    export_fps = frames / secs
    result = {
        "model_only_fps_batch1": mo["fps"],
        "model_only_fps_batch": mo["fps_batch"],
        "batch": mo["batch"],
        "export_fps": round(export_fps, 2),
        "frames": frames,
        "seconds": round(secs, 1),
        "ratio_to_batch1": round(export_fps / mo["fps"], 3),
        "ratio_to_same_batch": round(export_fps / mo["fps_batch"], 3),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
