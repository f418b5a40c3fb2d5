"""The implementation of each `rtkp` subcommand: parsed arguments in, exit code out.

Heavy packages are imported inside each command, so that `rtkp --help` stays fast.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

from rtkp.cli.defaults import resolve_source
from rtkp.errors import ConfigError, RtkpError


def cmd_train(args) -> int:
    from rtkp.config import load_config
    from rtkp.data.load import load_split
    from rtkp.train.loop import few_frames_warning, train

    overrides = list(args.set) + ([f"model.head={args.head}"] if args.head else [])
    cfg = load_config(args.config, overrides)
    images = getattr(args, "images", None)  # a COCO images folder (`--images`), when the parser offers one
    keypoints = _keypoint_list(getattr(args, "keypoints", None))
    data = load_split(args.data, args.split, "train", images)
    if keypoints:
        data = data.select_keypoints(keypoints)
    out = Path(args.out)
    provenance = {
        "data": str(Path(args.data).resolve()),
        "split": str(Path(args.split).resolve()) if args.split else None,
        "samples": len(data),
        "command": "rtkp " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    }
    if keypoints:
        provenance["keypoints"] = keypoints  # a subset of the data's keypoints
    if args.stop_after is not None and args.stop_after <= 0:
        raise ConfigError(f"--stop-after must be a positive integer, got {args.stop_after}")
    warning = few_frames_warning(data)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    print(f"training {cfg.model.head} on {len(data)} samples ({data.kind}), {cfg.train.steps} steps -> {out}")
    manifest = train(data, cfg, out, not args.no_resume, not args.quiet, provenance, args.stop_after)
    if manifest is None:
        print(f"stopped after {args.stop_after} steps; checkpoint in {out / 'checkpoint'} (run again to resume)")
        return 0
    if args.split and not args.no_eval:
        from rtkp.train.evaluate import evaluate, format_report, record_in_manifest

        test = load_split(args.data, args.split, "test", images)
        if keypoints:
            test = test.select_keypoints(keypoints)
        # through a backend like `rtkp eval` (auto: what `rtkp run` would pick here); the report names which
        report = evaluate(out, test, occlusion=True, progress=not args.quiet, backend="auto")
        record_in_manifest(out, report, args.data, args.split)
        print(format_report(report))
    print(f"model written to {out}")
    return 0


def _keypoint_list(text: str | None) -> list[str] | None:
    """--keypoints A,B,C -> ["A", "B", "C"] (None when not given)."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"--keypoints must name at least one keypoint, got {text!r}")
    return names


def cmd_eval(args) -> int:
    from rtkp.data.load import load_split
    from rtkp.train.evaluate import evaluate, format_report, plot_report

    photos = None
    if args.occluders:
        from rtkp.data.occlude import load_photos

        if not args.occlusion:
            raise ConfigError("--occluders needs --occlusion (the occluders are only pasted for the occlusion levels)")
        photos = load_photos(args.occluders)
    data = load_split(args.data, args.split, "test", args.images)
    if args.keypoints:
        data = data.select_keypoints(_keypoint_list(args.keypoints))
    report = evaluate(
        Path(args.model),
        data,
        occlusion=args.occlusion,
        progress=not args.quiet,
        backend=args.backend,
        precision=args.precision,
        photos=photos,
        photos_source=args.occluders,
    )
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    if args.plot:
        plot_report(report, Path(args.plot))
    return 0


def cmd_build_engine(args) -> int:
    from rtkp.backends import read_model_info
    from rtkp.graphs.onnx import export_onnx

    info = read_model_info(args.model)
    size = args.input_size or info.input_size
    for fp16 in (False, True) if args.fp16 else (False,):
        path = export_onnx(args.model, size, fp16=fp16)
        print(f"onnx: {path}")
    if args.debug:
        print(f"onnx: {export_onnx(args.model, size, debug=True)}")
    if args.backend == "tensorrt":
        from rtkp.backends.tensorrt import TensorRTBackend

        backend = TensorRTBackend(info, fp16=args.fp16, input_size=size)
        engine, _ = backend.cache.paths(backend.key)
        print(f"tensorrt engine: {engine}")
    return 0


