"""`rtkp target` and `rtkp synth`: the printable demo target, and synthetic labelled images and videos of it."""

from __future__ import annotations

from rtkp.cli.paths import output_file, output_folder
from rtkp.errors import ConfigError

MAX_TARGETS = 8  # pages 1/sqrt(8) as tall already crowd a 640x480 image; more would mostly hide each other


def cmd_target(args) -> int:
    from rtkp.demo.target import render_target, write_pdf, write_png

    out = output_file(args.out, "--out", (".pdf", ".png"))
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
    if not 1 <= args.targets <= MAX_TARGETS:
        raise ConfigError(f"--targets must be 1 to {MAX_TARGETS} (pages share one 640x480 image), got {args.targets}")
    out = output_folder(args.out, "--out")  # made with its parents
    levels = {"none": (0.0, 0.0)} if args.occlusion == "none" else None
    if args.images:
        path = write_coco_set(out, args.images, args.seed, levels, progress=not args.quiet, targets=args.targets)
        each = f" with {args.targets} targets each" if args.targets > 1 else ""
        print(f"wrote {args.images} images{each} and {path}")
    for v in range(args.videos):
        path = render_video(
            out / "videos" / f"gt_{args.seed}_{v:02d}.mp4",
            args.seconds,
            30.0,
            args.seed * 1000 + v,
            progress=not args.quiet,
            targets=args.targets,
        )
        print(f"wrote {path} and its ground truth {path.with_suffix('.gt.json').name}")
    return 0
