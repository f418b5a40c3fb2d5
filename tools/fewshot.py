"""Leave keypoints out: how well a keypoint added from N labelled frames is tracked (docs/FEWSHOT.md).

For the left-out keypoints L (one, or several at once: `--leave-out wingL,eyeL,midlegL4`) of a dataset:
  1. train the recipe on the other keypoints       rtkp train --keypoints <others>        (WORK/base; resumable)
  2. add each L from the first N labelled training frames (--spread: N spread over them), for each N
                                                   rtkp keypoints add L --model … --data … --shots N
  3. evaluate each L on the test split, and the fully trained model's L for reference
                                                   rtkp eval --keypoints L (one animal per frame), or
                                                   rtkp eval of all keypoints (several: animals are matched on
                                                   all of them, and PCK is per keypoint of the found animals)
  4. with --pseudo M (one animal per frame): test-time adaptation measured offline: each N-shot keypoint also takes
     M more shots from its own most confident detections on the other training frames (their labels unused:
     unlabelled frames of the same recording, as a running tracker would see them), evaluated like the others
and write WORK/fewshot.json plus a Markdown table on stdout (PCK@0.1 of L with N shots, the fully trained model's,
their ratio against the 0.9 target; RMSE and the visible rate where the evaluation gives them). The trainings are the
costly part (~12 min each on two CPU cores at the mouse recipe's 2000 steps): `--steps` runs a reduced budget, and a
finished WORK/base is reused (`--base DIR`: one trained elsewhere).

  python tools/fewshot.py --data ../shared/data/dlc_openfield_mouse \
      --split ../shared/data/dlc_openfield_mouse/split.json --config configs/dlc_mouse.yaml \
      --leave-out tailbase --full engines/dlc_mouse_coke --work runs/fewshot/mouse_tailbase
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def rtkp(*args: str) -> None:
    """Run an rtkp command in this process; a failure stops the measurement with its message."""
    from rtkp.cli import main

    print("$ rtkp " + " ".join(args), file=sys.stderr, flush=True)
    rc = main(list(args))
    if rc != 0:
        sys.exit(f"fewshot: `rtkp {args[0]}` failed with exit code {rc}")


def evaluate(model: Path, data: str, split: str, keypoints: list[str], out: Path, backend: str) -> dict:
    """{keypoint: figures} of `keypoints` in `model` on the split's test part."""
    several = multi_instance(model)
    chosen = [] if several else ["--keypoints", ",".join(keypoints)]
    rtkp(
        "eval", "--model", str(model), "--data", data, "--split", split, *chosen,
        "--backend", backend, "--json", str(out), "--quiet",
    )  # fmt: skip
    report = json.loads(out.read_text())
    figures = {}
    for name in keypoints:
        k = report["per_keypoint"][name]
        if several:  # per keypoint of the matched animals: PCK only
            figures[name] = {"pck_0.1": k["pck"]["0.1"], "pck_0.05": k["pck"]["0.05"], "backend": backend}
            continue
        figures[name] = {
            "pck_0.1": k["pck"]["0.1"],
            "pck_0.05": k["pck"]["0.05"],
            "rmse_px": k["rmse_px"],
            "count": k["count"],
            "visible_rate": report["visible_rate"] if len(keypoints) == 1 else None,
            "backend": report["backend"],
        }
    return figures


def pseudo_shots(model: Path, out: Path, data: str, split: str, name: str, m: int, backend_name: str) -> dict:
    """Give the taught keypoint `name` of `model` M more shots: its M most confident detections (evidence above its
    margin) on the training frames it was not taught from, at the positions it reports; written to `out`. Returns
    {"pseudo": M, "errors_px": the pseudo-shots' distances to the labels (a diagnosis, not used)}."""
    import numpy as np

    from rtkp.backends import open_backend, read_model_info
    from rtkp.data.load import load_split
    from rtkp.geometry import Letterbox
    from rtkp.teach.keypoint_set import KeypointSet
    from rtkp.teach.saved import read_taught, save_keypoint_set
    from rtkp.teach.shots import ShotReader, teach_keypoint

    info = read_model_info(model)
    kset = KeypointSet.from_model(info.manifest, info.prototypes, info.clutter, read_taught(info.path, info.manifest))
    taught_from = set(info.manifest.extra["derived_from"]["added_from_data"]["frames"])
    data_set = load_split(data, split, "train")
    k = data_set.keypoint_names.index(name)
    frames = [s for s in data_set.samples if s.name not in taught_from]
    backend = open_backend(model, backend_name, threads=2)
    try:
        i = kset.index(name)
        candidates = []
        for s in frames:
            image = s.load_image()
            box = Letterbox.fit((image.shape[1], image.shape[0]), info.input_size)
            row = backend.infer(box.apply(image)[None])[0, i]
            candidates.append((float(row[2] - row[3] - kset.margins[i]), s, box, row[:2].copy()))
        chosen = sorted((c for c in candidates if c[0] > 0), key=lambda c: -c[0])[:m]
        images = [c[2].apply(c[1].load_image()) for c in chosen]
        points = np.array([c[3] for c in chosen], np.float32)
        errors = [
            round(float(np.linalg.norm(c[2].to_source(c[3][None])[0] - c[1].keypoints[k])), 1)
            for c in chosen
            if c[1].visible[k]
        ]
        if chosen:
            teach_keypoint(kset, ShotReader.for_model(backend, info.manifest), name, images, points, "data", True)
    finally:
        backend.close()
    save_keypoint_set(info.path, info.manifest, kset, out, True, {"pseudo_shots": {"name": name, "count": len(chosen)}})
    return {"pseudo": len(chosen), "errors_px": errors}


