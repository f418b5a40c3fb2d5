"""`rtkp export`: annotate videos and image folders offline, here or on a Ray cluster.

Heavy packages are imported inside the command, so that `rtkp --help` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rtkp.errors import ConfigError, RtkpError


def cmd_export(args) -> int:
    """Export every input; a failed input is reported and the others still run (ExportFailed at the end, with the
    failures' exit code when they share one: 4 for sources that cannot be opened, as `rtkp run`). Interrupted
    (exit 130) keeps the input's partial outputs: its message says to run the same command again to resume.

    Every argument is checked before anything is written (--out is not even created): the formats, the inputs (each
    names a file, folder or matching glob), the model, the inputs' output names (rtkp.export.targets) and what --out
    already holds for them."""
    from rtkp.backends import read_model_info
    from rtkp.config import load_config
    from rtkp.errors import ExportFailed, Interrupted
    from rtkp.export.local import ExportOptions, check_inputs, check_out_dir, expand_inputs, export_one, parse_formats
    from rtkp.export.targets import plan_targets

    if args.ray:
        from rtkp.errors import require

        require("ray", "cluster")  # before anything else: the one line that says how to install it
    elif args.workers is not None or args.chunk_frames is not None:
        raise ConfigError("--workers and --chunk-frames need --ray")
    cfg = load_config(args.config, args.set)
    out = Path(args.out)
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
        max_instances=args.max_instances,
        whole_frame=args.whole_frame,
    )
    inputs = expand_inputs(args.inputs)
    check_inputs(inputs)
    info = read_model_info(args.model)
    from rtkp.instances.stage import check_max_instances

    check_max_instances(info.manifest, args.max_instances)  # before anything is written
    planned = plan_targets(inputs, opts, info.weights_sha256)
    check_out_dir(out)  # the first thing written
    if args.ray:
        from rtkp.export.ray import export_on_ray

        return export_on_ray(inputs, opts, args.ray, args.workers, args.chunk_frames)
    failed, done = [], []
    codes = set()
    for source, targets in zip(inputs, planned):
        try:
            result = export_one(source, opts, targets, info)
        except Interrupted:
            raise  # rtkp.cli.parsers.main prints it (how to resume) and exits 130; the next inputs wait for that re-run
        except RtkpError as exc:
            failed.append(source)
            codes.add(exc.exit_code)
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
        error = ExportFailed(f"{len(failed)} of {len(inputs)} input(s) failed: {', '.join(failed)}")
        if len(codes) == 1:
            error.exit_code = codes.pop()  # e.g. 4 when every failure is a source that cannot be opened
        raise error
    return 0
