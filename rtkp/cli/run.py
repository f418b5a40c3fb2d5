"""`rtkp run`: track keypoints live from a source and publish them.

Heavy packages (the pipeline, PyAV, ZeroMQ) are imported inside the command, so that `rtkp --help` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from rtkp.cli.defaults import resolve_source
from rtkp.errors import ConfigError


def has_display() -> bool:
    """Whether a window can open here (on Linux: an X11 or Wayland display is set)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def cmd_run(args) -> int:
    from rtkp.config import load_config
    from rtkp.errors import Interrupted
    from rtkp.manifest import read_manifest
    from rtkp.pipeline.run import RunOptions, describe, pick_policy, run_pipeline
    from rtkp.pipeline.sources import check_source

    overrides = list(args.set) + ([f"smoothing.filter={args.smooth}"] if args.smooth else [])
    overrides += [f"run.curve_key={args.curve_key}"] if args.curve_key else []
    overrides += [f"run.curve_clients={args.curve_clients}"] if args.curve_clients else []
    cfg = load_config(args.config, overrides)
    if args.max_frames is not None and args.max_frames <= 0:
        raise ConfigError(f"--max-frames must be a positive integer, got {args.max_frames}")
    # the cheap checks a user's typo fails first: the source (a camera that does not exist), then the model folder
    source, demo = resolve_source(args.source)
    check_source(source)  # opens nothing live: the decode process opens a camera or stream, once
    manifest = read_manifest(args.model)
    publish = args.publish if args.publish is not None else cfg.run.publish
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

    try:
        summary = run_pipeline(opts, on_backend=on_backend)
    except Interrupted as exc:
        # stopping a live run with Ctrl-C or SIGTERM is the normal way to end it: a clean stop, a summary, exit 0
        summary = exc.summary
        print(f"rtkp run: {exc}", file=sys.stderr)
    print(describe(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return 0
