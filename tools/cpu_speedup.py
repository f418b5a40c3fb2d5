"""`rtkp export` frame rate of today's code and model against an earlier commit's, in one run, interleaved.

    python tools/cpu_speedup.py [VIDEO] [--baseline-commit 83bbe0e] [--model engines/dlc_mouse_coke] [--rounds 2]
                                [--whole-frame-too] [--json out.json]

The baseline is the earlier commit's code running the earlier commit's model folder (a temporary `git worktree` of
it, removed at the end); today's is this checkout with its model folder. Both run the same command a user runs,
`python -m rtkp export VIDEO --out ... --model MODEL --quiet` with default settings, as a fresh process on this
machine. Start-up and graph building are excluded by difference: each round also exports a short stream copy of the
video's first SHORT_FRAMES frames, and the frame rate is (frames of the whole − frames of the short) / (seconds of
the whole − seconds of the short); graphs are built in a warm-up round that is not counted. Rounds alternate the two
codes (baseline short, today short, baseline whole, today whole); the figures are the medians over rounds, and the
ratio is today's over the baseline's. --whole-frame-too also runs today's code with --whole-frame (the graph on the
whole frame every frame: what following the animal buys, apart from the rest).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHORT_FRAMES = 150


def stream_copy(src: Path, dst: Path, frames: int) -> Path:
    """The first `frames` packets of the video stream, copied without re-encoding (the same pixels when decoded)."""
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        stream = o.add_stream_from_template(i.streams.video[0])
        for n, packet in enumerate(i.demux(i.streams.video[0])):
            if packet.dts is None or n >= frames:
                continue
            packet.stream = stream
            o.mux(packet)
    return dst


def export(cwd: Path, video: Path, model: str, *extra: str) -> tuple[float, int]:
    """(seconds, frames written) of one `rtkp export` run by the code in `cwd`."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "rtkp", "export", str(video), "--out", out, "--model", model, "--quiet", *extra]
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
        frames = len((Path(out) / f"{video.stem}.jsonl").read_text().splitlines())
    return seconds, frames


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video", nargs="?", default=str(REPO.parent / "shared/data/dlc_openfield_mouse/videos/m3v1mp4.mp4"))
    ap.add_argument("--baseline-commit", default="83bbe0e")
    ap.add_argument("--model", default="engines/dlc_mouse_coke", help="model folder, relative to each checkout")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--whole-frame-too", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    video = Path(args.video).resolve()
    if not video.is_file():
        print(f"cpu_speedup: {video}: no such video", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        git = ["git", "-C", str(REPO), "worktree"]
        subprocess.run([*git, "add", "--detach", str(base), args.baseline_commit], check=True)
        try:
            short = stream_copy(video, Path(tmp) / f"{video.stem}_short.mp4", SHORT_FRAMES)
            runs = {"baseline": (base, ()), "today": (REPO, ())}
            if args.whole_frame_too:
                runs["today --whole-frame"] = (REPO, ("--whole-frame",))
            for cwd, extra in runs.values():  # warm-up: builds and caches each checkout's graphs
                export(cwd, short, args.model, *extra)
            times: dict = {name: {"short": [], "whole": []} for name in runs}
            for r in range(args.rounds):
                for part, clip in (("short", short), ("whole", video)):
                    for name, (cwd, extra) in runs.items():
                        times[name][part].append(export(cwd, clip, args.model, *extra))
                        print(f"round {r + 1} {part:5s} {name}: {times[name][part][-1][0]:.1f} s", file=sys.stderr)
        finally:
            subprocess.run([*git, "remove", "--force", str(base)], check=False)
    result = {"video": str(video), "baseline_commit": args.baseline_commit, "model": args.model, "rounds": args.rounds}
    for name, parts in times.items():
        rates = [(fw - fs) / (tw - ts) for (ts, fs), (tw, fw) in zip(parts["short"], parts["whole"])]
        result[name] = {
            "fps": round(statistics.median(rates), 1),
            "fps_per_round": [round(x, 1) for x in rates],
            "short_s": round(statistics.median(t for t, _ in parts["short"]), 1),
            "frames": parts["whole"][0][1],
        }
    for name in runs:
        if name != "baseline":
            result[name]["ratio"] = round(result[name]["fps"] / result["baseline"]["fps"], 2)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
