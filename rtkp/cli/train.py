"""`rtkp train` and `rtkp eval`: fit a model to labelled frames, and measure one on held-out frames.

Heavy packages (torch, the data readers) are imported inside each command, so that `rtkp --help` stays fast.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from rtkp.cli.paths import input_file, input_folder, output_file, output_folder, write_text
from rtkp.errors import ConfigError, DataError, Interrupted, ModelError


def check_inputs(args) -> None:
    """The path arguments `train` and `eval` share (--config, --split, --images): the right kind of thing, before
    anything is loaded. --data may be a file or a folder: its reader says what it expected."""
    if getattr(args, "config", None):
        input_file(args.config, "--config")
    if args.split:
        input_file(args.split, "--split", DataError)
    if getattr(args, "images", None):
        input_folder(args.images, "--images", DataError)


def cmd_train(args) -> int:
    output_folder(args.out, "--out")  # created (with its parents) when training writes its first checkpoint
    check_inputs(args)
    from rtkp.config import load_config
    from rtkp.data.load import load_split
    from rtkp.train.loop import train
    from rtkp.train.recipe import few_frames_warning

    overrides = list(args.set) + ([f"model.head={args.head}"] if args.head else [])
    cfg = load_config(args.config, overrides)
    images = getattr(args, "images", None)  # a COCO images folder (`--images`), when the parser offers one
    keypoints = keypoint_list(getattr(args, "keypoints", None))
    data = load_split(args.data, args.split, "train", images, predictions=args.predictions)
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
    resumed = []

    def on_resume(step: int) -> None:
        resumed.append(step)
        provenance["resumed_from_step"] = step  # the manifest's `seconds` and `command` are this run's only
        print(f"resuming from step {step} of {cfg.train.steps} (checkpoint in {out / 'checkpoint'})", flush=True)

    try:
        manifest = train(
            data,
            cfg,
            out,
            not args.no_resume,
            not args.quiet,
            provenance,
            args.stop_after,
            on_resume,
            keep_checkpoint=args.keep_checkpoint,
        )
    except Interrupted as exc:
        if not exc.summary.get("step"):
            raise
        # one line (rtkp.cli.parsers.main prints it, exit 130): what is saved and the command that goes on from there
        stop_after = args.stop_after
        if stop_after is not None:  # the resumed run ends where this one was asked to
            stop_after = (resumed[0] if resumed else 0) + stop_after - exc.summary["step"] or stop_after
        raise Interrupted(f"{exc}; resume with: {resume_command(args, stop_after)}", exc.summary) from None
    if manifest is None:
        # --stop-after counts the steps of this run: from the step it resumed from, when it resumed
        start = resumed[0] if resumed else 0
        done = (
            f"{args.stop_after} more step(s), at step {start + args.stop_after} of {cfg.train.steps} (resumed from "
            f"step {start})"
            if resumed
            else f"{args.stop_after} step(s), at step {args.stop_after} of {cfg.train.steps}"
        )
        print(f"stopped after {done}; checkpoint in {out / 'checkpoint'} (run again to resume)")
        return 0
    if args.split and not args.no_eval:
        from rtkp.train.evaluate import evaluate, format_report, record_in_manifest

        test = load_split(args.data, args.split, "test", images, predictions=args.predictions)
        if keypoints:
            test = test.select_keypoints(keypoints)
        # through a backend like `rtkp eval` (auto: what `rtkp run` would pick here); the report names which
        if manifest.multi_instance:
            from rtkp.eval.model import evaluate_model_instances, format_instances_report

            report = evaluate_model_instances(out, test, progress=not args.quiet)
            record_in_manifest(out, report, args.data, args.split)
            print(format_instances_report(report))
        else:
            report = evaluate(out, test, occlusion=True, progress=not args.quiet, backend="auto")
            record_in_manifest(out, report, args.data, args.split)
            print(format_report(report))
    print(f"model written to {out}")
    return 0


def resume_command(args, stop_after: int | None) -> str:
    """The `rtkp train` command that resumes this run (its arguments, without --no-resume, with --stop-after
    `stop_after`), shell-quoted."""
    words = ["rtkp", "train", "--data", args.data, "--out", args.out]
    given = {"config": args.config, "split": args.split, "head": args.head, "stop_after": stop_after}
    given.update(images=getattr(args, "images", None), keypoints=getattr(args, "keypoints", None))
    for flag, value in given.items():
        if value is not None:
            words += ["--" + flag.replace("_", "-"), str(value)]
    for item in args.set:
        words += ["--set", item]
    switches = ("no_eval", "quiet", "predictions", "keep_checkpoint")
    words += [f"--{flag.replace('_', '-')}" for flag in switches if getattr(args, flag, False)]
    return " ".join(shlex.quote(w) for w in words)


def keypoint_list(text: str | None) -> list[str] | None:
    """--keypoints A,B,C -> ["A", "B", "C"] (None when not given)."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"--keypoints must name at least one keypoint, got {text!r}")
    return names


def cmd_eval(args) -> int:
    input_folder(args.model, "--model", ModelError, must_exist=False)  # a missing one: read_manifest says more
    check_inputs(args)
    if args.json:
        output_file(args.json, "--json")
    if args.plot:
        output_file(args.plot, "--plot", plot_suffixes())

    from rtkp.data.load import load_split
    from rtkp.train.evaluate import evaluate, format_report, plot_report

    photos = None
    if args.occluders:
        from rtkp.data.occlude import load_photos

        input_folder(args.occluders, "--occluders", DataError)
        if not args.occlusion:
            raise ConfigError("--occluders needs --occlusion (the occluders are only pasted for the occlusion levels)")
        photos = load_photos(args.occluders)
    from rtkp.instances.stage import check_max_instances
    from rtkp.manifest import read_manifest

    manifest = read_manifest(args.model)
    check_max_instances(manifest, args.max_instances)
    several = manifest.multi_instance  # a single-instance model is evaluated on frames holding one animal
    data = load_split(args.data, args.split, "test", args.images, predictions=args.predictions, several=several)
    if args.keypoints:
        data = data.select_keypoints(keypoint_list(args.keypoints))
    if several:
        if args.occlusion:
            raise ConfigError("--occlusion is for single-instance models; a multi-instance model is scored unoccluded")
        from rtkp.eval.model import evaluate_model_instances, format_instances_report

        report = evaluate_model_instances(
            Path(args.model), data, args.backend, args.precision, args.max_instances, progress=not args.quiet
        )
        print(format_instances_report(report))
        if args.json:
            write_text(args.json, "--json", json.dumps(report, indent=1, default=str) + "\n")
        return 0
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
        write_text(args.json, "--json", json.dumps(report, indent=1) + "\n")
    if args.plot:
        plot_report(report, Path(args.plot))
    return 0


def plot_suffixes() -> tuple[str, ...]:
    """The file suffixes `--plot` can write (matplotlib's formats; MissingDependencyError without matplotlib)."""
    from rtkp.errors import require

    require("matplotlib", "train")
    from matplotlib.backend_bases import FigureCanvasBase

    return tuple(f".{s}" for s in sorted(FigureCanvasBase.get_supported_filetypes()))
