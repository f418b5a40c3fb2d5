"""CoKe's contrastive loss (WACV 2023, §3.2–3.3) and the heatmap baseline's MSE."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rtkp.model.peaks import softargmax_at


def sample_features(features: torch.Tensor, points: torch.Tensor, stride: int) -> torch.Tensor:
    """Bilinearly sample unit features at pixel positions.

    features: (B, D, h, w); points: (B, N, 2) input pixels (pixel-centre convention) -> (B, N, D), renormalised.
    Cell (i, j) of a stride-s map is centred on input pixel ((j + 0.5)·s − 0.5, (i + 0.5)·s − 0.5).
    """
    return F.normalize(sample_map(features, points, stride), dim=-1)


def sample_map(maps: torch.Tensor, points: torch.Tensor, stride: int) -> torch.Tensor:
    """Bilinearly sample (B, C, h, w) maps at (B, N, 2) input pixels -> (B, N, C) (sample_features' convention)."""
    h, w = maps.shape[-2:]
    grid = (points + 0.5) / stride - 0.5
    norm = torch.stack([grid[..., 0] / max(w - 1, 1), grid[..., 1] / max(h - 1, 1)], -1) * 2 - 1
    out = F.grid_sample(maps, norm.unsqueeze(2), mode="bilinear", align_corners=True).squeeze(-1)
    return out.permute(0, 2, 1)


def centre_loss(
    offsets: torch.Tensor,
    keypoints: torch.Tensor,
    visible: torch.Tensor,
    centres: torch.Tensor,
    stride: int,
    unit: float,
    jitter: torch.Tensor,
) -> torch.Tensor:
    """The centre head's loss: at every visible keypoint of every animal, the offset to that animal's centre.

    offsets: (B, 2, h, w) input px; keypoints (B, N, K, 2) and centres (B, N, 2) input px; visible (B, N, K);
    jitter: (B, N, K, 2) px added to the sampled positions (up to a cell), so that the cells around a peak, where the
    soft-argmax may land, point to the same centre. Smooth L1 in units of `unit` px.
    """
    if not visible.any():
        return offsets.new_zeros(())
    b, n, k, _ = keypoints.shape
    points = keypoints + jitter
    target = (centres[:, :, None, :] - points).reshape(b, n * k, 2)
    pred = sample_map(offsets, points.reshape(b, n * k, 2), stride)
    vis = visible.reshape(b, n * k)
    return F.smooth_l1_loss(pred[vis] / unit, target[vis] / unit)


def coke_loss(
    kp_features: torch.Tensor,
    kp_labels: torch.Tensor,
    neighbour_mask: torch.Tensor,
    clutter_features: torch.Tensor,
    prototypes: torch.Tensor,
    clutter_bank: torch.Tensor,
    temperature: float = 0.07,
    clutter_weight: float = 5e-3,
    clutter_loss_weight: float = 0.5,
    clutter_pull: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The contrastive loss.

    kp_features: (N, D) features at visible keypoints; kp_labels: (N,) their keypoint index;
    neighbour_mask: (N, K) True where prototype j must not serve as a negative (another keypoint within the radius);
    clutter_features: (M, D) background features sampled in this batch; prototypes: (K, D); clutter_bank: (Q, D).

    Keypoint term: cross-entropy over [f·θ_j / T]_j ∪ [f·c / T + log w]_c with the keypoint's own index as target.
    Clutter term: the same logits for background features, whose target is the clutter group as a whole
    (−log Σ_c softmax), which pushes background away from every prototype.
    Gradients reach only the features: prototypes and clutter bank are constants here.
    clutter_pull=False keeps the clutter term from pulling background features towards the bank's contents (the
    bank's logits are constants there too): background is only pushed away from the prototypes (tried for keypoints
    added from shots, which need unlabelled parts to keep features of their own: no gain, docs/FEWSHOT.md).
    """
    protos = prototypes.detach()
    bank = clutter_bank.detach()
    log_w = math.log(clutter_weight)
    stats = {}
    total = kp_features.new_zeros(())
    if len(kp_features):
        kp_logits = kp_features @ protos.T / temperature
        kp_logits = kp_logits.masked_fill(neighbour_mask, float("-inf"))
        logits = torch.cat([kp_logits, kp_features @ bank.T / temperature + log_w], 1)
        kp_term = F.cross_entropy(logits, kp_labels)
        total = total + kp_term
        stats["kp"] = kp_term.item()
    if len(clutter_features) and clutter_loss_weight > 0 and len(bank):
        term = clutter_term(clutter_features, protos, bank, temperature, clutter_weight, clutter_pull)
        total = total + clutter_loss_weight * term
        stats["clutter"] = term.item()
    return total, stats


def clutter_term(
    features: torch.Tensor,
    prototypes: torch.Tensor,
    clutter_bank: torch.Tensor,
    temperature: float,
    clutter_weight: float,
    clutter_pull: bool = True,
) -> torch.Tensor:
    """The contrastive loss's clutter term (coke_loss) alone: features (M, D) that must be clutter, as a group,
    against prototypes (K, D) and the clutter bank (Q, D) (both constants here) -> the mean of
    −log Σ_c softmax over [f·θ_j / T]_j ∪ [f·c / T + log w]_c."""
    kp_logits = features @ prototypes.detach().T / temperature
    cl_logits = features @ clutter_bank.detach().T / temperature + math.log(clutter_weight)
    if not clutter_pull:
        cl_logits = cl_logits.detach()
    all_logits = torch.cat([kp_logits, cl_logits], 1)
    return (torch.logsumexp(all_logits, 1) - torch.logsumexp(cl_logits, 1)).mean()


def localisation_loss(
    features: torch.Tensor,
    prototypes: torch.Tensor,
    keypoints: torch.Tensor,
    visible: torch.Tensor,
    stride: int,
    temperature: float,
    sigma: float,
) -> torch.Tensor:
    """Each prototype must match its keypoint's feature better than every other cell of the crop, with a peak shaped
    like a Gaussian of `sigma` cells around the sub-pixel label.

    features: (B, D, h, w) unit features; prototypes: (K, D) (a constant here, as in the contrastive loss);
    keypoints: (B, K, 2) input pixels; visible: (B, K) bool. Cross-entropy between softmax(f·θ_k / T) over the h·w
    cells and the normalised Gaussian, averaged over visible keypoints. Several animals per crop: keypoints
    (B, N, K, 2), visible (B, N, K); the target is the normalised sum of every visible animal's Gaussian, so that the
    map peaks at each of them (the graph reads them as local maxima).
    The contrastive loss leaves the cells next to a keypoint unconstrained (clutter is sampled 3+ cells away), which
    made the similarity peak flat over ~3×3 cells; this term shapes it, and rtkp.model.peaks.softargmax_peaks reads the
    position back with the same temperature.
    """
    if keypoints.dim() == 3:
        keypoints, visible = keypoints[:, None], visible[:, None]
    seen = visible.any(1)  # (B, K)
    if not seen.any():
        return features.new_zeros(())
    b, _, h, w = features.shape
    sim = torch.einsum("bdhw,kd->bkhw", features, prototypes.detach())[seen]  # (N, h, w)
    bn = keypoints.shape[0] * keypoints.shape[1]
    each = gaussian_targets(keypoints.flatten(0, 1), visible.flatten(0, 1), (h, w), stride, sigma)
    target = each.reshape(b, bn // b, *each.shape[1:]).sum(1)[seen]
    target = target / target.flatten(1).sum(1).clamp(min=1e-12)[:, None, None]
    logp = F.log_softmax(sim.flatten(1) / temperature, dim=1)
    return -(target.flatten(1) * logp).sum(1).mean()


def coordinate_loss(
    features: torch.Tensor,
    prototypes: torch.Tensor,
    keypoints: torch.Tensor,
    visible: torch.Tensor,
    stride: int,
    temperature: float,
    radius: int = 2,
) -> torch.Tensor:
    """The position the graph reads must be the label: the mean distance, in feature cells, between each visible
    keypoint's label and the local soft-argmax (rtkp.model.peaks.softargmax_at, the graph's decoding at the same T and
    window) around the label's cell.

    features: (B, D, h, w) unit features; prototypes: (K, D) (a constant here); keypoints (B, K, 2) or (B, N, K, 2)
    input pixels; visible (B, K) or (B, N, K) bool. With localisation_loss this is DSNT (Nibali et al. 2018): the
    Gaussian target shapes the peak, this term removes what the shaped peak still leaves between the decoded position
    and the label (an asymmetric peak reads off the label even when its cross-entropy is low).
    """
    if keypoints.dim() == 3:
        keypoints, visible = keypoints[:, None], visible[:, None]
    h, w = features.shape[-2:]
    grid = (keypoints + 0.5) / stride - 0.5  # (B, N, K, 2) cells
    inside = (grid[..., 0] > -0.5) & (grid[..., 0] < w - 0.5) & (grid[..., 1] > -0.5) & (grid[..., 1] < h - 0.5)
    use = visible & inside & torch.isfinite(grid).all(-1)
    if not use.any():
        return features.new_zeros(())
    cell = torch.nan_to_num(grid).round().long()
    cx, cy = cell[..., 0].clamp(0, w - 1), cell[..., 1].clamp(0, h - 1)
    idx = (cy * w + cx).permute(0, 2, 1)  # (B, K, N)
    sim = torch.einsum("bdhw,kd->bkhw", features, prototypes.detach()).flatten(2)  # (B, K, h·w)
    pos = softargmax_at(sim, idx, (h, w), temperature, radius).permute(0, 2, 1, 3)  # (B, N, K, 2)
    err = (pos - torch.nan_to_num(grid))[use]
    return torch.sqrt((err**2).sum(-1) + 1e-6).mean()


def gaussian_targets(points: torch.Tensor, visible: torch.Tensor, size: tuple[int, int], stride: int, sigma: float):
    """(B, K, h, w) Gaussian heatmaps (peak 1) at the visible keypoints; zero maps for the others.

    points: (B, K, 2) input pixels; sigma in feature cells.
    """
    h, w = size
    grid = (points + 0.5) / stride - 0.5
    ys = torch.arange(h, dtype=points.dtype).view(1, 1, h, 1)
    xs = torch.arange(w, dtype=points.dtype).view(1, 1, 1, w)
    d2 = (xs - grid[..., 0, None, None]) ** 2 + (ys - grid[..., 1, None, None]) ** 2
    return torch.exp(-d2 / (2 * sigma**2)) * visible[..., None, None].to(points.dtype)


def heatmap_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all maps, scaled by 1000 so the loss reads in convenient units."""
    return F.mse_loss(pred, target) * 1000