def multi_instance(model: Path) -> bool:
    return bool(json.loads((Path(model) / "manifest.json").read_text()).get("max_instances"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--config", required=True, help="the training recipe (YAML profile)")
    p.add_argument("--leave-out", required=True, metavar="NAMES", help="keypoint(s) to add from shots, comma-separated")
    p.add_argument("--spread", action="store_true", help="shots spread over the training frames, not the first N")
    p.add_argument("--base", metavar="DIR", help="a model already trained without them (default WORK/base)")
    p.add_argument("--full", required=True, metavar="DIR", help="the model trained on every keypoint (reference)")
    p.add_argument("--work", required=True, metavar="DIR", help="where the models and figures go")
    p.add_argument("--shots", default="1,3,5", help="comma-separated N (default 1,3,5)")
    p.add_argument("--steps", type=int, help="a reduced training budget (default: the recipe's train.steps)")
    p.add_argument("--threads", type=int, default=1, help="training threads (default 1, like the shipped models)")
    p.add_argument("--backend", default="onnxruntime", help="inference backend for shots and evaluation")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more training overrides")
    p.add_argument("--pseudo", type=int, default=0, metavar="M", help="also measure M pseudo-shots (step 4)")
    args = p.parse_args()

    from rtkp.data.load import load_dataset

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    names = load_dataset(args.data).keypoint_names
    left_out = args.leave_out.split(",")
    if args.pseudo and len(left_out) > 1:
        sys.exit("fewshot: --pseudo measures one left-out keypoint at a time")
    for name in left_out:
        if name not in names:
            sys.exit(f"fewshot: {args.data} has no keypoint {name!r} ({', '.join(names)})")
    others = [n for n in names if n not in left_out]
    base = Path(args.base) if args.base else work / "base"
    overrides = [f"train.threads={args.threads}"] + ([f"train.steps={args.steps}"] if args.steps else []) + args.set
    t0 = time.monotonic()
    if not (base / "manifest.json").is_file():
        train = ["train", "--data", args.data, "--split", args.split, "--config", args.config, "--out", str(base)]
        train += ["--keypoints", ",".join(others), "--quiet"]
        for o in overrides:
            train += ["--set", o]
        rtkp(*train)
    train_s = time.monotonic() - t0
    full = evaluate(Path(args.full), args.data, args.split, left_out, work / "eval_full.json", args.backend)
    figures = {
        "data": args.data,
        "left_out": left_out,
        "trained_on": others,
        "recipe": args.config,
        "overrides": overrides,
        "train_seconds": round(train_s, 1),
        "spread": args.spread,
        "full": full,
        "shots": {},
    }
    for n in (int(s) for s in args.shots.split(",")):
        model = base
        for i, name in enumerate(left_out):  # one folder per step: `keypoints add` never writes its own model
            out = work / (f"shots{n}" if i == len(left_out) - 1 else f"shots{n}_step{i}")
            rtkp(
                "keypoints", "add", name, "--model", str(model), "--data", args.data, "--split", args.split,
                "--shots", str(n), "--out", str(out), "--overwrite", "--backend", args.backend,
                *(["--spread"] if args.spread else []),
            )  # fmt: skip
            model = out
        fig = evaluate(model, args.data, args.split, left_out, work / f"eval_shots{n}.json", args.backend)
        added = {a["name"]: a for a in json.loads((model / "manifest.json").read_text())["added_keypoints"]}
        for name in left_out:
            fig[name].update(
                margin=added[name]["margin"], ratio=fig[name]["pck_0.1"] / max(full[name]["pck_0.1"], 1e-9)
            )
        figures["shots"][n] = fig
        if args.pseudo and not multi_instance(model):
            out = work / f"shots{n}_pseudo{args.pseudo}"
            name = left_out[0]
            how = pseudo_shots(model, out, args.data, args.split, name, args.pseudo, args.backend)
            fig = evaluate(out, args.data, args.split, left_out, work / f"eval_shots{n}_pseudo.json", args.backend)
            fig[name].update(how, ratio=fig[name]["pck_0.1"] / max(full[name]["pck_0.1"], 1e-9))
            figures.setdefault("pseudo", {})[n] = fig
    (work / "fewshot.json").write_text(json.dumps(figures, indent=1) + "\n")
    number = lambda v, f: "n/a" if v is None else format(v, f)
    for name in left_out:
        print(f"\n{name} left out of {Path(args.data).name} (trained on {', '.join(others)}):\n")
        print("| model | PCK@0.1 | vs full | PCK@0.05 | RMSE px | visible |")
        print("|---|---|---|---|---|---|")
        rows = [("fully trained", full[name] | {"ratio": 1.0})]
        rows += [(f"{n} shot(s)", f[name]) for n, f in figures["shots"].items()]
        rows += [(f"{n} shot(s) + {f[name]['pseudo']} pseudo", f[name]) for n, f in figures.get("pseudo", {}).items()]
        for label, f in rows:
            print(
                f"| {label} | {f['pck_0.1']:.3f} | {f['ratio']:.2f} | {f['pck_0.05']:.3f} | "
                f"{number(f.get('rmse_px'), '.2f')} | {number(f.get('visible_rate'), '.2f')} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
