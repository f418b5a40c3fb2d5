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
    from rtkp.manifest import read_manifest
    from rtkp.pipeline.run import RunOptions, describe, pick_policy, run_pipeline
    from rtkp.pipeline.sources import check_source

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
        write_text(args.json, "--json", json.dumps(summary, indent=1, default=str) + "\n")
    return 0
