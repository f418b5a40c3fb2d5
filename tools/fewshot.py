"""Leave-one-keypoint-out: how well a keypoint added from N labelled frames is tracked (docs/FEWSHOT.md).

For the left-out keypoint L of a dataset:
  1. train the recipe on the other keypoints       rtkp train --keypoints <others>        (WORK/base; resumable)
  2. add L from the first N labelled training frames, for each N
                                                   rtkp keypoints add L --model WORK/base --data … --shots N
  3. evaluate L on the test split, and the fully trained model's L for reference
                                                   rtkp eval --keypoints L
and write WORK/fewshot.json plus a Markdown table on stdout (PCK@0.1 of L with N shots, the fully trained model's,
their ratio against the 0.9 target; RMSE; the visible rate). The trainings are the costly part (~20 min each on two
CPU cores at the mouse recipe's 2000 steps): `--steps` runs a reduced budget, and a finished WORK/base is reused.

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


def evaluate(model: Path, data: str, split: str, keypoint: str, out: Path, backend: str) -> dict:
    rtkp(
        "eval", "--model", str(model), "--data", data, "--split", split, "--keypoints", keypoint,
        "--backend", backend, "--json", str(out), "--quiet",
    )  # fmt: skip
    report = json.loads(out.read_text())
    k = report["per_keypoint"][keypoint]
    return {
        "pck_0.1": k["pck"]["0.1"],
        "pck_0.05": k["pck"]["0.05"],
        "rmse_px": k["rmse_px"],
        "count": k["count"],
        "visible_rate": report["visible_rate"],
        "backend": report["backend"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--config", required=True, help="the training recipe (YAML profile)")
    p.add_argument("--leave-out", required=True, metavar="NAME", help="the keypoint to add from shots")
    p.add_argument("--full", required=True, metavar="DIR", help="the model trained on every keypoint (reference)")
    p.add_argument("--work", required=True, metavar="DIR", help="where the models and figures go")
    p.add_argument("--shots", default="1,3,5", help="comma-separated N (default 1,3,5)")
    p.add_argument("--steps", type=int, help="a reduced training budget (default: the recipe's train.steps)")
    p.add_argument("--threads", type=int, default=1, help="training threads (default 1, like the shipped models)")
    p.add_argument("--backend", default="onnxruntime", help="inference backend for shots and evaluation")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more training overrides")
    args = p.parse_args()

    from rtkp.data.load import load_dataset

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    names = load_dataset(args.data).keypoint_names
    if args.leave_out not in names:
        sys.exit(f"fewshot: {args.data} has no keypoint {args.leave_out!r} ({', '.join(names)})")
    others = [n for n in names if n != args.leave_out]
    base = work / "base"
    overrides = [f"train.threads={args.threads}"] + ([f"train.steps={args.steps}"] if args.steps else []) + args.set
    t0 = time.monotonic()
    if not (base / "manifest.json").is_file():
        train = ["train", "--data", args.data, "--split", args.split, "--config", args.config, "--out", str(base)]
        train += ["--keypoints", ",".join(others), "--quiet"]
        for o in overrides:
            train += ["--set", o]
        rtkp(*train)
    train_s = time.monotonic() - t0
    figures = {
        "data": args.data,
        "left_out": args.leave_out,
        "trained_on": others,
        "recipe": args.config,
        "overrides": overrides,
        "train_seconds": round(train_s, 1),
        "full": evaluate(Path(args.full), args.data, args.split, args.leave_out, work / "eval_full.json", args.backend),
        "shots": {},
    }
    for n in (int(s) for s in args.shots.split(",")):
        model = work / f"shots{n}"
        rtkp(
            "keypoints", "add", args.leave_out, "--model", str(base), "--data", args.data, "--split", args.split,
            "--shots", str(n), "--out", str(model), "--overwrite", "--backend", args.backend,
        )  # fmt: skip
        fig = evaluate(model, args.data, args.split, args.leave_out, work / f"eval_shots{n}.json", args.backend)
        added = json.loads((model / "manifest.json").read_text())["added_keypoints"][-1]
        fig.update(margin=added["margin"], ratio=fig["pck_0.1"] / max(figures["full"]["pck_0.1"], 1e-9))
        figures["shots"][n] = fig
    (work / "fewshot.json").write_text(json.dumps(figures, indent=1) + "\n")
    full = figures["full"]
    print(f"\n{args.leave_out} left out of {Path(args.data).name} (trained on {', '.join(others)}):\n")
    print("| model | PCK@0.1 | vs full | PCK@0.05 | RMSE px | visible |")
    print("|---|---|---|---|---|---|")
    print(f"| fully trained | {full['pck_0.1']:.3f} | 1.00 | {full['pck_0.05']:.3f} | {full['rmse_px']:.2f} | "
          f"{full['visible_rate']:.2f} |")  # fmt: skip
    for n, f in figures["shots"].items():
        print(f"| {n} shot(s) | {f['pck_0.1']:.3f} | {f['ratio']:.2f} | {f['pck_0.05']:.3f} | {f['rmse_px']:.2f} | "
              f"{f['visible_rate']:.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
