"""`rtkp train`: fit a CoKe model (or the heatmap baseline) to labelled frames.

Reproducible: every random draw of step `i` comes from a generator seeded with (seed, i), so a run resumed from a
checkpoint continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rtkp.config import Config
from rtkp.data.augment import augment_sample
from rtkp.data.background import empty_background
from rtkp.data.occlude import load_photos
from rtkp.data.sample import Dataset
from rtkp.data.sides import pair_sides, resolve_flip_pairs
from rtkp.errors import ConfigError
from rtkp.geometry import Letterbox
from rtkp.model.banks import ClutterBank, KeypointBank
from rtkp.model.checkpoint import load_training_state, save_model, save_training_state
from rtkp.model.equivariance import apply_warps, equivariance_loss, grid_points, random_warps, warp_images
from rtkp.model.loss import coke_loss, gaussian_targets, heatmap_loss, localisation_loss, sample_features
from rtkp.model.network import STRIDE, KeypointNet
from rtkp.train.mining import HardNegatives

# Fewer labelled frames than this and the recipe overfits: the shipped mouse model trained on 92 frames (test RMSE
# 4.1 px), while 12 frames of the same data gave an RMSE of 37.9 px.
RECIPE_MIN_FRAMES = 50


def few_frames_warning(data: Dataset) -> str | None:
    """A one-line warning when `data` has fewer labelled frames (distinct images) than the recipe needs, else None."""
    frames = len({s.image_path for s in data.samples if s.visible.any()})
    if frames >= RECIPE_MIN_FRAMES:
        return None
    return (
        f"rtkp train: warning: the recipe expects about {RECIPE_MIN_FRAMES}+ labelled frames; got {frames} "
        "(expect a large error; label more frames, e.g. 50-100 spread over the videos)"
    )


@dataclass
class Batch:
    """images (B, h, w, 3) uint8; keypoints (B, K, 2) crop pixels; visible (B, K) bool;
    anchors (B, 2) crop pixels of the hard negative a crop is centred on (NaN for other crops)."""

    images: torch.Tensor
    keypoints: torch.Tensor
    visible: torch.Tensor
    anchors: torch.Tensor | None = None


class BatchMaker:
    """Holds the training images in memory and draws augmented crops."""

    def __init__(self, data: Dataset, cfg: Config):
        self.images = [s.load_image() for s in data.samples]
        self.keypoints = [s.keypoints for s in data.samples]
        self.visible = [s.visible for s in data.samples]
        self.scales = [Letterbox.fit(im.shape[1::-1], cfg.model.input_size).scale for im in self.images]
        self.flip_pairs = resolve_flip_pairs(data.keypoint_names, cfg.augment.flip_pairs)
        self.photos = [im for folder in cfg.augment.occluder_photos for im in load_photos(folder)]
        self.empty = None
        if cfg.augment.empty_share > 0:
            self.empty, why = empty_background(self.images, self.keypoints, self.visible)
            if self.empty is None:
                print(f"rtkp train: note: no empty-scene crops ({why})", file=sys.stderr)
            else:
                self.empty_scale = Letterbox.fit(self.empty.shape[1::-1], cfg.model.input_size).scale
        self.hard = HardNegatives(len(self.images), min_cells=cfg.coke.clutter_min_distance)
        self.cfg = cfg

    def draw(self, rng: np.random.Generator, batch_size: int) -> Batch:
        crops, kps, vis, anchors = [], [], [], []
        centre_px = np.array([(self.cfg.augment.crop_size[0] - 1) / 2, (self.cfg.augment.crop_size[1] - 1) / 2])
        for i in rng.integers(0, len(self.images), batch_size):
            centre = None
            if self.cfg.augment.hard_crop > 0 and self.hard.has(i) and rng.random() < self.cfg.augment.hard_crop:
                centre = self.hard.pick(rng, i)
            anchors.append(centre_px if centre is not None else np.full(2, np.nan))
            image, keypoints, visible, scale = self.images[i], self.keypoints[i], self.visible[i], self.scales[i]
            if self.empty is not None and centre is None and rng.random() < self.cfg.augment.empty_share:
                # the scene without the object: all keypoints hidden (positions are irrelevant then)
                image, visible, scale = self.empty, np.zeros_like(visible), self.empty_scale
            c, k, v = augment_sample(
                rng, image, keypoints, visible, self.cfg.augment, self.flip_pairs, scale, centre, self.photos
            )
            crops.append(c)
            kps.append(k)
            vis.append(v)
        return Batch(
            torch.from_numpy(np.stack(crops)),
            torch.from_numpy(np.stack(kps)),
            torch.from_numpy(np.stack(vis)),
            torch.from_numpy(np.stack(anchors).astype(np.float32)),
        )


# a hard negative's cell and its 4 neighbours go first among a crop's clutter samples
_ANCHOR_CELLS = np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]], np.float32)


def clutter_points(rng: np.random.Generator, batch: Batch, per_image: int, min_cells: float) -> torch.Tensor:
    """(B, per_image, 2) pixel positions of feature cells `min_cells` or more cells from every visible keypoint.

    A crop centred on a hard negative (batch.anchors) samples that cell and its neighbours first.
    """
    b, h, w = batch.images.shape[:3]
    gh, gw = h // STRIDE, w // STRIDE
    out = np.zeros((b, per_image, 2), np.float32)
    for i in range(b):
        cells = np.stack([rng.integers(0, gw, per_image * 4), rng.integers(0, gh, per_image * 4)], 1).astype(np.float32)
        if batch.anchors is not None and not torch.isnan(batch.anchors[i]).any():
            anchor = np.round((batch.anchors[i].numpy() + 0.5) / STRIDE - 0.5)
            near = np.clip(anchor + _ANCHOR_CELLS, 0, [gw - 1, gh - 1])
            cells = np.concatenate([near, cells])
        kp = (batch.keypoints[i][batch.visible[i]].numpy() + 0.5) / STRIDE - 0.5
        if len(kp):
            dist = np.linalg.norm(cells[:, None] - kp[None], axis=2).min(1)
            cells = np.concatenate([cells[dist >= min_cells], cells[dist < min_cells]])
        out[i] = (cells[:per_image] + 0.5) * STRIDE - 0.5
    return torch.from_numpy(out)


def ring_points(rng: np.random.Generator, batch: Batch, per_keypoint: int, radius=(1.5, 3.0)) -> torch.Tensor:
    """(B, K·per_keypoint, 2) pixel positions 1.5–3 cells from each visible keypoint and >= 1.5 cells from all of them.

    Positions that fail (invisible keypoint, too close to another keypoint, outside the crop) repeat a random-clutter
    position instead, so the tensor stays rectangular.
    """
    b, h, w = batch.images.shape[:3]
    k = batch.keypoints.shape[1]
    n = k * per_keypoint
    out = np.zeros((b, n, 2), np.float32)
    for i in range(b):
        kp = (batch.keypoints[i].numpy() + 0.5) / STRIDE - 0.5
        vis = batch.visible[i].numpy()
        ang = rng.uniform(0, 2 * np.pi, n)
        rad = rng.uniform(*radius, n)
        centre = np.repeat(kp, per_keypoint, axis=0)
        cells = centre + np.stack([np.cos(ang), np.sin(ang)], 1) * rad[:, None]
        ok = np.repeat(vis, per_keypoint) & (cells[:, 0] >= 0) & (cells[:, 1] >= 0)
        ok &= (cells[:, 0] <= w / STRIDE - 1) & (cells[:, 1] <= h / STRIDE - 1)
        if vis.any():
            ok &= np.linalg.norm(cells[:, None] - kp[vis][None], axis=2).min(1) >= radius[0]
        fallback = rng.uniform([0, 0], [w / STRIDE - 1, h / STRIDE - 1], (n, 2))
        cells = np.where(ok[:, None], cells, fallback)
        out[i] = (cells + 0.5) * STRIDE - 0.5
    return torch.from_numpy(out)


def hidden_peaks(feats: torch.Tensor, prototypes: torch.Tensor, batch: Batch, min_cells: float) -> torch.Tensor:
    """(N, D) the features where each hidden keypoint's prototype matches best in its crop, away from visible ones.

    feats: (B, D, h, w) unit features; prototypes: (K, D). A keypoint under an occluder, outside the crop or in an
    empty scene has no right answer anywhere in the crop, so its best match is a negative: these join the clutter
    term. Without it the model was never told that a covered keypoint is absent, and the best match, often the
    occluder's edge next to it, kept a keypoint-like feature (the first mouse model flagged 55 % of covered keypoints
    hidden). Cells within `min_cells` of a visible keypoint are skipped (they belong to it). They join the clutter
    term's samples (not the clutter bank) at the same weight as random clutter; a separate term with its own weight,
    or one that only forbade keypoint k ("not k"), confused the mouse's ears at the reduced budget (docs/MODEL.md).
    """
    b, d, h, w = feats.shape
    hidden = ~batch.visible  # (B, K)
    if not hidden.any():
        return feats.new_zeros((0, d))
    with torch.no_grad():
        sim = torch.einsum("bdhw,kd->bkhw", feats, prototypes)
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        cells = (batch.keypoints + 0.5) / STRIDE - 0.5  # (B, K, 2)
        dist = torch.sqrt(
            (xs[None, None] - cells[..., 0, None, None]) ** 2 + (ys[None, None] - cells[..., 1, None, None]) ** 2
        )
        near = ((dist < min_cells) & batch.visible[..., None, None]).any(1)  # (B, h, w)
        sim = sim.masked_fill(near[:, None], float("-inf"))
        idx = sim.flatten(2).argmax(2)  # (B, K)
    flat = feats.flatten(2)  # (B, D, h·w): gradients flow through the gathered features
    picked = flat.gather(2, idx[:, None, :].expand(b, d, idx.shape[1])).permute(0, 2, 1)  # (B, K, D)
    return picked[hidden]


def neighbour_mask(batch: Batch, radius_px: float) -> torch.Tensor:
    """(B, K, K) True where keypoint j is a visible neighbour of keypoint k (j ≠ k) within `radius_px`."""
    d = torch.cdist(batch.keypoints, batch.keypoints)
    k = d.shape[-1]
    close = (d < radius_px) & batch.visible[:, None, :] & ~torch.eye(k, dtype=torch.bool)
    return close


def coke_step(net, batch: Batch, rng, cfg: Config, kp_bank: KeypointBank, clutter_bank: ClutterBank):
    """Forward, loss; bank updates happen after the optimiser step (returned as a closure)."""
    c = cfg.coke
    feats = net(batch.images)
    kp_feats = sample_features(feats, batch.keypoints, STRIDE)  # (B, K, D)
    b, k = batch.visible.shape
    labels = torch.arange(k).expand(b, k)
    vis = batch.visible
    sel_feats, sel_labels = kp_feats[vis], labels[vis]
    if not kp_bank.initialised.all():
        kp_bank.update(sel_feats, sel_labels)
    radius = c.neighbour_radius * max(batch.images.shape[1:3])
    mask = neighbour_mask(batch, radius)[vis]
    mask = mask | ~kp_bank.initialised[None, :]
    mask[torch.arange(len(sel_labels)), sel_labels] = False
    cl_points = clutter_points(rng, batch, c.clutter_per_image, c.clutter_min_distance)
    if c.ring_per_keypoint:
        cl_points = torch.cat([cl_points, ring_points(rng, batch, c.ring_per_keypoint)], 1)
    cl_feats = sample_features(feats, cl_points, STRIDE).reshape(-1, feats.shape[1])
    negatives = cl_feats  # the clutter term's samples; only cl_feats go into the clutter bank
    if c.hidden_negatives and kp_bank.initialised.all():
        negatives = torch.cat([cl_feats, hidden_peaks(feats, kp_bank.prototypes, batch, c.clutter_min_distance)])
    loss, stats = coke_loss(
        sel_feats,
        sel_labels,
        mask,
        negatives,
        kp_bank.prototypes,
        clutter_bank.contents(),
        c.temperature,
        c.clutter_weight,
        c.clutter_loss_weight,
        c.clutter_pull,
    )
    if c.localise_weight > 0 and kp_bank.initialised.all():
        loc = localisation_loss(
            feats, kp_bank.prototypes, batch.keypoints, vis, STRIDE, c.temperature, c.localise_sigma
        )
        loss = loss + c.localise_weight * loc
        stats["loc"] = loc.item()

    if c.equivariance_weight > 0:
        eq = equivariance_term(net, batch, feats, rng, cfg)
        loss = loss + c.equivariance_weight * eq
        stats["eq"] = eq.item()

    def update_banks():
        kp_bank.update(sel_feats, sel_labels)
        clutter_bank.push(cl_feats)

    return loss, stats, update_banks


def equivariance_term(net, batch: Batch, feats: torch.Tensor, rng, cfg: Config) -> torch.Tensor:
    """The self-supervised term on the first `equivariance_share` of the batch's crops (rtkp.model.equivariance).

    Each crop gets a random warp (rotation within ±equivariance_rotation, the recipe's scale range, 10 % shift) and a
    brightness/contrast change; the warped copies go through the network once more.
    """
    c, a = cfg.coke, cfg.augment
    n = max(1, round(c.equivariance_share * len(batch.images)))
    size = tuple(batch.images.shape[2:0:-1])  # (width, height)
    warps = random_warps(rng, n, size, c.equivariance_rotation, tuple(a.scale), 0.1)
    gain = torch.from_numpy(rng.uniform(1 - a.contrast, 1 + a.contrast, (n, 1, 1, 1)).astype(np.float32))
    offset = torch.from_numpy(rng.uniform(-a.brightness, a.brightness, (n, 1, 1, 1)).astype(np.float32)) * 255
    warped = (warp_images(batch.images[:n], warps) * gain + offset).clamp(0, 255)
    points = grid_points(rng, n, size, c.equivariance_grid)
    return equivariance_loss(feats[:n], net(warped), points, apply_warps(points, warps), STRIDE, c.temperature)


def peak_decoding(cfg: Config) -> dict | None:
    """The manifest's "peak" entry: how the inference graph refines a similarity peak (rtkp.model.graph)."""
    if cfg.model.head == "coke" and cfg.coke.localise_weight > 0:
        return {"refine": "softargmax", "temperature": cfg.coke.temperature}
    return None


def flip_policy(names: list[str], cfg: Config) -> Config:
    """Print the flip pairs. With `auto`, flips stay on only when the names pair up into left/right sides.

    A horizontal flip that leaves a sided keypoint in place teaches the model that its sides are interchangeable
    (seen on a 13-keypoint animal set whose names used bare L/R: 30–56 % of left predictions nearer the right label),
    so names that look sided but have no counterpart turn flips off. Names with no sides at all turn them off too: a
    mirrored printed target or a mirrored side view shows the keypoints in an arrangement the camera never sees
    (an explicit `augment.flip_pairs: []` flips without swapping anything).
    """
    import dataclasses

    pairing = pair_sides(names)
    if cfg.augment.flip_pairs != "auto" or cfg.augment.flip == 0:
        return cfg
    print(f"rtkp train: {pairing.describe(names)}", file=sys.stderr)
    if pairing.unpaired:
        print(
            f"rtkp train: warning: {', '.join(pairing.unpaired)} look sided but have no counterpart: horizontal flips "
            "are off (name both sides, or set augment.flip_pairs to a list of [left, right] pairs)",
            file=sys.stderr,
        )
    elif not pairing.pairs:
        print(
            "rtkp train: no left/right keypoints: horizontal flips are off (augment.flip_pairs: [] flips anyway)",
            file=sys.stderr,
        )
    else:
        return cfg
    return dataclasses.replace(cfg, augment=dataclasses.replace(cfg.augment, flip=0.0))


def mine(net, maker: BatchMaker, cfg: Config, kp_bank: KeypointBank, rng: np.random.Generator) -> None:
    """Refresh the batch maker's hard negatives with the current network (rtkp.train.mining)."""
    head = cfg.model.head

    def score_maps(image: torch.Tensor) -> torch.Tensor:
        out = net(image)[0]
        if head == "coke":
            return torch.einsum("dhw,kd->khw", out, kp_bank.prototypes)
        return out

    if head == "coke" and not kp_bank.initialised.all():
        return
    net.eval()
    try:
        maker.hard.refresh(score_maps, maker, rng, cfg.augment.hard_frames)
    finally:
        net.train()


def heatmap_step(net, batch: Batch, cfg: Config):
    maps = net(batch.images)
    target = gaussian_targets(batch.keypoints, batch.visible, maps.shape[-2:], STRIDE, cfg.heatmap.sigma)
    loss = heatmap_loss(maps, target)
    return loss, {"mse": loss.item()}, lambda: None


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 2 % of the base rate."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(total - warmup, 1)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def _same_recipe(a: dict | None, b: dict) -> bool:
    """Configs equal up to train.steps and train.threads (which do not change what a step computes)."""
    if a is None:
        return False
    strip = lambda c: {**c, "train": {k: v for k, v in c["train"].items() if k not in ("steps", "threads")}}
    return strip(a) == strip(b)


def build_optimizer(net: KeypointNet, cfg: Config) -> torch.optim.Optimizer:
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
) -> dict | None:
    """Train and write the model folder `out`; returns its manifest (without evaluation figures).

    A checkpoint in `out/checkpoint` is resumed when `resume` and the config matches (`train.steps` may differ, so a
    run can be extended). `stop_after` ends this call after that many steps with a checkpoint and returns None (for
    time-sliced training on shared machines).
    """
    from tqdm import tqdm

    from rtkp.train.calibrate import calibrate_margins

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    cfg = flip_policy(data.keypoint_names, cfg)  # before the checkpoint check: the checkpoint holds this config
    k = len(data.keypoint_names)
    head = cfg.model.head
    net = KeypointNet(
        head, k, cfg.model.feature_dim, cfg.model.decoder_channels, cfg.model.backbone, cfg.model.pretrained
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
        if not _same_recipe(info.get("config"), cfg.to_dict()) or info.get("head") != head:
            raise ConfigError(f"{ckpt}: checkpoint was made with another config; use a new --out or --no-resume")
        start = info["step"]
    maker = BatchMaker(data, cfg)
    if start and info.get("hard_negatives"):
        maker.hard.points = [np.asarray(p, np.float32).reshape(-1, 2) for p in info["hard_negatives"]]
    steps = cfg.train.steps
    bar = tqdm(total=steps, initial=start, desc=f"train {head}", unit="step", disable=not progress, file=sys.stderr)
    t0 = time.perf_counter()
    last = {}
    end = steps if stop_after is None else min(steps, start + stop_after)
    for step in range(start, end):
        rng = np.random.default_rng([cfg.train.seed, step])
        if cfg.augment.hard_crop > 0 and step >= cfg.train.warmup_steps:
            # a resumed run continues with the hard negatives saved in the checkpoint, as an uninterrupted one would
            if (step - cfg.train.warmup_steps) % cfg.augment.hard_every == 0:
                mine(net, maker, cfg, kp_bank, np.random.default_rng([cfg.train.seed, step, 1]))
        batch = maker.draw(rng, cfg.train.batch_size)
        for g in optimizer.param_groups:
            g["lr"] = g["base_lr"] * lr_factor(step, steps, cfg.train.warmup_steps)
        if head == "coke":
            loss, stats, after = coke_step(net, batch, rng, cfg, kp_bank, clutter_bank)
        else:
            loss, stats, after = heatmap_step(net, batch, cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        after()
        last = {k: round(v, 4) for k, v in stats.items()}
        bar.set_postfix(loss=f"{loss.item():.3f}", **{k: f"{v:.3f}" for k, v in last.items()})
        bar.update(1)
        if (step + 1) % cfg.train.checkpoint_every == 0 or step + 1 == end:
            hard = [p.tolist() for p in maker.hard.points]
            extra = {"config": cfg.to_dict(), "head": head, "hard_negatives": hard}
            save_training_state(ckpt, step + 1, net, optimizer, banks, extra)
    bar.close()
    if end < steps:
        return None
    net.eval()
    prototypes = clutter = None
    if head == "coke":
        prototypes = kp_bank.prototypes.clone()
        clutter = clutter_bank.summary(cfg.coke.clutter_summary, seed=cfg.train.seed)
    margin, margins = calibrate_margins(net, maker, cfg, prototypes, clutter)
    manifest = {
        "head": head,
        "keypoint_names": data.keypoint_names,
        "skeleton": [list(p) for p in data.skeleton],
        "flip_pairs": [[data.keypoint_names[i], data.keypoint_names[j]] for i, j in maker.flip_pairs],
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
        "visibility_margin": margin,
        "visibility_margins": margins,
        "peak": peak_decoding(cfg),
        "prototypes": prototypes.tolist() if prototypes is not None else None,
        "clutter_summary": {"tensor": "clutter_summary", "shape": list(clutter.shape)} if clutter is not None else None,
        "training": dict(
            provenance or {},
            steps=steps,
            seconds=round(time.perf_counter() - t0, 1),
            final_loss=last,
            config=cfg.to_dict(),
        ),
    }
    save_model(out, net, manifest, prototypes, clutter)
    shutil.rmtree(ckpt, ignore_errors=True)
    return manifest
