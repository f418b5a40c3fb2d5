"""`rtkp` command line: parse -> config -> call. The parsers are here; the commands are in one module per family
(the table: rtkp/cli/commands.py), and `main` is the one place where an error becomes an exit code. Heavy packages
are imported by the commands, so `rtkp --help` stays light."""

from __future__ import annotations

import argparse
import sys

from rtkp import __version__
from rtkp.cli.defaults import BACKENDS, DEFAULT_MODEL, ENGINES, cache_dir, resolve_source
from rtkp.errors import RtkpError

__all__ = ["BACKENDS", "DEFAULT_MODEL", "ENGINES", "build_parser", "cache_dir", "main", "resolve_source"]


# The default model is the demo target's: name it, so nobody runs their mouse video through it unknowingly.
MODEL_HELP = (
    f"model folder (default: {DEFAULT_MODEL.name}, the printable demo target's model from `rtkp target`; "
    "e.g. engines/dlc_mouse_coke for the DeepLabCut open-field mouse)"
)
IMAGES_HELP = "folder of a COCO file's images (default: <json folder>/images, then the JSON's folder)"
PRECISIONS = ("fp32", "fp16")  # rtkp.backends.PRECISIONS (not imported: `rtkp --help` stays free of numpy)

DATA_HELP = "labelled frames: DeepLabCut project (single- or multi-animal), SLEAP .slp file or COCO-keypoints JSON"
PREDICTIONS_HELP = "SLEAP .slp: also read predicted instances (default: user-labelled ones only)"


def _add_max_instances(p) -> None:
    p.add_argument(
        "--max-instances",
        type=int,
        metavar="N",
        help="animals reported per frame, for models trained on several (default: the most a training frame held)",
    )


def _add_whole_frame(p) -> None:
    p.add_argument(
        "--whole-frame",
        action="store_true",
        help="run the graph on the whole frame every frame (default on the CPU, for models with a crop_size: only "
        "around the animal, found again in the whole frame when lost; docs/BENCHMARKS.md)",
    )


