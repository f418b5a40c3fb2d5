"""One training step's loss for each head: CoKe (contrastive features against keypoint and clutter banks) and the
heatmap baseline.

A step returns (loss, stats, after): `after` runs once the optimiser has stepped (CoKe updates its banks there, with
the features of the batch that was just learned from).
"""

from __future__ import annotations

import numpy as np
import torch

from rtkp.config import Config
from rtkp.errors import ConfigError
from rtkp.model.banks import ClutterBank, KeypointBank
from rtkp.model.equivariance import apply_warps, equivariance_loss, grid_points, random_warps, warp_images
from rtkp.model.loss import (
    centre_loss,
    clutter_term,
    coke_loss,
    coordinate_loss,
    gaussian_targets,
    heatmap_loss,
    localisation_loss,
    sample_features,
)
from rtkp.model.network import CENTRE_UNIT, STRIDE
from rtkp.train.batches import Batch, clutter_points, ring_points


def hidden_peaks(
    feats: torch.Tensor, prototypes: torch.Tensor, batch: Batch, min_cells: float, spare_own: bool = False
) -> torch.Tensor:
    """(N, D) the features where each hidden keypoint's prototype matches best in its crop, away from visible ones.

    feats: (B, D, h, w) unit features; prototypes: (K, D). A keypoint under an occluder, outside the crop or in an
    empty scene has no right answer anywhere in the crop, so its best match is a negative: these join the clutter
    term. Without it the model was never told that a covered keypoint is absent, and the best match, often the
    occluder's edge next to it, kept a keypoint-like feature (the first mouse model flagged 55 % of covered keypoints
    hidden). Cells within `min_cells` of a visible keypoint are skipped (they belong to it); with `spare_own`, also
    the cells within `min_cells` of the hidden keypoint's own labelled position (under the occluder) for that
    keypoint. The recipe makes them a term of their own (coke.hidden_weight) for the last quarter of the budget
    (coke.hidden_from); from the start, or at twice the weight, that term cost precision, and joined to the clutter
    samples it separated less (docs/MODEL.md).
    """
    b, d, h, w = feats.shape
    all_kp, all_vis = batch.instances()  # several animals: a keypoint is hidden when no animal shows it
    hidden = ~all_vis.any(1)  # (B, K)
    if not hidden.any():
        return feats.new_zeros((0, d))
    with torch.no_grad():
        sim = torch.einsum("bdhw,kd->bkhw", feats, prototypes)
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        cells = (all_kp.flatten(1, 2) + 0.5) / STRIDE - 0.5  # (B, N·K, 2)
        dist = torch.sqrt(
            (xs[None, None] - cells[..., 0, None, None]) ** 2 + (ys[None, None] - cells[..., 1, None, None]) ** 2
        )
        near = ((dist < min_cells) & all_vis.flatten(1, 2)[..., None, None]).any(1)  # (B, h, w)
        skip = near[:, None].expand_as(sim)
        if spare_own:  # unlabelled (NaN) positions are near nothing
            skip = skip | (dist < min_cells).reshape(b, -1, prototypes.shape[0], h, w).any(1)
        sim = sim.masked_fill(skip, float("-inf"))
        idx = sim.flatten(2).argmax(2)  # (B, K)
    flat = feats.flatten(2)  # (B, D, h·w): gradients flow through the gathered features
    picked = flat.gather(2, idx[:, None, :].expand(b, d, idx.shape[1])).permute(0, 2, 1)  # (B, K, D)
    return picked[hidden]


def neighbour_mask(keypoints: torch.Tensor, visible: torch.Tensor, radius_px: float) -> torch.Tensor:
    """keypoints (B, K, 2), visible (B, K) -> (B, K, K) True where keypoint j is a visible neighbour of keypoint k
    (j ≠ k) within `radius_px` (on the same animal)."""
    d = torch.cdist(keypoints, keypoints)
    k = d.shape[-1]
    close = (d < radius_px) & visible[:, None, :] & ~torch.eye(k, dtype=torch.bool)
    return close


