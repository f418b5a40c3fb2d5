"""Time rtkp's reaction to signals and a killed worker (the figures in docs/RELIABILITY.md).

    python tools/fault_timings.py [--model engines/target_coke]

Starts `rtkp run` on a real-time lavfi source, waits until its three workers run, then sends SIGINT or SIGTERM to it,
or SIGKILL to one worker, and measures the time until `rtkp run` has exited (and whether anything was left behind).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


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


def segments() -> set:
    return {n for n in os.listdir("/dev/shm") if n.startswith("rtkp_")}


def trial(model: str, action: str) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "rtkp",
        "run",
        "--source",
        "lavfi:testsrc2=size=640x480:rate=30",
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
        time.sleep(0.05)
    time.sleep(3.0)
    kids = workers(proc.pid)
    t0 = time.monotonic()
    if action == "SIGINT":
        proc.send_signal(signal.SIGINT)
    elif action == "SIGTERM":
        proc.send_signal(signal.SIGTERM)
    else:
        os.kill(kids[int(action[-1])], signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    dt = time.monotonic() - t0
    left = [k for k in kids if Path(f"/proc/{k}").exists()]
    return {
        "action": action,
        "exit_s": round(dt, 2),
        "rc": proc.returncode,
        "orphans": len(left),
        "shm_left": len(segments() - before),
        "stderr": err.strip().splitlines()[-1:] if err.strip() else [],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "engines" / "target_coke"))
    args = ap.parse_args()
    for action in ("SIGINT", "SIGTERM", "SIGKILL worker 0", "SIGKILL worker 1", "SIGKILL worker 2"):
        print(trial(args.model, action), flush=True)


if __name__ == "__main__":
    main()