def _add_precision(p) -> None:
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="graph precision (default: the backend's own, fp16 on GPU backends and fp32 on the CPU; "
        "fp16 on the CPU runs the FP16 graph in ONNX Runtime)",
    )


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (and exit code 2) instead of the usage block."""

    def error(self, message: str):
        self.exit(2, f"rtkp: error: {message} (see `{self.prog} --help`)\n")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a keypoint model on labelled frames")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--predictions", action="store_true", help=PREDICTIONS_HELP)
    p.add_argument("--out", required=True, help="output model folder")
    p.add_argument("--config", help="YAML profile (see configs/); defaults are built in")
    p.add_argument("--split", help="JSON with train/test lists; training uses `train` only")
    p.add_argument("--images", metavar="DIR", help=IMAGES_HELP)
    p.add_argument("--head", choices=["coke", "heatmap"], help="override model.head")
    p.add_argument(
        "--keypoints", metavar="A,B,C", help="train on these of the data's keypoints only (default: all of them)"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--no-resume", action="store_true", help="ignore a checkpoint in --out and start over")
    p.add_argument("--no-eval", action="store_true", help="skip evaluating on the split's test part afterwards")
    p.add_argument(
        "--stop-after", type=int, metavar="N", help="train N steps, save a checkpoint and exit (resume later)"
    )
    p.add_argument(
        "--keep-checkpoint",
        action="store_true",
        help="keep the last checkpoint in --out/checkpoint after the model is written, so that the run can be "
        "extended later (run again with a larger --set train.steps=N)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a model on labelled frames (RMSE, PCK, occlusion levels)")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help=MODEL_HELP)
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--predictions", action="store_true", help=PREDICTIONS_HELP)
    p.add_argument("--split", help="JSON with train/test lists; evaluation uses `test` only")
    p.add_argument("--images", metavar="DIR", help=IMAGES_HELP)
    p.add_argument(
        "--backend", default="auto", choices=BACKENDS, help="inference backend (default auto, as `rtkp run` picks)"
    )
    _add_precision(p)
    _add_max_instances(p)
    p.add_argument(
        "--keypoints",
        metavar="A,B,C",
        help="evaluate these keypoints only (default: all the model's; the data may have more, matched by name)",
    )
    p.add_argument("--occlusion", action="store_true", help="also evaluate under occlusion levels L0..L3")
    p.add_argument(
        "--occluders",
        metavar="DIR",
        help="with --occlusion: cut the occluders from the .jpg/.png photos under DIR (default: synthetic textures)",
    )
    p.add_argument("--json", help="write the figures to this JSON file")
    p.add_argument("--plot", help="write PCK plots to this image file (.png/.pdf)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _input_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x480, got {text!r}") from None
    if w <= 0 or h <= 0 or w % 32 or h % 32:
        raise argparse.ArgumentTypeError(f"width and height must be positive multiples of 32, got {text!r}")
    return w, h


def _add_build_engine(sub) -> None:
    p = sub.add_parser("build-engine", help="export ONNX graphs and build a TensorRT engine for a model")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help=MODEL_HELP)
    p.add_argument("--backend", choices=["onnxruntime", "tensorrt"], default="onnxruntime")
    p.add_argument(
        "--generic", action="store_true", help="also the graph that keypoints taught from shots run (docs/FEWSHOT.md)"
    )
    p.add_argument("--fp16", action="store_true", help="also export the FP16 graph / build an FP16 engine")
    p.add_argument("--input-size", type=_input_size, metavar="WxH", help="model input size (default: the manifest's)")
    p.add_argument("--debug", action="store_true", help="also export a graph with the similarity maps as an output")


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="track keypoints live from a camera, file, stream, folder or lavfi source")
    p.add_argument(
        "--source",
        required=True,
        help="camera0, /dev/videoN, a video file, rtsp://..., a folder, a glob, "
        "or lavfi:GRAPH (e.g. lavfi:testsrc2=size=640x480:rate=30)",
    )
    p.add_argument("--model", default=str(DEFAULT_MODEL), help=MODEL_HELP)
    p.add_argument("--backend", default="auto", choices=BACKENDS, help="inference backend (default auto)")
    _add_precision(p)
    _add_max_instances(p)
    _add_whole_frame(p)
    p.add_argument(
        "--publish",
        help="ZeroMQ endpoint to publish on (default from the config: tcp://127.0.0.1:5555; 'none' to disable)",
    )
    p.add_argument("--headless", action="store_true", help="no window")
    p.add_argument("--record", metavar="FILE.mp4", help="write the annotated video here")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    p.add_argument("--realtime", action="store_true", help="play files at their frame rate with the live policy")
    p.add_argument("--smooth", choices=["none", "one_euro", "kalman"], help="override smoothing.filter")
    p.add_argument("--threads", type=int, default=0, help="inference threads (default: all cores)")
    p.add_argument("--config", help="YAML profile (smoothing and run sections are used)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--json", help="write the run summary (counters, per-stage latency percentiles) here")
    p.add_argument("--curve-key", metavar="FILE", help="CURVE: the publisher's .key_secret file (from `rtkp keys`)")
    p.add_argument("--curve-clients", metavar="DIR", help="CURVE: folder of allowed subscribers' .key files")
    p.add_argument(
        "--control",
        metavar="ENDPOINT",
        help="open a control socket here (e.g. tcp://127.0.0.1:5556; loopback unless you give another address) to "
        "add, remove, rename, list and save keypoints while it runs (`rtkp keypoints`, docs/PROTOCOL.md); CURVE "
        "like the stream when --curve-key is given",
    )


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="annotate videos and image folders offline (COCO, JSON lines, DLC CSV, MP4)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video files, image folders or globs")
    p.add_argument(
        "--out",
        required=True,
        help="output folder (created); per input <name>.coco.json, .jsonl, .csv (.h5, .slp, .nwb), .annotated.mp4, "
        ".done.json; <name>: the file name without extension (inputs that share one: their paths, d1/clip.mp4 -> "
        "d1__clip)",
    )
    p.add_argument("--model", default=str(DEFAULT_MODEL), help=MODEL_HELP)
    p.add_argument("--backend", default="auto", choices=BACKENDS, help="inference backend (default auto)")
    _add_precision(p)
    _add_max_instances(p)
    _add_whole_frame(p)
    p.add_argument(
        "--format",
        default="coco,jsonl,csv",
        help="comma-separated: coco, jsonl, csv (the default: these three), h5 (DeepLabCut's table), slp (SLEAP), "
        "nwb (NWB/ndx-pose); h5, slp and nwb need pip install 'rtkp[formats]'",
    )
    p.add_argument("--video", action="store_true", help="also write an annotated MP4 per input")
    p.add_argument(
        "--smooth",
        choices=["none", "causal", "offline"],
        default="none",
        help="none: the tracker's keypoints as they are (default); causal: the live filter of `rtkp run`; offline: "
        "a Kalman filter and a backward (RTS) pass over the whole track, which uses future frames",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="redo inputs whose outputs are complete, and replace outputs made with other settings (without it, a "
        "re-run with other formats, smoothing, --video, model or input is refused)",
    )
    p.add_argument("--config", help="YAML profile (smoothing and run sections are used)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--ray",
        metavar="auto|ADDRESS",
        help="run on a Ray cluster (pip install -e '.[cluster]'): auto (the one `ray start` runs on this machine, "
        "else a new local one) or the head's address; inputs, model and --out must be paths every node sees",
    )
    p.add_argument(
        "--workers", type=int, metavar="N", help="with --ray: model workers (default: one per GPU, else one per CPU)"
    )
    p.add_argument(
        "--chunk-frames",
        type=int,
        metavar="N",
        help="with --ray: split videos at keyframes into chunks of about N frames (default 3000)",
    )


def _add_target(sub) -> None:
    p = sub.add_parser("target", help="write the printable demo target (A4) as PDF or PNG")
    p.add_argument("--out", required=True, help="FILE.pdf or FILE.png")
    p.add_argument("--px-per-mm", type=float, default=8.0, help="resolution (default 8 px/mm, about 200 dpi)")


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="render synthetic training images and ground-truth videos of the target")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--images", type=int, default=1500, help="number of images (COCO-keypoints; default 1500)")
    p.add_argument("--videos", type=int, default=0, help="number of ground-truth videos")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each video")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--targets",
        type=int,
        default=1,
        metavar="N",
        help="targets per image and video (default 1); several: one annotation each, with its track_id",
    )
    p.add_argument(
        "--occlusion",
        choices=["train", "none"],
        default="train",
        help="train: half the images get occluders (10-70 %%); none: no occluders (eval adds its own)",
    )
    p.add_argument("--quiet", action="store_true")


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="measure decode, model-only, pipeline (lossless, live) and a naive loop")
    p.add_argument("--source", default="demo", help="any --source of `rtkp run` (default: the demo video)")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help=MODEL_HELP)
    p.add_argument(
        "--backend", default="auto", choices=BACKENDS, help="auto (model-only on every available backend) or one name"
    )
    _add_precision(p)
    _add_max_instances(p)
    _add_whole_frame(p)
    p.add_argument("--seconds", type=float, default=10.0, help="length of each measurement (default 10)")
    p.add_argument("--threads", type=int, default=0, help="inference threads (default: all cores)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--config", help="YAML profile (smoothing and run sections are used)")


def _add_subscribe(sub) -> None:
    p = sub.add_parser("subscribe", help="print the keypoints an rtkp publisher sends")
    p.add_argument("--endpoint", default="tcp://127.0.0.1:5555")
    p.add_argument("--stream", help="only this stream (default: all)")
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of text")
    p.add_argument("--latest-only", action="store_true", help="only ever the newest message")
    p.add_argument("--count", type=int, metavar="N", help="stop after N messages")
    p.add_argument("--timeout", type=float, default=0, metavar="S", help="stop after S seconds without a message")
    p.add_argument("--server-key", metavar="FILE", help="CURVE: the publisher's public .key file")
    p.add_argument("--client-key", metavar="FILE", help="CURVE: this subscriber's .key_secret file")


def _add_keys(sub) -> None:
    p = sub.add_parser("keys", help="write a CURVE key pair for an encrypted, authenticated stream")
    p.add_argument("--out", required=True, help="folder to write NAME.key and NAME.key_secret into")
    p.add_argument("--name", default="rtkp", help="file name stem (default rtkp)")


def _xy(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,Y in pixels such as 212.5,301, got {text!r}") from None
    return x, y


def _add_keypoints(sub) -> None:
    p = sub.add_parser(
        "keypoints",
        help="add, remove, rename, list or save keypoints of a running `rtkp run --control` or of a model folder",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser, required=True)
    add = actions.add_parser("add", help="add keypoint NAME from shots: clicked points, or labelled frames (--data)")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--image", action="append", default=[], metavar="FILE", help="a shot's image (repeatable)")
    add.add_argument("--seq", action="append", type=int, default=[], metavar="N", help="a recent frame, by its seq")
    add.add_argument("--xy", action="append", type=_xy, default=[], metavar="X,Y", help="the point, one per shot")
    add.add_argument("--extend", action="store_true", help="give the added keypoint NAME more shots")
    add.add_argument("--data", help="with --model: labelled frames that have NAME (DeepLabCut, SLEAP .slp or COCO)")
    add.add_argument("--split", help="with --data: JSON with train/test lists; shots come from `train` only")
    add.add_argument("--images", metavar="DIR", help=IMAGES_HELP)
    add.add_argument("--shots", type=int, default=5, metavar="N", help="with --data: the first N frames (default 5)")
    add.add_argument(
        "--spread", action="store_true", help="with --data: N frames spread evenly over the training frames"
    )
    add.add_argument("--backend", default="auto", choices=BACKENDS, help="with --model: inference backend")
    add.add_argument("--threads", type=int, default=0, help="with --model: inference threads (default: all cores)")
    _add_precision(add)
    remove = actions.add_parser("remove", help="remove keypoint NAME (or, --shot, only its latest shot)")
    remove.add_argument("name", metavar="NAME")
    remove.add_argument("--shot", action="store_true", help="remove only the latest shot of an added keypoint")
    rename = actions.add_parser("rename", help="rename keypoint NAME to NEW")
    rename.add_argument("name", metavar="NAME")
    rename.add_argument("to", metavar="NEW")
    listing = actions.add_parser("list", help="list the keypoints: added ones with their shots, margins")
    save = actions.add_parser("save", help="save the running tracker's keypoints as a model folder")
    save.add_argument("out", metavar="OUT_DIR", help="a new folder, on the machine that runs `rtkp run`")
    for q in (add, remove, rename, listing, save):
        q.add_argument("--control", metavar="ENDPOINT", help="a running `rtkp run --control ENDPOINT`")
        q.add_argument("--timeout", type=float, default=10.0, metavar="S", help="wait this long for the reply")
        q.add_argument("--server-key", metavar="FILE", help="CURVE: the run's public .key file")
        q.add_argument("--client-key", metavar="FILE", help="CURVE: this client's .key_secret file")
        q.add_argument("--json", action="store_true", help="print the reply as one JSON object")
        if q is not save:
            q.add_argument("--model", metavar="DIR", help="a model folder instead of a running tracker (offline)")
        if q not in (save, listing):
            q.add_argument("--out", metavar="NEW_DIR", help="with --model: write the changed model folder here")
        q.add_argument("--overwrite", action="store_true", help="replace an existing model folder at the output")


def _add_doctor(sub) -> None:
    sub.add_parser("doctor", help="list inference backends, whether each works here, and why not")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rtkp", description="rtkp: real-time keypoint tracking with CoKe features.")
    parser.add_argument("--version", action="version", version=f"rtkp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_train(sub)
    _add_eval(sub)
    _add_build_engine(sub)
    _add_run(sub)
    _add_export(sub)
    _add_target(sub)
    _add_synth(sub)
    _add_bench(sub)
    _add_subscribe(sub)
    _add_keys(sub)
    _add_keypoints(sub)
    _add_doctor(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        from rtkp.cli.commands import COMMANDS

        return COMMANDS[args.command](args)
    except RtkpError as exc:
        print(f"rtkp {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"rtkp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
