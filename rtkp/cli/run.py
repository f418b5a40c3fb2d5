"""`rtkp run`: track keypoints live from a source and publish them.

Heavy packages (the pipeline, PyAV, ZeroMQ) are imported inside the command, so that `rtkp --help` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from rtkp.cli.defaults import resolve_source
from rtkp.cli.paths import endpoint, input_file, input_folder, output_file, write_text
from rtkp.errors import ConfigError, ModelError


class RunProgress:
    """The progress of a run on a file or image folder, on stderr: on a terminal, a bar like `rtkp export`'s
    (rtkp.export.progress.Progress: frames done of those the source lists, rate, time left); elsewhere (a log, a pipe)
    a plain line when the run passes each tenth of the frames and at least every LINE_EVERY_S, and a last one with the
    final count. Fed a few times a second by the parent (run_pipeline's on_progress), so it costs the stages nothing.
    """

    LINE_EVERY_S = 60.0

    def __init__(self, stem: str, total: int | None, terminal: bool):
        self.stem, self.total, self.terminal = stem, total, terminal
        self.bar = self.first = None
        self.line = (0.0, -1, 0)  # (time, tenth, frames) of the last plain line
        self.frames = 0

    def __call__(self, frames: int) -> None:
        import time

        if not frames and self.first is None:
            return  # (the post stage's last report, when no frame was tracked)
        now, self.frames = time.monotonic(), frames
        if self.first is None:
            self.first = (now, frames)
            if self.terminal:
                from rtkp.export.progress import Progress

                self.bar = Progress(self.stem, self.total, 0, False, enabled=True)
        if self.bar is not None:
            self.bar.to(frames)
            return
        tenth = frames * 10 // self.total if self.total else -1
        if tenth > self.line[1] or now - self.line[0] >= self.LINE_EVERY_S:
            self._print(now, tenth)

    def _print(self, now: float, tenth: int) -> None:
        t0, n0 = self.first
        fps = (self.frames - n0) / (now - t0) if now > t0 and self.frames > n0 else 0.0
        text = f"{self.frames}/{self.total} frames ({100 * self.frames // self.total} %)" if self.total else ""
        text = text or f"{self.frames} frames"
        if fps > 0:
            text += f", {fps:.1f} fps"
            if self.total and self.frames < self.total:
                left = round((self.total - self.frames) / fps)
                text += f", ETA {left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"
        print(f"rtkp run: {text}", file=sys.stderr, flush=True)
        self.line = (now, tenth, self.frames)

    def close(self, ended: bool) -> None:
        """After the run: the bar completed at the frames tracked, or the last plain line if it has not been said;
        ended: False when the run failed (its error follows: the bar stays where it was, no more lines)."""
        import time

        if self.bar is not None:
            if ended:
                self.bar.phase("done", self.frames)
                self.bar.step()
            self.bar.close()
        elif ended and self.first is not None and self.line[2] != self.frames:
            self._print(time.monotonic(), self.line[1])


def run_progress(spec, listed: int | None, max_frames: int | None) -> RunProgress:
    """The RunProgress of a file or image folder run losslessly; listed: the frames the file lists (listed_frames)."""
    from rtkp.pipeline.sources import image_files

    total = len(image_files(spec)) if spec.kind == "images" else listed
    if total and max_frames:
        total = min(total, max_frames)
    return RunProgress(Path(spec.target).stem or spec.text, total, sys.stderr.isatty())


def listed_frames(spec) -> int | None:
    """The frames a video file's header lists, as `rtkp export` counts them (None: not a file, or unknown)."""
    from rtkp.export.progress import total_frames

    return total_frames(spec.target) if spec.kind == "file" else None


def count_missing(summary: dict, listed: int | None, max_frames: int | None) -> None:
    """Put in `summary` the frames a file lists that the run could not read (a truncated file), as `rtkp export`
    reports them: `listed_frames` and `missing_frames` (for a file run to its end, or to --max-frames)."""
    if listed is None:
        return
    expected = min(listed, max_frames) if max_frames else listed
    summary["listed_frames"] = listed
    summary["missing_frames"] = max(expected - summary.get("counts", {}).get("decoded", 0), 0)


def has_display() -> bool:
    """Whether a window can open here (on Linux: an X11 or Wayland display is set)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def check_outputs(args) -> None:
    """--record and --json: files in a folder that exists and can be written in (both are written at the end)."""
    if args.record:
        output_file(args.record, "--record")
    if args.json:
        output_file(args.json, "--json")


def check_sockets(args, run, publish: str) -> None:
    """The endpoints and the CURVE key files, before a process starts: ZeroMQ's own errors come from the post
    process, after the model has loaded."""
    from rtkp.wire import curve

    if publish != "none":
        endpoint(publish, "--publish", bind=True)
    if args.control:
        endpoint(args.control, "--control", bind=True)
    if run.curve_key:
        curve.load_key(run.curve_key, secret=True, flag="--curve-key")
        if not run.curve_clients:
            raise ConfigError("CURVE needs the folder of allowed client public keys (--curve-clients DIR)")
        input_folder(run.curve_clients, "--curve-clients")


def cmd_run(args) -> int:
    from rtkp.config import load_config
    from rtkp.errors import Interrupted
    from rtkp.instances.stage import check_max_instances
    from rtkp.manifest import read_manifest
    from rtkp.pipeline.run import RunOptions, describe, pick_policy, run_pipeline
    from rtkp.pipeline.sources import check_source, parse_source

    check_outputs(args)
    if args.config:
        input_file(args.config, "--config")
    overrides = list(args.set) + ([f"smoothing.filter={args.smooth}"] if args.smooth else [])
    overrides += [f"run.curve_key={args.curve_key}"] if args.curve_key else []
    overrides += [f"run.curve_clients={args.curve_clients}"] if args.curve_clients else []
    cfg = load_config(args.config, overrides)
    if args.max_frames is not None and args.max_frames <= 0:
        raise ConfigError(f"--max-frames must be a positive integer, got {args.max_frames}")
    publish = args.publish if args.publish is not None else cfg.run.publish
    check_sockets(args, cfg.run, publish)
    # the cheap checks a user's typo fails first: the source (a camera that does not exist), then the model folder
    source, demo = resolve_source(args.source)
    check_source(source)  # opens nothing live: the decode process opens a camera or stream, once
    input_folder(args.model, "--model", ModelError, must_exist=False)  # a missing one: read_manifest says more
    manifest = read_manifest(args.model)
    check_max_instances(manifest, args.max_instances)  # one line here, before any process starts
    display = not args.headless and has_display()
    realtime = args.realtime or demo  # the demo video plays like a camera
    opts = RunOptions(
        source=source,
        model=args.model,
        backend=args.backend,
        policy=pick_policy(source, realtime),
        realtime=realtime,
        max_frames=args.max_frames,
        publish=None if publish == "none" else publish,
        display=display,
        record=args.record,
        threads=args.threads or cfg.run.threads,
        precision=args.precision,
        smoothing=cfg.smoothing,
        run=cfg.run,
        control=args.control,
        max_instances=args.max_instances,
        whole_frame=args.whole_frame,
    )

    def on_backend(backend: str) -> None:
        # the first line says what is tracked with what: running a mouse video through the target model is obvious
        names = manifest.keypoint_names
        print(
            f"rtkp run: model {Path(args.model).name} ({len(names)} keypoints: {', '.join(names)}), "
            f"backend {backend}, source {args.source} ({opts.policy}), "
            f"publishing on {opts.publish or 'nothing (--publish none)'}"
            + (f", control on {opts.control}" if opts.control else ""),
            flush=True,
        )
        if not args.headless and not display:
            print("rtkp run: no display found; running headless (pass --headless to silence this)", file=sys.stderr)

    # a file or image folder has an end: its progress on stderr (a live source has none, and no bar)
    spec = parse_source(source)
    lossless = opts.policy == "lossless" and not spec.live
    listed = listed_frames(spec) if lossless else None
    progress = run_progress(spec, listed, args.max_frames) if lossless else None
    stopped, ended = None, False
    try:
        summary = run_pipeline(opts, on_backend=on_backend, on_progress=progress)
        count_missing(summary, listed, args.max_frames)
        ended = True
    except Interrupted as exc:
        # stopping a live run with Ctrl-C or SIGTERM is the normal way to end it: a clean stop, a summary, exit 0
        summary, stopped, ended = exc.summary, exc, True
    finally:
        if progress is not None:
            progress.close(ended)
    if stopped is not None:
        print(f"rtkp run: {stopped}", file=sys.stderr)
    print(describe(summary))
    if args.json:
        write_text(args.json, "--json", json.dumps(summary, indent=1, default=str) + "\n")
    return 0
