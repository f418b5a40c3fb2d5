"""`rtkp export --ray` throughput with 1 and 2 workers against the local export, and the cost of a chunk, in one run.

    python tools/cluster_throughput.py [VIDEO] [--model engines/dlc_mouse_coke] [--json cluster.json]

Every export runs as its own `rtkp export` process (wall time from start to finish, Ray's start and the model loads
included), one inference thread per worker (`run.threads=1`); the local export gets the same one thread. Runs:

    local          the local export (decode, inference and writing in three processes)
    ray-1w-1c      1 worker, the video as one chunk
    ray-1w-kc      1 worker, a chunk at every keyframe (chunk overhead = the difference / the extra chunks)
    ray-2w         2 workers, chunks of about --chunk-frames frames

plus the per-frame costs the estimate in docs/SCALING.md is built from: decode only (PyAV, RGB) and model only
(batch 1, one thread). Every run's records are compared with the local export's (they must be identical).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VIDEO = REPO.parent / "shared/data/dlc_openfield_mouse/videos/m3v1mp4.mp4"
RECORDS = (".coco.json", ".jsonl", ".csv")


def _export(video: str, out: Path, model: str, backend: str, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "rtkp", "export", video, "--out", str(out), "--model", model, "--backend", backend]
    cmd += ["--quiet", "--set", "run.threads=1", *extra]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
    result = json.loads((out / f"{Path(video).stem}.done.json").read_text())["result"]
    return {
        "wall_s": round(wall, 2),
        "frames": result["frames"],
        "fps": round(result["frames"] / wall, 2),
        "chunks": len(result["segments"]),
        "worker_s": result["seconds"],  # time spent tracking (all workers together)
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    from rtkp.bench import _frames, decode_only, machine_info, model_only

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video", nargs="?", default=str(VIDEO))
    ap.add_argument("--model", default=str(REPO / "engines/dlc_mouse_coke"))
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--chunk-frames", type=int, default=500, help="chunk length of the 2-worker run")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the decode-only and model-only runs")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    r: dict = {"machine": machine_info(), "video": args.video, "model": args.model, "load_avg_start": os.getloadavg()}
    r["video_bytes"] = Path(args.video).stat().st_size
    r["decode_only"] = decode_only(args.video, args.seconds)
    r["model_only_1_thread"] = model_only(args.model, args.backend, _frames(args.video, 30), args.seconds, 1)
    ray = ["--ray", "auto"]
    runs = {
        "local": (),
        "ray-1w-1c": (*ray, "--workers", "1", "--chunk-frames", str(10**9)),
        "ray-1w-kc": (*ray, "--workers", "1", "--chunk-frames", "1"),
        "ray-2w": (*ray, "--workers", "2", "--chunk-frames", str(args.chunk_frames)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        outs = {}
        for name, extra in runs.items():
            outs[name] = Path(tmp) / name
            r[name] = _export(args.video, outs[name], args.model, args.backend, *extra)
            print(name, r[name], file=sys.stderr, flush=True)
        stem = Path(args.video).stem
        r["records_identical"] = all(
            filecmp.cmp(outs["local"] / f"{stem}{s}", outs[name] / f"{stem}{s}", shallow=False)
            for name in runs
            for s in RECORDS
        )
    local = r["local"]["fps"]
    r["ratios_to_local"] = {name: round(r[name]["fps"] / local, 3) for name in runs}
    one, many = r["ray-1w-1c"], r["ray-1w-kc"]
    extra = max(many["chunks"] - one["chunks"], 1)
    r["chunk_overhead_s"] = {
        "wall": round((many["wall_s"] - one["wall_s"]) / extra, 3),
        "worker": round((many["worker_s"] - one["worker_s"]) / extra, 3),
    }
    r["per_frame_ms"] = {
        "decode": round(1000 / r["decode_only"]["fps"], 2),
        "model_1_thread": round(1000 / r["model_only_1_thread"]["fps"], 2),
        "worker_1_thread": round(1000 * one["worker_s"] / one["frames"], 2),
    }
    r["bytes_per_frame"] = round(r["video_bytes"] / r["local"]["frames"], 1)
    r["load_avg_end"] = os.getloadavg()
    print(json.dumps(r, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1) + "\n")


if __name__ == "__main__":
    main()
