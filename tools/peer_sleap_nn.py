"""A peer on the same data: SLEAP's network backend (sleap-nn) trained on the mouse split and scored as rtkp is.

    /work/main/.venv/bin/python tools/peer_sleap_nn.py [--minutes 20] [--peer-python /work/peer-venv/bin/python]
        [--data ../shared/data/dlc_openfield_mouse] [--split DATA/split.json] [--work runs/peer_sleap_nn]
        [--threads 0] [--json out.json] [--model TRAINED_SLEAP_NN_MODEL_DIR (score it, no training)]

sleap-nn lives in its own virtual environment (docs/PEERS.md says how it was made), never in rtkp's dependencies, so
this file plays two parts:

- The project side (this venv): reads the data with rtkp's own reader (rtkp.data.load.load_split, the split's
  `train` list for training, its `test` list only for scoring), hands the peer a job file (image paths, keypoint
  names, (K, 2) labels with NaN where unlabelled), runs the peer side as subprocesses, and scores the peer's test
  predictions with rtkp's own functions (rtkp.train.evaluate.position_figures and object_size: RMSE over labelled
  keypoints, PCK against the larger side of the labelled keypoints' box), exactly as `rtkp eval` scores rtkp.
- The peer side (`<peer python> tools/peer_sleap_nn.py _peer train|predict JOB`; stdlib, numpy, sleap-io and
  sleap-nn only): writes the train frames as a SLEAP .slp, trains sleap-nn's single-instance UNet from scratch with
  the settings of its sample config `config_single_instance_unet_medium_rf.yaml` (RECIPE below) until the budget's
  wall clock runs out, then predicts the test images with the best checkpoint.

Budget: `--minutes` of wall clock for the whole training subprocess (its start-up, data loading and validation
included), on the CPU. sleap-nn has no wall-clock limit of its own, so a Lightning callback stops training at the
first step that ends past the deadline; Lightning then runs the epoch's validation and the checkpoint callback keeps
the best model (lowest validation loss), as in any sleap-nn run. A run still going GRACE_S after the deadline is
killed (its last saved checkpoint is used, and the report says so).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "dlc_openfield_mouse"
DEFAULT_PEER = Path("/work/peer-venv/bin/python")
REFERENCE_MODEL = REPO / "engines" / "dlc_mouse_coke"
GRACE_S = 300  # after the deadline: the interrupted epoch's validation and checkpoint (seconds on 2 CPU cores)
NO_THRESHOLD = -1.0e9  # below any confidence-map value
VISIBLE_THRESHOLD = 0.2  # sleap-nn's default peak threshold: a lower peak is reported as a missing point

# sleap-nn 0.3.5's sample config docs/sample_configs/config_single_instance_unet_medium_rf.yaml, the values it sets
# (everything else is the schema's default). Changed from the sample, none of which changes what is learned:
# trainer_accelerator cpu (the machine's), seed 0 (reproducible; rtkp's models use seed 0),
# visualize_preds_during_training off (saves CPU), progress bar off (log files), paths filled in by the job.
RECIPE = {
    "data_config": {
        "validation_fraction": 0.1,
        "provider": "LabelsReader",
        "user_instances_only": True,
        "data_pipeline_fw": "torch_dataset",
        "preprocessing": {"ensure_rgb": False, "ensure_grayscale": False, "scale": 1.0},
        "use_augmentations_train": True,
        "augmentation_config": {
            "geometric": {
                "rotation_min": -15.0,
                "rotation_max": 15.0,
                "scale_min": 0.9,
                "scale_max": 1.1,
                "translate_width": 0.0,
                "translate_height": 0.0,
                "affine_p": 1.0,
            },
        },
    },
    "model_config": {
        "init_weights": "default",
        "backbone_config": {
            "unet": {
                "in_channels": 1,  # sleap-nn sets it to the images' channels (3 here)
                "kernel_size": 3,
                "filters": 16,
                "filters_rate": 2.0,
                "max_stride": 16,
                "middle_block": True,
                "up_interpolate": True,
                "stacks": 1,
                "convs_per_block": 2,
                "output_stride": 2,
            }
        },
        "head_configs": {"single_instance": {"confmaps": {"sigma": 2.5, "output_stride": 2}}},
    },
    "trainer_config": {
        "train_data_loader": {"batch_size": 4, "shuffle": True, "num_workers": 0},
        "val_data_loader": {"batch_size": 4, "shuffle": False, "num_workers": 0},
        "model_ckpt": {"save_top_k": 1, "save_last": False},
        "trainer_accelerator": "cpu",
        "min_train_steps_per_epoch": 200,
        "visualize_preds_during_training": False,
        "enable_progress_bar": False,
        "max_epochs": 200,
        "seed": 0,
        "use_wandb": False,
        "save_ckpt": True,
        "optimizer_name": "Adam",
        "optimizer": {"lr": 0.0001, "amsgrad": False},
        "lr_scheduler": {
            "reduce_lr_on_plateau": {
                "threshold": 1.0e-08,
                "threshold_mode": "abs",
                "cooldown": 3,
                "patience": 5,
                "factor": 0.5,
                "min_lr": 1.0e-08,
            }
        },
        "early_stopping": {"min_delta": 1.0e-08, "patience": 10, "stop_training_on_plateau": True},
    },
}


class PeerError(Exception):
    """A one-line reason the comparison cannot run (missing venv, data, failed peer step)."""


# ---------------------------------------------------------------- peer side (runs in the sleap-nn venv)


def _import_torchvision_cpu() -> None:
    """Import torchvision where its compiled ops cannot load.

    The registry's only torchvision 0.28 wheel for Linux is built against CUDA torch; beside the CPU torch 2.13 wheel
    its ops library fails to load (libc10_cuda.so missing), and torchvision's import then stops at registering fake
    kernels for two ops nobody defined (nms, qnms). Defining those two schemas lets the import finish; they are
    detection ops, never called by a single-instance UNet. With a matching torch/torchvision pair this does nothing.
    """
    import importlib.util

    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    ops = sorted(Path(spec.submodule_search_locations[0]).glob("_C*.so"))
    try:
        if ops:
            torch.ops.load_library(str(ops[0]))
        return
    except OSError:
        pass
    global _TORCHVISION_SHIM
    _TORCHVISION_SHIM = torch.library.Library("torchvision", "DEF")  # kept alive: dropping it removes the schemas
    for name in ("nms", "qnms"):
        _TORCHVISION_SHIM.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision  # noqa: F401


_TORCHVISION_SHIM = None


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _peer_train(job: dict, started: float) -> dict:
    """Write train.slp and config.yaml under job["work"], train until job["deadline_s"] after `started`."""
    import numpy as np
    import sleap_io as sio

    _import_torchvision_cpu()
    import lightning
    import torch
    from omegaconf import OmegaConf

    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    work = Path(job["work"])
    skeleton = sio.Skeleton(job["keypoints"])
    video = sio.Video.from_filename([f["image"] for f in job["train"]])
    frames = [
        sio.LabeledFrame(
            video=video, frame_idx=i, instances=[sio.Instance.from_numpy(np.array(f["xy"], float), skeleton)]
        )
        for i, f in enumerate(job["train"])
    ]
    sio.Labels(frames, videos=[video], skeletons=[skeleton]).save(str(work / "train.slp"))
    paths = {
        "data_config": {"train_labels_path": [str(work / "train.slp")]},
        "trainer_config": {"ckpt_dir": str(work), "run_name": "model"},
    }
    config = OmegaConf.create(_merge(RECIPE, paths))
    OmegaConf.save(config, work / "config.yaml")

    deadline = started + job["deadline_s"]
    state = {"stopped_by_budget": False, "epochs": 0, "steps": 0}

    class Deadline(lightning.Callback):
        """Stop at the first training step that ends past the deadline (Lightning then validates and checkpoints)."""

        def on_train_batch_end(self, trainer, *args):
            if time.time() >= deadline and not trainer.should_stop:
                trainer.should_stop = True
                state["stopped_by_budget"] = True

        def on_train_end(self, trainer, *args):
            state["epochs"], state["steps"] = trainer.current_epoch, trainer.global_step
            state["training_end_s"] = time.time() - started

    class CappedTrainer(lightning.Trainer):
        def __init__(self, *args, callbacks=None, **kwargs):
            super().__init__(*args, callbacks=list(callbacks or []) + [Deadline()], **kwargs)

    lightning.Trainer = CappedTrainer  # sleap-nn builds `lightning.Trainer(...)` at train time
    from sleap_nn.training.model_trainer import ModelTrainer

    # what `sleap-nn train config.yaml` runs (sleap_nn.train.run_training), less its evaluation of the train and
    # validation frames after training, which this comparison does not use
    ModelTrainer.get_model_trainer_from_config(config).train()
    best = work / "model" / "best.ckpt"
    if not best.is_file():
        raise PeerError(f"{best}: sleap-nn saved no checkpoint (the budget ended before the first validation?)")
    return dict(state, model=str(work / "model"), seconds=time.time() - started)


def _peer_predict(job: dict) -> dict:
    """Predict job["test"] images with the trained model: (N, K, 2) xy (NaN where no peak) and (N, K) peak values."""
    import numpy as np
    import sleap_io as sio

    _import_torchvision_cpu()
    if job.get("threads"):
        import torch

        torch.set_num_threads(job["threads"])
    from sleap_nn.inference import predict

    video = sio.Video.from_filename(job["test"])
    n, k = len(job["test"]), len(job["keypoints"])
    xy, score = np.full((n, k, 2), np.nan), np.zeros((n, k))
    t0 = time.time()
    # no peak threshold (sleap-nn NaNs a peak below it, and even 0 drops negative maxima): every keypoint gets the
    # argmax position, as rtkp's figures take rtkp's position whatever its visibility; the peak values say which
    # points sleap-nn would have dropped at its default threshold
    labels = predict(video, model_paths=[job["model"]], device="cpu", peak_threshold=NO_THRESHOLD, batch_size=4)
    seconds = time.time() - t0
    for lf in labels.labeled_frames:
        if lf.instances:
            pts = lf.instances[0].numpy(scores=True)
            xy[lf.frame_idx], score[lf.frame_idx] = pts[:, :2], np.nan_to_num(pts[:, 2])
    return {"xy": np.where(np.isnan(xy), None, xy).tolist(), "score": score.tolist(), "seconds": seconds}


def _peer_versions() -> dict:
    from importlib.metadata import version

    return {name: version(name) for name in ("sleap-nn", "sleap-io", "torch", "torchvision", "lightning")}


def _peer_main(argv: list[str]) -> int:
    started = time.time()  # the budget counts from here: imports and data loading are part of it
    step, job_path = argv
    job = json.loads(Path(job_path).read_text())
    if step == "train":
        result = _peer_train(job, started)
    elif step == "predict":
        result = _peer_predict(job)
    else:
        result = _peer_versions()
    Path(job["result"]).write_text(json.dumps(result))
    return 0


# ---------------------------------------------------------------- project side (rtkp's venv)


def _run_peer(peer: Path, step: str, job: dict, work: Path, timeout: float | None) -> tuple[dict, dict]:
    """Run one peer step; (its result, {"seconds", "killed"}). Its output goes to <work>/<step>.log."""
    job = dict(job, result=str(work / f"{step}.result.json"))
    job_path = work / f"{step}.job.json"
    job_path.write_text(json.dumps(job))
    Path(job["result"]).unlink(missing_ok=True)
    log = work / f"{step}.log"
    t0 = time.time()
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [str(peer), __file__, "_peer", step, str(job_path)], stdout=fh, stderr=subprocess.STDOUT
        )
        killed = False
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc, killed = proc.wait(), True
    info = {"seconds": round(time.time() - t0, 1), "killed": killed}
    if not Path(job["result"]).is_file():
        if killed and step == "train" and (work / "model" / "best.ckpt").is_file():
            return {"model": str((work / "model").resolve()), "stopped_by_budget": True}, info
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:]
        raise PeerError(f"sleap-nn {step} failed (exit {rc}; log {log}): {tail[0] if tail else 'no output'}")
    return json.loads(Path(job["result"]).read_text()), info


def _check_peer(peer: Path) -> None:
    if not peer.is_file():
        raise PeerError(f"{peer}: no sleap-nn venv python here (make one as docs/PEERS.md says, or pass --peer-python)")
    probe = subprocess.run([str(peer), "-c", "import sleap_nn, sleap_io"], capture_output=True, text=True)
    if probe.returncode:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        raise PeerError(f"{peer}: cannot import sleap_nn there ({last})")


def _reference() -> dict | None:
    """rtkp's shipped mouse model's held-out figures, from its manifest (None when absent)."""
    try:
        evaluation = json.loads((REFERENCE_MODEL / "manifest.json").read_text())["evaluation"]
    except (OSError, KeyError, json.JSONDecodeError):
        return None
    return {
        "model": str(REFERENCE_MODEL.relative_to(REPO)),
        "rmse_px": evaluation["rmse_px"],
        "pck": {t: evaluation["pck"][t] for t in ("0.05", "0.1")},
    }


def compare(
    data: Path, split: Path, minutes: float, peer: Path, work: Path, threads: int, model: Path | None = None
) -> dict:
    """Train, predict and score the peer; the report (see the module docstring). model: a trained sleap-nn model
    folder to score instead of training one (the report's training entry is then None)."""
    import numpy as np

    from rtkp.data.load import load_split
    from rtkp.train.evaluate import object_size, position_figures

    _check_peer(peer)
    train = load_split(data, split, "train", several=False)
    test = load_split(data, split, "test", several=False)
    names = list(train.keypoint_names)
    work.mkdir(parents=True, exist_ok=True)
    base = {"keypoints": names, "work": str(work.resolve()), "threads": threads}

    versions, _ = _run_peer(peer, "versions", base, work, 300)
    items = [
        {"image": str(s.image_path.resolve()), "xy": np.where(s.visible[:, None], s.keypoints, np.nan).tolist()}
        for s in train.samples
    ]
    items = [{**f, "xy": [[None if math.isnan(v) else v for v in p] for p in f["xy"]]} for f in items]
    budget_s = minutes * 60
    if model is None:
        shutil.rmtree(work / "model", ignore_errors=True)  # an earlier run's checkpoint must not stand in for this one
        job = dict(base, train=items, deadline_s=budget_s)
        trained, train_run = _run_peer(peer, "train", job, work, budget_s + GRACE_S)
    elif not (model / "best.ckpt").is_file():
        raise PeerError(f"{model}: no best.ckpt here (a sleap-nn model folder is needed)")
    else:
        trained, train_run = {"model": str(model.resolve())}, None
    test_images = [str(s.image_path.resolve()) for s in test.samples]
    predicted, _ = _run_peer(peer, "predict", dict(base, test=test_images, model=trained["model"]), work, 1800)

    pred = np.array([[[np.nan if v is None else v for v in p] for p in f] for f in predicted["xy"]], float)
    score = np.array(predicted["score"], float)
    gt = np.stack([s.keypoints for s in test.samples])
    labelled = np.stack([s.visible for s in test.samples])
    scale = np.array([object_size(s.object_points()) for s in test.samples])
    figures = position_figures(pred, gt, labelled, scale, names)
    found = labelled & ~np.isnan(pred).any(-1)
    found_rmse = position_figures(pred, gt, found, scale, names)["rmse_px"] if found.any() else None
    return {
        "peer": "sleap-nn single-instance UNet (sample config unet_medium_rf, from scratch)",
        "versions": versions,
        "data": str(data),
        "split": str(split),
        "train_frames": len(train),
        "test_frames": len(test),
        "budget_minutes": minutes if train_run else None,
        "training": train_run
        and {
            "wall_s": train_run["seconds"],
            "killed_after_grace": train_run["killed"],
            "stopped_by_budget": trained.get("stopped_by_budget"),
            "epochs": trained.get("epochs"),
            "steps": trained.get("steps"),
        },
        "model": trained["model"],
        "test": {
            "rmse_px": figures["rmse_px"],
            "pck": {t: figures["pck"][t] for t in ("0.05", "0.1")},
            "per_keypoint": figures["per_keypoint"],
            # no peak at all: counted as wrong by PCK, and makes RMSE NaN
            "missing_predictions": int(np.isnan(pred).any(-1)[labelled].sum()),
            "rmse_px_found": found_rmse,
            f"labelled_reported_visible_at_peak_{VISIBLE_THRESHOLD:g}": float(
                (score[labelled] >= VISIBLE_THRESHOLD).mean()
            ),
            "predict_s": round(predicted["seconds"], 1),
        },
        "rtkp_reference": _reference(),
        "work": str(work),
        "command": "python tools/peer_sleap_nn.py " + " ".join(sys.argv[1:]),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_peer"]:
        return _peer_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="DeepLabCut project (default: the mouse)")
    ap.add_argument("--split", type=Path, default=None, help="split JSON (default: DATA/split.json)")
    ap.add_argument("--minutes", type=float, default=20.0, help="training wall-clock budget (default 20)")
    ap.add_argument("--peer-python", type=Path, default=DEFAULT_PEER, help="python of the sleap-nn venv")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "peer_sleap_nn", help="folder for the peer's files")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in the peer (0: torch's default)")
    ap.add_argument("--json", type=Path, default=None, help="also write the report here")
    ap.add_argument("--model", type=Path, default=None, help="score this trained sleap-nn model folder (no training)")
    args = ap.parse_args(argv)
    split = args.split or args.data / "split.json"
    if args.minutes <= 0:
        print("error: --minutes must be positive", file=sys.stderr)
        return 2
    from rtkp.errors import DataError

    try:
        report = compare(args.data, split, args.minutes, args.peer_python, args.work, args.threads, args.model)
    except (PeerError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
