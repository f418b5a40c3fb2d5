"""Time rtkp's reaction to signals and a killed worker (the figures in docs/RELIABILITY.md).

    python tools/fault_timings.py [--model engines/target_coke] [--repeat 30] [--busy] [--actions SIGINT,SIGTERM]

Starts `rtkp run` on a real-time lavfi source, waits until its three workers run, then sends SIGINT or SIGTERM to it,
or SIGKILL to one worker, and measures the time until `rtkp run` has exited (and whether anything was left behind).
With --cold --warmup 0 the signal arrives while the inference stage is still exporting and loading the graph (what
the test suite does on its first run). With --repeat N each action is tried N times and the distribution (p50, p95,
max) is printed; --busy keeps one core
busy with another process (`python -c "while True: pass"`) for the whole measurement, ended by its PID afterwards.
The promise these figures check: SIGINT/SIGTERM -> exit within 3 s at p95, also with one core busy.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROMISE_S = 3.0


def workers(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if f"PPid:\t{pid}\n" in status and b"spawn_main" in cmd:
            out.append(int(entry))
    return sorted(out)


def segments(pid: int | None = None) -> set:
    """rtkp's shared-memory segments (named rtkp_<creator pid>_...), only those `pid` created when given: other runs
    on the machine must not count as left behind by this one."""
    prefix = "rtkp_" if pid is None else f"rtkp_{pid}_"
    return {n for n in os.listdir("/dev/shm") if n.startswith(prefix)}


def cold_copy(model: str) -> str:
    """A copy of the model folder without its ONNX exports: the inference stage must export the graph while it
    starts, as on a first run (signals that arrive while a stage is still loading are the slow case)."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="rtkp_cold_")) / "model"
    shutil.copytree(model, folder, ignore=shutil.ignore_patterns("onnx", "exports.json", "engines"))
    return str(folder)


def trial(model: str, action: str, size: str, warmup_s: float, cold: bool = False) -> dict:
    if cold:
        model = cold_copy(model)
    cmd = [
        sys.executable,
        "-m",
        "rtkp",
        "run",
        "--source",
        f"lavfi:testsrc2=size={size}:rate=30",
        "--realtime",
        "--model",
        model,
        "--headless",
        "--publish",
        "none",
    ]
    before = segments()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while len(workers(proc.pid)) < 3:
        if proc.poll() is not None:
            raise SystemExit(f"rtkp run ended before its workers started: {proc.stderr.read().strip()}")
        time.sleep(0.05)
    time.sleep(warmup_s)
    kids = workers(proc.pid)
    t0 = time.monotonic()
    if action in ("SIGINT", "SIGTERM"):
        proc.send_signal(getattr(signal, action))
    else:
        os.kill(kids[int(action[-1])], signal.SIGKILL)
    gone: dict[int, float] = {}
    while proc.poll() is None:  # when each worker ends tells which stage is slow to stop
        for k in kids:
            if k not in gone and not Path(f"/proc/{k}").exists():
                gone[k] = time.monotonic() - t0
        time.sleep(0.005)
    dt = time.monotonic() - t0
    _, err = proc.communicate(timeout=30)
    left = [k for k in kids if Path(f"/proc/{k}").exists()]
    return {
        "action": action,
        "exit_s": round(dt, 3),
        "workers_s": [round(gone.get(k, dt), 3) for k in kids],  # decode, infer, post (PID order)
        "rc": proc.returncode,
        "orphans": len(left),
        "shm_left": len(segments(proc.pid) - before),
        "stderr": err.strip().splitlines()[-1:] if err.strip() else [],
    }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "engines" / "target_coke"))
    ap.add_argument("--repeat", type=int, default=1, help="trials per action (default 1)")
    ap.add_argument("--busy", action="store_true", help="keep one core busy with another process meanwhile")
    ap.add_argument("--actions", default="SIGINT,SIGTERM,SIGKILL worker 0,SIGKILL worker 1,SIGKILL worker 2")
    ap.add_argument("--size", default="640x480", help="lavfi frame size (default 640x480)")
    ap.add_argument(
        "--warmup", type=float, default=1.5, help="seconds after the workers appear before the fault (default 1.5)"
    )
    ap.add_argument("--cold", action="store_true", help="a copy of the model without its ONNX exports per trial")
    ap.add_argument("--json", help="write every trial and the summary here")
    args = ap.parse_args()
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    trials, summary = [], {}
    try:
        for action in args.actions.split(","):
            times = []
            for _ in range(args.repeat):
                t = trial(args.model, action, args.size, args.warmup, args.cold)
                trials.append(t)
                times.append(t["exit_s"])
                if args.repeat == 1:
                    print(t, flush=True)
            summary[action] = {
                "n": len(times),
                "p50_s": round(statistics.median(times), 3),
                "p95_s": round(percentile(times, 95), 3),
                "max_s": round(max(times), 3),
                "over_promise": sum(t > PROMISE_S for t in times),
                "orphans": sum(t["orphans"] for t in trials if t["action"] == action),
                "shm_left": sum(t["shm_left"] for t in trials if t["action"] == action),
            }
            print(action, json.dumps(summary[action]), flush=True)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    if args.json:
        Path(args.json).write_text(json.dumps({"busy": args.busy, "summary": summary, "trials": trials}, indent=1))


if __name__ == "__main__":
    main()