def coke_step(
    net, batch: Batch, rng, cfg: Config, kp_bank: KeypointBank, clutter_bank: ClutterBank, progress: float = 1.0
):
    """Forward, loss; bank updates happen after the optimiser step (returned as a closure).

    progress: the share of the budget done before this step (schedules of terms that start later).
    """
    c = cfg.coke
    several = batch.centres is not None
    feats, offsets = net.with_centre(batch.images) if several else (net(batch.images), None)
    # every animal's keypoints are positives of their keypoint (one animal: N = 1)
    all_kp, all_vis = batch.instances()  # (B, N, K, 2), (B, N, K)
    b, n, k = all_vis.shape
    kp_feats = sample_features(feats, all_kp.reshape(b, n * k, 2), STRIDE)  # (B, N·K, D)
    labels = torch.arange(k).repeat(n).expand(b, n * k)
    vis = all_vis.reshape(b, n * k)
    sel_feats, sel_labels = kp_feats[vis], labels[vis]
    if not kp_bank.initialised.all():
        kp_bank.update(sel_feats, sel_labels)
    radius = c.neighbour_radius * max(batch.images.shape[1:3])
    mask = neighbour_mask(all_kp.reshape(b * n, k, 2), all_vis.reshape(b * n, k), radius).reshape(b, n * k, k)[vis]
    mask = mask | ~kp_bank.initialised[None, :]
    mask[torch.arange(len(sel_labels)), sel_labels] = False
    cl_points = clutter_points(rng, batch, c.clutter_per_image, c.clutter_min_distance)
    if c.ring_per_keypoint:
        cl_points = torch.cat([cl_points, ring_points(rng, batch, c.ring_per_keypoint)], 1)
    cl_feats = sample_features(feats, cl_points, STRIDE).reshape(-1, feats.shape[1])
    negatives = cl_feats  # the clutter term's samples; only cl_feats go into the clutter bank
    hidden = None  # the hidden keypoints' best matches, when they form a term of their own at this step
    if c.hidden_negatives and kp_bank.initialised.all() and (c.hidden_weight == 0 or progress >= c.hidden_from):
        peaks = hidden_peaks(feats, kp_bank.prototypes, batch, c.clutter_min_distance, c.hidden_spare_own)
        if c.hidden_weight == 0:
            negatives = torch.cat([cl_feats, peaks])
        else:
            hidden = peaks
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
    if hidden is not None and len(hidden) and clutter_bank.filled:
        # the contrastive loss's clutter term on the hidden keypoints' best matches alone (it needs a clutter group:
        # on the first step, with an empty bank, it would read −log 0 and turn the weights to NaN)
        term = clutter_term(
            hidden, kp_bank.prototypes, clutter_bank.contents(), c.temperature, c.clutter_weight, c.clutter_pull
        )
        loss = loss + c.hidden_weight * term
        stats["hidden"] = term.item()
    if c.localise_weight > 0 and kp_bank.initialised.all():
        loc_vis = all_vis
        if not c.localise_flipped and batch.flipped is not None:  # mirrored crops teach the mirrored convention
            loc_vis = all_vis & ~batch.flipped.view(-1, *([1] * (all_vis.dim() - 1)))
        loc = localisation_loss(feats, kp_bank.prototypes, all_kp, loc_vis, STRIDE, c.temperature, c.localise_sigma)
        loss = loss + c.localise_weight * loc
        stats["loc"] = loc.item()
    if c.coordinate_weight > 0 and kp_bank.initialised.all():
        coord = coordinate_loss(feats, kp_bank.prototypes, all_kp, all_vis, STRIDE, c.temperature)
        loss = loss + c.coordinate_weight * coord
        stats["coord"] = coord.item()
    if c.heatmap_weight > 0:
        if net.aux_heatmap is None:
            raise ConfigError("coke.heatmap_weight > 0 needs a network built with aux_heatmap=True (rtkp.train.loop)")
        aux = auxiliary_heatmap_loss(net.aux_heatmap(feats), all_kp, all_vis, cfg.heatmap.sigma)
        loss = loss + c.heatmap_weight * aux
        stats["heatmap"] = aux.item()
    if several:
        jitter = torch.from_numpy(rng.uniform(-STRIDE, STRIDE, tuple(all_kp.shape)).astype(np.float32))
        ctr = centre_loss(offsets, all_kp, all_vis, batch.centres, STRIDE, CENTRE_UNIT, jitter)
        loss = loss + ctr
        stats["centre"] = ctr.item()

    if c.equivariance_weight > 0:
        eq = equivariance_term(net, batch, feats, rng, cfg)
        loss = loss + c.equivariance_weight * eq
        stats["eq"] = eq.item()

    def update_banks():
        kp_bank.update(sel_feats, sel_labels)
        clutter_bank.push(cl_feats)

    return loss, stats, update_banks


def auxiliary_heatmap_loss(maps: torch.Tensor, keypoints: torch.Tensor, visible: torch.Tensor, sigma: float):
    """The heatmap baseline's loss on the auxiliary maps: maps (B, K, h, w); keypoints (B, N, K, 2) input px, visible
    (B, N, K); the target at each cell is the highest of the animals' Gaussians (hidden keypoints: zero maps)."""
    b, n, k, _ = keypoints.shape
    each = gaussian_targets(keypoints.flatten(0, 1), visible.flatten(0, 1), maps.shape[-2:], STRIDE, sigma)
    target = each.reshape(b, n, k, *maps.shape[-2:]).amax(1)
    return heatmap_loss(maps, torch.nan_to_num(target))


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


def heatmap_step(net, batch: Batch, cfg: Config):
    """MSE against Gaussian targets at the visible keypoints (the baseline head); nothing to update afterwards."""
    maps = net(batch.images)
    target = gaussian_targets(batch.keypoints, batch.visible, maps.shape[-2:], STRIDE, cfg.heatmap.sigma)
    loss = heatmap_loss(maps, target)
    return loss, {"mse": loss.item()}, lambda: None
