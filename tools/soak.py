"""Soak test: a long live run at the source's rate; RSS and capture→publish p99 per minute, and their growth.

    python tools/soak.py [--minutes 10] [--source SRC] [--model DIR] [--json out.json]

The default source loops the demo video in real time through lavfi (`movie=...:loop=0`), so the model tracks the
target for the whole run. Memory is the summed RSS of `rtkp run` and its worker processes (from /proc); latency comes
from the run's own `status` messages (rolling window) received over ZeroMQ on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def tree_rss_mb(pid: int) -> float:
    pids, total = [pid], 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            if any(line.startswith("PPid:") and int(line.split()[1]) == pid for line in status.splitlines()):
                pids.append(int(entry))
    for p in pids:
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total / 1024


def main() -> None:
    from rtkp.cli.defaults import DEFAULT_MODEL, cache_dir
    from rtkp.demo.video import demo_video
    from rtkp.wire.subscriber import Subscriber

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--source")
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--endpoint", default="tcp://127.0.0.1:5591")
    ap.add_argument("--json")
    args = ap.parse_args()
    source = args.source or f"lavfi:movie={demo_video(cache_dir())}:loop=0,setpts=N/(30*TB)"
    cmd = [
        sys.executable,
        "-m",
        "rtkp",
        "run",
        "--source",
        source,
        "--realtime",
        "--model",
        args.model,
        "--headless",
        "--publish",
        args.endpoint,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sub = Subscriber(args.endpoint, timeout_s=1)
    rows, t0, last_status = [], time.monotonic(), None
    next_mark = 60.0
    try:
        while time.monotonic() - t0 < args.minutes * 60:
            sub.receive(0.5)
            last_status = sub.status.get("default", last_status)
            if time.monotonic() - t0 >= next_mark and last_status:
                row = {
                    "minute": round(next_mark / 60),
                    "rss_mb": round(tree_rss_mb(proc.pid), 1),
                    "p50_ms": last_status["latency_ms"].get("p50"),
                    "p99_ms": last_status["latency_ms"].get("p99"),
                    "fps": round(last_status["fps"], 2),
                    "dropped": last_status["dropped"],
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
                next_mark += 60.0
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        sub.close()
    base = rows[1] if len(rows) > 2 else rows[0]
    growth = {
        "rss": round(rows[-1]["rss_mb"] / base["rss_mb"] - 1, 4),
        "p99": round(rows[-1]["p99_ms"] / base["p99_ms"] - 1, 4),
    }
    result = {"command": " ".join(cmd), "minutes": rows, "growth_vs_minute_2": growth, "run_summary": out.strip()}
    print(json.dumps(growth))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
