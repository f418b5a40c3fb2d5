"""`rtkp train`: the training loop, checkpoints and resume; it writes the model folder at the end.

Reproducible: every random draw of step `i` comes from a generator seeded with (seed, i), so a run resumed from a
checkpoint continues exactly as an uninterrupted one would.

What a step computes lives beside it: batches.py (augmented crops, clutter positions), steps.py (each head's loss),
mining.py (hard negatives), calibrate.py (visibility margins), recipe.py (decisions taken from the data).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from rtkp.config import Config
from rtkp.data.sample import Dataset
from rtkp.errors import ConfigError, Interrupted
from rtkp.manifest import Manifest
from rtkp.model.banks import ClutterBank, KeypointBank
from rtkp.model.checkpoint import load_training_state, save_model, save_training_state
from rtkp.model.network import STRIDE, KeypointNet
from rtkp.train.batches import BatchMaker
from rtkp.train.calibrate import calibrate_margins
from rtkp.train.mining import mine
from rtkp.train.prototypes import frame_prototypes
from rtkp.train.recipe import flip_policy, follow_crop_size, instance_plan, peak_decoding
from rtkp.train.steps import coke_step, heatmap_step


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 2 % of the base rate."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(total - warmup, 1)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def same_recipe(a: dict | None, b: dict) -> bool:
    """Configs equal up to train.steps and train.threads (which do not change what a step computes)."""
    if a is None:
        return False
    strip = lambda c: {**c, "train": {k: v for k, v in c["train"].items() if k not in ("steps", "threads")}}
    return strip(a) == strip(b)


def build_optimizer(net: KeypointNet, cfg: Config) -> torch.optim.Optimizer:
    """AdamW over the head, and over the backbone at `train.backbone_lr_scale` of the rate (0: backbone frozen)."""
    backbone = [p for p in net.backbone.parameters() if p.requires_grad]
    head = [p for n, p in net.named_parameters() if not n.startswith("backbone.") and p.requires_grad]
    groups = [{"params": head, "lr": cfg.train.lr, "base_lr": cfg.train.lr}]
    if cfg.train.backbone_lr_scale > 0:
        lr = cfg.train.lr * cfg.train.backbone_lr_scale
        groups.append({"params": backbone, "lr": lr, "base_lr": lr})
    else:
        for p in backbone:
            p.requires_grad_(False)
    return torch.optim.AdamW(groups, weight_decay=cfg.train.weight_decay)


def train(
    data: Dataset,
    cfg: Config,
    out: Path,
    resume: bool = True,
    progress: bool = True,
    provenance: dict | None = None,
    stop_after: int | None = None,
    on_resume: Callable[[int], None] | None = None,
    keep_checkpoint: bool = False,
) -> Manifest | None:
    """Train and write the model folder `out`; returns its manifest as written (without evaluation figures).

    `out` is created (with its parents) before anything else. A checkpoint in `out/checkpoint` is resumed when
    `resume` and the config matches (`train.steps` may differ, so a run can be extended); `on_resume(step)` is told the
    step it resumes from. `stop_after` ends this call after that many more steps (counted from the step it resumed
    from) with a checkpoint and returns None (for time-sliced training on shared machines). The checkpoint is removed
    once the model is written, unless `keep_checkpoint`: then a finished run can be extended (a larger train.steps
    resumes at its last step; the cosine schedule restarts from where the longer one would be).

    SIGINT and SIGTERM (Ctrl-C) end the step under way, save a checkpoint of it and raise Interrupted, whose summary
    holds `step` (the steps saved), `steps` and `checkpoint`: running again resumes there. A second signal while a
    step runs stops at once, keeping the last checkpoint saved.
    """
    from tqdm import tqdm

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder; name a folder (it is created if missing)")
    out.mkdir(parents=True, exist_ok=True)  # before the first step: an interrupt always has somewhere to save
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    cfg = flip_policy(data.keypoint_names, cfg)  # before the checkpoint check: the checkpoint holds this config
    k = len(data.keypoint_names)
    head = cfg.model.head
    plan = instance_plan(data, cfg)
    m = cfg.model
    net = KeypointNet(
        head,
        k,
        m.feature_dim,
        m.decoder_channels,
        m.backbone,
        m.pretrained,
        centre=plan.several,
        aux_heatmap=head == "coke" and cfg.coke.heatmap_weight > 0,
    )
    net.freeze_stem(3)
    net.train()
    optimizer = build_optimizer(net, cfg)
    kp_bank = KeypointBank(k, cfg.model.feature_dim, cfg.coke.momentum, cfg.coke.cumulative)
    clutter_bank = ClutterBank(cfg.coke.clutter_size, cfg.model.feature_dim)
    banks = {"keypoints": kp_bank, "clutter": clutter_bank} if head == "coke" else {}
    ckpt = out / "checkpoint"
    start = 0
    if resume and (ckpt / "state.json").is_file():
        info = load_training_state(ckpt, net, optimizer, banks)
        if not same_recipe(info.get("config"), cfg.to_dict()) or info.get("head") != head:
            raise ConfigError(f"{ckpt}: checkpoint was made with another config; use a new --out or --no-resume")
        start = info["step"]
        if on_resume is not None:
            on_resume(start)
    maker = BatchMaker(data, cfg, several=plan.several)
    if start and info.get("hard_negatives"):
        maker.hard.points = [np.asarray(p, np.float32).reshape(-1, 2) for p in info["hard_negatives"]]
    steps = cfg.train.steps
    t0 = time.perf_counter()
    last = {}
    end = steps if stop_after is None else min(steps, start + stop_after)

    saved = start  # the step the checkpoint on disk holds (0: none)

    def save(done: int) -> None:
        nonlocal saved
        hard = [p.tolist() for p in maker.hard.points]
        extra = {"config": cfg.to_dict(), "head": head, "hard_negatives": hard}
        with stop.saving():
            save_training_state(ckpt, done, net, optimizer, banks, extra)
            saved = done

    def interrupted() -> Interrupted:
        kept = f"{saved} of {steps} steps saved in {ckpt}" if saved else "no step saved yet"
        summary = {"step": saved, "steps": steps, "checkpoint": str(ckpt)}
        return Interrupted(f"training stopped by {stop.reason or 'SIGINT'}: {kept}", summary)

    bar = tqdm(total=steps, initial=start, desc=f"train {head}", unit="step", disable=not progress, file=sys.stderr)
    with StopOnSignals() as stop:
        try:
            for step in range(start, end):
                loss, last = _step(step, steps, cfg, net, optimizer, maker, kp_bank, clutter_bank)
                bar.set_postfix(loss=f"{loss:.3f}", **{k: f"{v:.3f}" for k, v in last.items()})
                bar.update(1)
                done = step + 1
                if done % cfg.train.checkpoint_every == 0 or done == end or stop.reason:
                    save(done)
                if stop.reason:
                    break
            bar.close()
            if stop.reason:
                raise interrupted()
            stop.soft = False  # from here on (calibration, writing the model) a signal stops at once
            if end < steps:
                return None
            manifest = _finish(data, cfg, out, net, maker, kp_bank, clutter_bank, provenance, steps, t0, last, plan)
            if not keep_checkpoint:
                shutil.rmtree(ckpt, ignore_errors=True)
            return manifest
        except KeyboardInterrupt:  # a second signal during a step, or one while the model is written
            bar.close()
            raise interrupted() from None


class StopOnSignals:
    """SIGINT and SIGTERM while `soft`: the training loop stops after the step under way (`reason` names the first
    signal). A second signal, or one when not `soft`, raises KeyboardInterrupt at once, except while a checkpoint is
    written (`saving()`), which always completes. Outside the main thread (no handler can be installed) nothing is
    caught."""

    def __init__(self):
        self.reason: str | None = None
        self.soft = True
        self._saving = False
        self._previous: dict = {}

    def _on_signal(self, signum, _frame) -> None:
        first = self.reason is None
        self.reason = self.reason or signal.Signals(signum).name
        if self._saving or (first and self.soft):
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def saving(self):
        self._saving = True
        try:
            yield
        finally:
            self._saving = False

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def _step(step, steps, cfg, net, optimizer, maker, kp_bank, clutter_bank) -> tuple[float, dict]:
    """One training step (its random draws seeded by (seed, step)); returns (loss, its parts rounded)."""
    rng = np.random.default_rng([cfg.train.seed, step])
    if cfg.augment.hard_crop > 0 and step >= cfg.train.warmup_steps:
        # a resumed run continues with the hard negatives saved in the checkpoint, as an uninterrupted one would
        if (step - cfg.train.warmup_steps) % cfg.augment.hard_every == 0:
            mine(net, maker, cfg, kp_bank, np.random.default_rng([cfg.train.seed, step, 1]))
    batch = maker.draw(rng, cfg.train.batch_size)
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * lr_factor(step, steps, cfg.train.warmup_steps)
    if cfg.model.head == "coke":
        loss, stats, after = coke_step(net, batch, rng, cfg, kp_bank, clutter_bank, step / steps)
    else:
        loss, stats, after = heatmap_step(net, batch, cfg)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    after()
    return loss.item(), {k: round(v, 4) for k, v in stats.items()}


def _finish(data, cfg, out, net, maker, kp_bank, clutter_bank, provenance, steps, t0, last, plan) -> Manifest:
    """After the last step: calibrate the visibility margins and write the model folder."""
    head = cfg.model.head
    net.eval()
    prototypes = clutter = None
    if head == "coke":
        prototypes = kp_bank.prototypes.clone()
        if cfg.coke.final_prototypes == "frames":  # what inference matches: whole frames, the final network
            prototypes = frame_prototypes(net, maker, tuple(cfg.model.input_size), prototypes)
        clutter = clutter_bank.summary(cfg.coke.clutter_summary, seed=cfg.train.seed)
    margins = calibrate_margins(net, maker, cfg, prototypes, clutter)
    training = dict(
        provenance or {},
        steps=steps,
        seconds=round(time.perf_counter() - t0, 1),
        final_loss=last,
        config=cfg.to_dict(),
    )
    manifest = model_manifest(data, cfg, maker.flip_pairs, margins, prototypes, clutter, training)
    manifest.update(plan.manifest_entries())  # several animals: how many, and their size (absent for one)
    crop = follow_crop_size(data, maker.scales, cfg.model.input_size)
    if crop is not None:  # the window rtkp.follow looks through on the CPU (absent: always the whole frame)
        manifest["crop_size"] = list(crop)
    return save_model(out, net, manifest, prototypes, clutter)


def model_manifest(data: Dataset, cfg: Config, flip_pairs, margins, prototypes, clutter, training: dict) -> dict:
    """The trained model folder's manifest as a JSON object (save_model checks and types it, rtkp.manifest).

    flip_pairs: [(i, j)] keypoint indices; margins: (common, per keypoint (K,)) from calibrate_margins; prototypes
    (K, D) and clutter (C, D) tensors, None for the heatmap head; training: provenance and figures of the run.
    """
    return {
        "head": cfg.model.head,
        "keypoint_names": data.keypoint_names,
        "skeleton": [list(p) for p in data.skeleton],
        "flip_pairs": [[data.keypoint_names[i], data.keypoint_names[j]] for i, j in flip_pairs],
        "input_size": list(cfg.model.input_size),
        "input": {
            "dtype": "uint8",
            "layout": "BHWC",
            "channels": "RGB",
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "note": "normalisation happens inside the network",
        },
        "stride": STRIDE,
        "backbone": cfg.model.backbone,
        "feature_dim": cfg.model.feature_dim,
        "decoder_channels": cfg.model.decoder_channels,
        "visibility_margin": margins[0],
        "visibility_margins": margins[1],
        "peak": peak_decoding(cfg),
        "prototypes": prototypes.tolist() if prototypes is not None else None,
        "clutter_summary": {"tensor": "clutter_summary", "shape": list(clutter.shape)} if clutter is not None else None,
        "training": training,
    }
