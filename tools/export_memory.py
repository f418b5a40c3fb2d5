"""Peak memory of `rtkp export` against video length: a streaming export stays flat.

    python tools/export_memory.py [--frames 1000 10000] [--model DIR] [--smooth none] [--code DIR]

For each length: a 128x96 lavfi testsrc2 MP4 (libx264), exported by `rtkp export` (all formats) in a subprocess with
a tiny random-weight model (tests/conftest.py make_tiny_model) unless --model is given. The peak resident set
(VmHWM, getrusage) is recorded for the parent and for the largest worker; a 30-frame export runs first and is not
reported (it builds the model's cached ONNX graph). --code DIR runs another checkout's rtkp (e.g. `git archive HEAD |
tar -x -C /tmp/old`) for a before/after comparison. Prints JSON per length: peak RSS of the parent and of the largest
worker (MiB), frames and seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def write_video(path: Path, frames: int) -> Path:
    import av

    with av.open("testsrc2=size=128x96:rate=30", format="lavfi") as src, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i, frame in enumerate(src.decode(video=0)):
            if i == frames:
                break
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


# Runs `rtkp` as `python -m rtkp` would, and at exit writes the peak RSS (KiB) of this process (VmHWM: ru_maxrss would
# include this tool's own RSS at the fork, which Linux carries over the exec) and of the largest of its reaped workers.
# Exact, unlike sampling /proc from outside, which misses a peak just before exit (where the old export wrote).
WRAPPER = """
import atexit, json, resource, runpy, sys
path, sys.argv = sys.argv[1], ["rtkp", *sys.argv[2:]]
hwm = lambda: next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
atexit.register(lambda: open(path, "w").write(json.dumps(
    {"parent": hwm(), "workers": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
     "rtkp": sys.modules["rtkp"].__file__})))
runpy.run_module("rtkp", run_name="__main__", alter_sys=True)
"""


def measure(args: list[str], env: dict, report: Path) -> tuple[dict, float]:
    """Run `rtkp ARGS`; (peak KiB of the parent and of the largest worker, seconds)."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-c", WRAPPER, str(report), *args]
    # cwd: not a checkout, whose rtkp `python -c` would import before the one PYTHONPATH names
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, cwd=report.parent)
    if proc.returncode != 0:
        sys.exit(f"export failed with exit code {proc.returncode}: rtkp {' '.join(args)}")
    return json.loads(report.read_text()), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--model", help="model folder (default: a tiny random-weight model)")
    ap.add_argument("--smooth", default="none", choices=["none", "causal", "offline"])
    ap.add_argument("--code", help="the rtkp checkout to run (default: this one)")
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(Path(args.code or REPO).resolve()))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model
        if model is None:
            sys.path.insert(0, str(REPO / "tests"))
            from conftest import make_tiny_model

            model = str(make_tiny_model(tmp / "model"))
        # a first, short export builds the model's cached ONNX graph (with torch): a one-off, not part of any length
        for n in [30, *args.frames]:
            video = write_video(tmp / f"clip{n}.mp4", n)
            out = tmp / f"out{n}"
            cmd = ["export", str(video), "--out", str(out), "--model", model, "--backend", "onnxruntime"]
            cmd += ["--smooth", args.smooth, "--quiet", "--set", "run.threads=1"]
            peaks, secs = measure(cmd, env, tmp / "peaks.json")
            if n == 30:
                continue
            lines = len((out / f"clip{n}.jsonl").read_text().splitlines())
            results.append(
                {
                    "frames": n,
                    "records": lines,
                    "seconds": round(secs, 1),
                    "rtkp": str(Path(peaks["rtkp"]).parent),
                    "parent_peak_rss_mib": round(peaks["parent"] / 1024, 1),
                    "largest_worker_peak_rss_mib": round(peaks["workers"] / 1024, 1),
                }
            )
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    code = str(Path(args.code or REPO).resolve())
    print(json.dumps({"code": code, "smooth": args.smooth, "runs": results}, indent=1))


if __name__ == "__main__":
    main()
