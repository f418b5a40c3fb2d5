"""`rtkp export --ray` throughput with 1 and 2 workers against the local export, and the cost of a chunk, in one run.

    python tools/cluster_throughput.py [VIDEO] [--model engines/dlc_mouse_coke] [--json cluster.json]

Every export runs as its own `rtkp export` process (wall time from start to finish, Ray's start and the model loads
included), one inference thread per worker (`run.threads=1`); the local export gets the same one thread. Runs, in
this order (the local export last again, to show how much the machine's load drifted during the run):

    local          the local export (decode, inference and writing in three processes)
    ray-1w         1 worker, the video as one chunk
    ray-2w         2 workers, chunks of about --chunk-frames frames
    local-again

The cost of a chunk, measured directly (an end-to-end difference drowns in a shared machine's noise): the seek to its
keyframe and first frame (against one frame of a running decode), the frame it decodes beyond its end and the two
pixel hashes of the boundary check, and a call from the driver to a worker and back (a no-op Ray actor method).
Also the per-frame costs the estimate in docs/SCALING.md is built from: decode only (PyAV, RGB) and model only
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


def chunk_costs(video: str) -> dict:
    """ms: the CPU time of decoding a frame (all threads); the frame table (demux); the seek to each keyframe and its
    first frame, beyond one frame of a running decode; the boundary check (one more frame decoded, two pixel hashes)."""
    import numpy as np

    from rtkp.export.track import pixel_hash
    from rtkp.pipeline.containers import frame_table
    from rtkp.pipeline.source_spec import parse_source
    from rtkp.pipeline.sources import Source

    spec, table = parse_source(video), frame_table(video)
    t0, cpu0, n = time.perf_counter(), time.process_time(), 0
    for _ in Source(spec, max_frames=300):
        n += 1
    per_frame, cpu_per_frame = (time.perf_counter() - t0) / n, (time.process_time() - cpu0) / n
    t0 = time.perf_counter()
    frame_table(video)
    table_s = time.perf_counter() - t0
    seeks = []
    for k in np.flatnonzero(table.keyframe)[1:]:
        t0 = time.perf_counter()
        frame = next(iter(Source(spec, start=int(k), max_frames=1, table=table)))
        seeks.append(time.perf_counter() - t0 - per_frame)
    t0 = time.perf_counter()
    for _ in range(20):
        pixel_hash(frame.image)
    hash_s = (time.perf_counter() - t0) / 20
    return {
        "decode_cpu_ms_per_frame": round(1000 * cpu_per_frame, 2),  # all of FFmpeg's threads, and the RGB conversion
        "frame_table_ms": round(1000 * table_s, 1),  # once per worker and file
        "seek_ms": round(1000 * float(np.median(seeks)), 2),
        "seek_ms_max": round(1000 * max(seeks), 2),
        "keyframes": len(seeks) + 1,
        "boundary_check_ms": round(1000 * (per_frame + 2 * hash_s), 2),
    }


def actor_call_ms(calls: int = 200) -> float:
    """Median round trip of a no-op actor method on a local Ray instance (one CPU)."""
    import logging

    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:

        @ray.remote(num_cpus=1)
        class Noop:
            def call(self, *args):
                return args

        actor = Noop.remote()
        ray.get(actor.call.remote())
        times = []
        for i in range(calls):
            t0 = time.perf_counter()
            ray.get(actor.call.remote("video.mp4", "out/x.partial", i, i + 3000))
            times.append(time.perf_counter() - t0)
    finally:
        ray.shutdown()
    return round(1000 * sorted(times)[len(times) // 2], 3)


def main() -> None:
    from rtkp.cli.bench import decode_only, first_frames, machine_info, model_only

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
    r["model_only_1_thread"] = model_only(args.model, args.backend, first_frames(args.video, 30), args.seconds, 1)
    r["chunk_costs"] = dict(chunk_costs(args.video), actor_call_ms=actor_call_ms())
    print("per-frame and chunk costs", r["decode_only"], r["model_only_1_thread"], r["chunk_costs"], file=sys.stderr)
    ray = ["--ray", "auto"]
    runs = {
        "local": (),
        "ray-1w": (*ray, "--workers", "1", "--chunk-frames", str(10**9)),
        "ray-2w": (*ray, "--workers", "2", "--chunk-frames", str(args.chunk_frames)),
        "local-again": (),
    }
    with tempfile.TemporaryDirectory() as tmp:
        outs = {}
        for name, extra in runs.items():
            outs[name] = Path(tmp) / name
            r[name] = _export(args.video, outs[name], args.model, args.backend, *extra)
            print(name, r[name], file=sys.stderr, flush=True)
        stem = Path(args.video).stem
        r["records_identical"] = {
            name: all(
                filecmp.cmp(outs["local"] / f"{stem}{s}", outs[name] / f"{stem}{s}", shallow=False) for s in RECORDS
            )
            for name in runs
        }
    local = r["local"]["fps"]
    r["ratios_to_local"] = {name: round(r[name]["fps"] / local, 3) for name in runs}
    r["ratio_2w_to_1w"] = round(r["ray-2w"]["fps"] / r["ray-1w"]["fps"], 3)
    r["per_frame_ms"] = {
        "decode": round(1000 / r["decode_only"]["fps"], 2),
        "model_1_thread": round(1000 / r["model_only_1_thread"]["fps"], 2),
        "worker_1_thread": round(1000 * r["ray-1w"]["worker_s"] / r["ray-1w"]["frames"], 2),
    }
    c = r["chunk_costs"]
    r["chunk_overhead_ms"] = round(c["seek_ms"] + c["boundary_check_ms"] + c["actor_call_ms"], 2)  # one call a chunk
    r["bytes_per_frame"] = round(r["video_bytes"] / r["local"]["frames"], 1)
    r["load_avg_end"] = os.getloadavg()
    print(json.dumps(r, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1) + "\n")


if __name__ == "__main__":
    main()
