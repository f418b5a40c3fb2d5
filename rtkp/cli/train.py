"""`rtkp train` and `rtkp eval`: fit a model to labelled frames, and measure one on held-out frames.

Heavy packages (torch, the data readers) are imported inside each command, so that `rtkp --help` stays fast.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from rtkp.errors import ConfigError


def cmd_train(args) -> int:
    from rtkp.config import load_config
    from rtkp.data.load import load_split
    from rtkp.train.loop import train
    from rtkp.train.recipe import few_frames_warning

    overrides = list(args.set) + ([f"model.head={args.head}"] if args.head else [])
    cfg = load_config(args.config, overrides)
    images = getattr(args, "images", None)  # a COCO images folder (`--images`), when the parser offers one
    keypoints = keypoint_list(getattr(args, "keypoints", None))
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


def keypoint_list(text: str | None) -> list[str] | None:
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
        data = data.select_keypoints(keypoint_list(args.keypoints))
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
