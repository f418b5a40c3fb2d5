"""`rtkp keypoints add|remove|rename|list|save`: change the keypoints of a running tracker or of a model folder.

With --control ENDPOINT it is a thin client of `rtkp run --control ENDPOINT` (rtkp.control.remote: pyzmq and msgpack,
no torch, no numpy), answered as soon as the running model has done it. With --model DIR it works on a model folder
and writes the result as a new one (--out); only `add --data` runs the model (to read the shots' features).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rtkp.cli.paths import endpoint, input_file, input_folder, output_folder
from rtkp.errors import ConfigError, DataError, ModelError


def cmd_keypoints(args) -> int:
    if bool(args.control) == bool(getattr(args, "model", None)):
        raise ConfigError("give either --control ENDPOINT (a running `rtkp run --control`) or --model DIR")
    if args.control:
        return _live(args)
    return _offline(args)


# --- live: a request to a running `rtkp run --control` -------------------------------------------------------------


def _samples(args) -> list[dict]:
    """--image FILE / --seq N, each with an --xy X,Y in the same order."""
    from rtkp.control.remote import sample_from_file

    if args.image and args.seq:
        raise ConfigError("give the shots as --image FILE or as --seq N, not both (the protocol mixes them)")
    sources = args.image or args.seq
    if not sources:
        raise ConfigError("add NAME needs at least one shot: --image FILE --xy X,Y (or --seq N --xy X,Y)")
    if len(args.xy) != len(sources):
        raise ConfigError(f"one --xy X,Y per shot: {len(sources)} shot(s), {len(args.xy)} --xy")
    if args.image:
        return [sample_from_file(path, x, y) for path, (x, y) in zip(args.image, args.xy)]
    return [{"seq": seq, "x": x, "y": y} for seq, (x, y) in zip(args.seq, args.xy)]


def _request(args) -> tuple[str, dict]:
    if args.action == "add":
        return "add", {"name": args.name, "samples": _samples(args), "extend": args.extend}
    if args.action == "remove":
        return "remove", {"name": args.name, "shot": args.shot}
    if args.action == "rename":
        return "rename", {"name": args.name, "to": args.to}
    if args.action == "save":
        return "save", {"out": args.out, "overwrite": args.overwrite}
    return "list", {}


def _live(args) -> int:
    from rtkp.control.remote import ControlClient
    from rtkp.wire import curve

    if getattr(args, "data", None) or (args.action != "save" and getattr(args, "out", None)):
        raise ConfigError("--data and --out are for a model folder (--model); a running tracker saves with `save`")
    endpoint(args.control, "--control")
    if args.server_key:
        curve.load_key(args.server_key, secret=False, flag="--server-key")
    if args.client_key:
        curve.load_key(args.client_key, secret=True, flag="--client-key")
    op, fields = _request(args)
    with ControlClient(args.control, args.timeout, args.server_key, args.client_key) as client:
        reply = client.call(op, **fields)
    _print(args, reply)
    return 0


def _print(args, reply: dict) -> None:
    if args.json:
        print(json.dumps({k: v for k, v in reply.items() if k not in ("v", "id")}))
        return
    if args.action == "list":
        for k in reply["keypoints"]:
            added = f"  added, {k['shots']} shot(s)" if k.get("added") else ""
            margin = f"  margin {k['margin']:.3f}" if "margin" in k else ""
            print(f"{k['index']:3d} {k['name']}{margin}{added}")
        print(f"{len(reply['keypoints'])} of at most {reply.get('max_keypoints', '?')} keypoints, bank {reply['bank']}")
        return
    if args.action == "add":
        print(
            f"{reply['name']}: keypoint {reply['index']}, {reply['shots']} shot(s), margin {reply['margin']:.3f} "
            f"(own evidence {reply['visible_evidence']:.3f}, strongest look-alike {reply['lookalike_evidence']:.3f})"
        )
        rings = (reply.get("placement") or {}).get("rings") or []
        if rings:
            at = ", ".join(f"{r['distance_px']:.0f} ± {r['tolerance_px']:.0f} px from {r['anchor']}" for r in rings)
            print(f"  kept at {at} (model-input px, scaled with the animal)")
        side = (reply.get("placement") or {}).get("side")
        if side:
            way = "right" if side["sign"] > 0 else "left"
            print(f"  and to the {way} of the line {side['from']} → {side['to']} (as seen in the image)")
        if reply.get("warning"):
            print(f"rtkp keypoints: warning: {reply['warning']}", file=sys.stderr)
    elif args.action == "save":
        print(f"saved {len(reply['keypoints'])} keypoints to {reply['path']}")
        return
    print("keypoints now: " + ", ".join(reply["keypoints"]))


# --- offline: a model folder in, a new model folder out -------------------------------------------------------------


def _offline(args) -> int:
    from rtkp.backends import read_model_info
    from rtkp.teach.keypoint_set import KeypointSet
    from rtkp.teach.saved import check_out, read_taught, save_keypoint_set

    if args.action == "save":
        raise ConfigError("save is for a running tracker (--control); with --model, add/remove/rename take --out")
    input_folder(args.model, "--model", ModelError, must_exist=False)  # a missing one: read_model_info says more
    if args.action != "list" and args.out:
        output_folder(args.out, "--out")
        check_out(args.out, args.model, args.overwrite)  # before `add --data` runs the model
    if getattr(args, "split", None):
        input_file(args.split, "--split", DataError)
    if getattr(args, "images", None):
        input_folder(args.images, "--images", DataError)
    info = read_model_info(args.model)
    if not info.is_coke:
        raise ConfigError(f"{args.model}: a heatmap model has no prototypes: its keypoints cannot change")
    kset = KeypointSet.from_model(info.manifest, info.prototypes, info.clutter, read_taught(info.path, info.manifest))
    if args.action == "list":
        rows = kset.describe()
        _print(args, {"keypoints": rows, "max_keypoints": kset.k_max, "bank": 0})
        return 0
    if not args.out:
        raise ConfigError(f"{args.action} --model DIR needs --out NEW_DIR (the model folder to write)")
    note: dict = {}
    if args.action == "add":
        reply, note = _offline_add(args, info, kset)
    elif args.action == "remove":
        if args.shot:
            raise ConfigError("--shot is for a running tracker (--control)")
        kset.remove(args.name)
        reply = {"keypoints": kset.names}
    else:
        kset.rename(args.name, args.to)
        reply = {"keypoints": kset.names}
    path = save_keypoint_set(info.path, info.manifest, kset, args.out, args.overwrite, note)
    _print(args, reply)
    print(f"model written to {path}")
    return 0


def _offline_add(args, info, kset) -> tuple[dict, dict]:
    """The first --shots labelled training frames with NAME (--spread: evenly spread over them, e.g. a video's
    consecutive frames), taught through the model (a backend's features)."""
    from rtkp.backends import open_backend
    from rtkp.data.load import load_split
    from rtkp.geometry import Letterbox
    from rtkp.teach.shots import ShotReader, teach_keypoint

    if args.image or args.seq or args.xy:
        raise ConfigError("--image/--seq/--xy are for a running tracker (--control); with --model give --data")
    if not args.data:
        raise ConfigError("add NAME --model DIR needs --data PATH (labelled frames that have NAME) and --out")
    if args.shots < 1:
        raise ConfigError(f"--shots must be a positive integer, got {args.shots}")
    kset.check_new(args.name)
    data = load_split(args.data, args.split, "train", args.images)
    if args.name not in data.keypoint_names:
        raise DataError(f"{args.data}: has no keypoint {args.name!r} (it has {', '.join(data.keypoint_names)})")
    k = data.keypoint_names.index(args.name)
    pool = [s for s in data.samples if s.visible[k]]
    if args.spread and len(pool) > args.shots:
        import numpy as np

        picked = [pool[int(i)] for i in np.linspace(0, len(pool) - 1, args.shots).round()]
    else:
        picked = pool[: args.shots]
    if not picked:
        raise DataError(f"{args.data}: no training frame has {args.name!r} labelled")
    if len(picked) < args.shots:
        print(f"rtkp keypoints: note: only {len(picked)} frame(s) have {args.name!r} labelled", file=sys.stderr)
    images, points = [], []
    for s in picked:
        image = s.load_image()
        box = Letterbox.fit((image.shape[1], image.shape[0]), info.input_size)
        images.append(box.apply(image))
        points.append(box.to_model(s.keypoints[k]))
    backend = open_backend(args.model, args.backend, threads=args.threads, precision=args.precision)
    try:
        reader = ShotReader.for_model(backend, info.manifest)
        index, lesson = teach_keypoint(kset, reader, args.name, images, points, "data")
    finally:
        backend.close()
    reply = {
        "name": args.name,
        "index": index,
        "shots": len(picked),
        "margin": lesson.margin,
        "visible_evidence": lesson.visible,
        "lookalike_evidence": lesson.lookalike,
        "placement": lesson.placement(),
        "warning": lesson.warning,
        "keypoints": kset.names,
    }
    note = {
        "added_from_data": {
            "name": args.name,
            "data": str(Path(args.data).resolve()),
            "split": str(Path(args.split).resolve()) if args.split else None,
            "frames": [s.name for s in picked],
            "backend": backend.name,
        }
    }
    return reply, note