def _has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def cmd_run(args) -> int:
    from rtkp.config import load_config
    from rtkp.errors import Interrupted
    from rtkp.manifest import read_manifest
    from rtkp.pipeline.run import RunOptions, describe, pick_policy, probe_frame_bytes, run_pipeline

    overrides = list(args.set) + ([f"smoothing.filter={args.smooth}"] if args.smooth else [])
    overrides += [f"run.curve_key={args.curve_key}"] if args.curve_key else []
    overrides += [f"run.curve_clients={args.curve_clients}"] if args.curve_clients else []
    cfg = load_config(args.config, overrides)
    if args.max_frames is not None and args.max_frames <= 0:
        raise ConfigError(f"--max-frames must be a positive integer, got {args.max_frames}")
    # the cheap checks a user's typo fails first: the source (a camera that does not exist), then the model folder
    source, demo = resolve_source(args.source)
    frame_bytes = probe_frame_bytes(source)
    manifest = read_manifest(args.model)
    publish = args.publish if args.publish is not None else cfg.run.publish
    display = not args.headless and _has_display()
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
        names = manifest["keypoint_names"]
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
        summary = run_pipeline(opts, on_backend=on_backend, frame_bytes=frame_bytes)
    except Interrupted as exc:
        # stopping a live run with Ctrl-C or SIGTERM is the normal way to end it: a clean stop, a summary, exit 0
        summary = exc.summary
        print(f"rtkp run: {exc}", file=sys.stderr)
    print(describe(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return 0


def cmd_export(args) -> int:
    """Export every input; a failed input is reported and the others still run (ExportFailed at the end). Interrupted
    (exit 130) keeps the input's partial outputs: its message says to run the same command again to resume."""
    from rtkp.config import load_config
    from rtkp.errors import ExportFailed, Interrupted
    from rtkp.export.local import ExportOptions, check_out_dir, expand_inputs, export_one, parse_formats

    if args.ray:
        from rtkp.errors import require

        require("ray", "cluster")  # before anything else: the one line that says how to install it
    cfg = load_config(args.config, args.set)
    out = Path(args.out)
    check_out_dir(out)
    opts = ExportOptions(
        out=out,
        model=args.model,
        cfg=cfg,
        formats=tuple(parse_formats(args.format)),
        video=args.video,
        smooth=args.smooth,
        backend=args.backend,
        overwrite=args.overwrite,
        progress=not args.quiet,
        precision=args.precision,
    )
    inputs = expand_inputs(args.inputs)
    if args.ray:
        from rtkp.export.ray import export_on_ray

        return export_on_ray(inputs, opts, args.ray, args.workers, args.chunk_frames)
    if args.workers is not None or args.chunk_frames is not None:
        raise ConfigError("--workers and --chunk-frames need --ray")
    failed, done = [], []
    for source in inputs:
        try:
            result = export_one(source, opts)
        except Interrupted:
            raise  # cli.main prints it (how to resume) and exits 130; the next inputs wait for that re-run
        except RtkpError as exc:
            failed.append(source)
            print(f"rtkp export: error: {exc}", file=sys.stderr)
            continue
        done.append(result)
        if result.get("skipped"):
            print(f"{source}: skipped, {result['reason']}")
            continue
        extra = f", {result['skipped_frames']} undecodable packet(s) skipped" if result["skipped_frames"] else ""
        if result["missing_frames"]:
            extra += f", {result['missing_frames']} frame(s) listed in the file could not be read (truncated?)"
        if len(result["segments"]) > 1:
            extra += f", resumed at frame {result['segments'][-1]['start']}"
        print(f"{source}: {result['frames']} frames in {result['seconds']:.1f} s ({result['fps']:.1f} fps){extra}")
        for err in result["skipped_errors"][:5]:
            print(f"  skipped: {err}")
    total = sum(r.get("frames", 0) for r in done)
    secs = sum(r.get("seconds", 0) for r in done)
    print(f"exported {len(done)} input(s), {total} frames in {secs:.1f} s; {len(failed)} failed")
    if failed:
        raise ExportFailed(f"{len(failed)} of {len(inputs)} input(s) failed: {', '.join(failed)}")
    return 0


def cmd_target(args) -> int:
    from rtkp.demo.target import render_target, write_pdf, write_png

    out = Path(args.out)
    if out.suffix.lower() not in (".pdf", ".png"):
        raise ConfigError(f"--out must end in .pdf or .png, got {out.name!r}")
    if args.px_per_mm <= 0:
        raise ConfigError(f"--px-per-mm must be positive, got {args.px_per_mm}")
    target = render_target(args.px_per_mm)
    try:
        (write_pdf if out.suffix.lower() == ".pdf" else write_png)(target, out)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    print(f"wrote {out}: A4, {len(target.names)} keypoints; print at 100 % (no 'fit to page')")
    return 0


def cmd_synth(args) -> int:
    from rtkp.demo.synth import write_coco_set
    from rtkp.demo.video import render_video

    if args.images < 0 or args.videos < 0 or args.seconds <= 0:
        raise ConfigError("--images and --videos must be >= 0 and --seconds > 0")
    out = Path(args.out)
    levels = {"none": (0.0, 0.0)} if args.occlusion == "none" else None
    if args.images:
        path = write_coco_set(out, args.images, args.seed, levels, progress=not args.quiet)
        print(f"wrote {args.images} images and {path}")
    for v in range(args.videos):
        path = render_video(
            out / "videos" / f"gt_{args.seed}_{v:02d}.mp4",
            args.seconds,
            30.0,
            args.seed * 1000 + v,
            progress=not args.quiet,
        )
        print(f"wrote {path} and its ground truth {path.with_suffix('.gt.json').name}")
    return 0


def cmd_bench(args) -> int:
    from rtkp.backends import read_model_info
    from rtkp.cli.bench import format_table, run_bench
    from rtkp.config import load_config

    if args.seconds <= 0:
        raise ConfigError(f"--seconds must be positive, got {args.seconds}")
    cfg = load_config(args.config)
    read_model_info(args.model)
    source, _ = resolve_source(args.source)
    log = lambda msg: print(msg, file=sys.stderr)
    result = run_bench(args.model, source, args.backend, args.seconds, args.threads, cfg, log, args.precision)
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


SUBSCRIBE_NOTICE_S = 3.0  # `rtkp subscribe` says what it waits for after this long without a message


def _quiet_aware(sub, timeout_s: float | None, notice_s: float = SUBSCRIBE_NOTICE_S):
    """The subscriber's messages; after `notice_s` without one, says on stderr what it waits for (once per quiet
    spell); after `timeout_s` (None: never) without one, raises StreamTimeout."""
    import time

    from rtkp.wire.subscriber import StreamTimeout

    hint = "--server-key FILE", "--client-key FILE"
    quiet_since, told = time.monotonic(), False
    while True:
        now = time.monotonic()
        limits = [1.0] + ([] if told else [quiet_since + notice_s - now])
        limits += [quiet_since + timeout_s - now] if timeout_s else []
        msg = sub.receive(max(min(limits), 0.0))
        if msg is not None:
            quiet_since, told = time.monotonic(), False
            yield msg
            continue
        quiet = time.monotonic() - quiet_since
        if timeout_s and quiet >= timeout_s:
            raise StreamTimeout(f"no message for {quiet:.1f} s, stopping; {sub.waiting_for(*hint)}")
        if not told and quiet >= notice_s:
            print(f"rtkp subscribe: no message for {quiet:.1f} s; {sub.waiting_for(*hint)}", file=sys.stderr)
            told = True


def cmd_subscribe(args) -> int:
    import statistics

    from rtkp.wire.subscriber import StreamTimeout, Subscriber

    sub = Subscriber(args.endpoint, args.stream, args.latest_only, None, args.server_key, args.client_key)
    latencies, n, first_ns, last_ns, timed_out = [], 0, None, None, None
    try:
        for msg in _quiet_aware(sub, args.timeout or None):
            n += 1
            latencies.append(msg.latency_ms)
            first_ns, last_ns = first_ns or msg.receive_ns, msg.receive_ns
            if args.json:
                record = {
                    "stream": msg.stream,
                    "seq": msg.seq,
                    "frame": msg.frame,
                    "pts": msg.pts,
                    "latency_ms": round(msg.latency_ms, 3),
                    "keypoints": {k.name: [k.x, k.y, k.score, k.visible, k.state] for k in msg.keypoints},
                }
                print(json.dumps(record), flush=True)
            else:
                pts = " ".join(f"{k.name}=({k.x:.1f},{k.y:.1f}){'' if k.visible else '?'}" for k in msg.keypoints)
                print(f"#{msg.seq} frame {msg.frame} {msg.latency_ms:.1f} ms {pts}", flush=True)
            if args.count and n >= args.count:
                break
    except StreamTimeout as exc:
        timed_out = exc
    except KeyboardInterrupt:
        pass
    finally:
        sub.close()
    # the rate covers first to last message received: time spent waiting for the stream is not part of it
    secs = (last_ns - first_ns) / 1e9 if n > 1 else 0.0
    span = f" in {secs:.2f} s from first to last ({(n - 1) / secs:.1f}/s)" if secs > 0 else ""
    lat = f", latency p50 {statistics.median(latencies):.2f} ms" if latencies else ""
    unlabelled = f", unlabelled {sub.unlabelled}" if sub.unlabelled else ""
    print(
        f"received {n} messages{span}{lat}, gaps {sub.gaps}, skipped {sub.skipped}{unlabelled}",
        file=sys.stderr,
    )
    if timed_out is not None and n == 0:
        raise timed_out  # nothing came at all: an error (cli.main prints it and exits with its code)
    if timed_out is not None:
        print(f"rtkp subscribe: {timed_out}", file=sys.stderr)
    return 0


def cmd_keys(args) -> int:
    from rtkp.wire.subscriber import write_keys

    public, secret = write_keys(args.out, args.name)
    print(f"public key (give to peers): {public}\nsecret key (keep private):  {secret}")
    return 0


def cmd_doctor(args) -> int:
    from rtkp.backends import doctor
    from rtkp.errors import EngineError

    statuses = doctor()
    for s in statuses:
        print(f"{s.name:18} {'ok' if s.available else 'no':3} {s.detail}")
    if not any(s.available for s in statuses):
        raise EngineError("no inference backend works here: pip install onnxruntime (see the list above)")
    return 0


def cmd_keypoints(args) -> int:
    from rtkp.cli.keypoints import cmd_keypoints as run

    return run(args)


COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "build-engine": cmd_build_engine,
    "run": cmd_run,
    "export": cmd_export,
    "target": cmd_target,
    "synth": cmd_synth,
    "bench": cmd_bench,
    "subscribe": cmd_subscribe,
    "keys": cmd_keys,
    "keypoints": cmd_keypoints,
    "doctor": cmd_doctor,
}
