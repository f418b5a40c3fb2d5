"""From dense maps to keypoints: peak, sub-pixel refinement, visibility evidence. Pure torch ops that export to ONNX."""

from __future__ import annotations

import torch


def refine_peaks(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Arg-max of each map refined below the grid by a separable quadratic fit in its 3×3 neighbourhood (D2-Net style).

    maps: (B, K, h, w) -> (positions (B, K, 2) as (x, y) in grid cells, peak values (B, K)).
    A parabola through (−1, l), (0, c), (1, r) peaks at (r − l) / (2·(2c − l − r)); the offset is clamped to ±0.5 so
    refinement never leaves the winning cell. A quadratic in the score is a Gaussian in exp(score / T), the
    probability CoKe's softmax assigns, so the fit suits similarity maps directly and heatmaps in the log domain.
    """
    b, k, h, w = maps.shape
    flat = maps.reshape(b, k, h * w)
    idx = flat.argmax(dim=2)
    iy = torch.div(idx, w, rounding_mode="floor")
    ix = idx - iy * w

    def at(dy: int, dx: int) -> torch.Tensor:
        yy = (iy + dy).clamp(0, h - 1)
        xx = (ix + dx).clamp(0, w - 1)
        return flat.gather(2, (yy * w + xx).unsqueeze(2)).squeeze(2)

    c = at(0, 0)

    def offset(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        den = 2 * c - lo - hi
        safe = torch.where(den > 1e-9, den, torch.ones_like(den))
        off = torch.where(den > 1e-9, (hi - lo) / (2 * safe), torch.zeros_like(den))
        return off.clamp(-0.5, 0.5)

    dx = offset(at(0, -1), at(0, 1))
    dy = offset(at(-1, 0), at(1, 0))
    pos = torch.stack([ix.to(maps.dtype) + dx, iy.to(maps.dtype) + dy], dim=-1)
    return pos, c


def softargmax_peaks(
    maps: torch.Tensor, temperature: float, radius: int = 2, penalty: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Arg-max of each map refined by a local soft-argmax: the mean position under softmax(map / T) in the
    (2r+1)² window around the winning cell (cells outside the map excluded).

    maps: (B, K, h, w) -> (positions (B, K, 2) as (x, y) in grid cells, peak values (B, K)).
    CoKe's localisation loss (rtkp.model.loss.localisation_loss) trains softmax(similarity / T) over the crop to match
    a Gaussian around the label, so the window's expected position is the label: this reads the position the loss
    taught, with the same T. Unlike the 3×3 quadratic fit it cannot be pushed to a wrong cell by a near-tie.
    penalty: (B, K, h, w) subtracted to choose the winning cell (rtkp.model.generic.placement_penalty); the peak value
    is the penalised one, the window reads the maps themselves.
    """
    b, k, h, w = maps.shape
    flat = maps.reshape(b, k, h * w)
    ranked = flat if penalty is None else flat - penalty.reshape(b, k, h * w)
    idx = ranked.argmax(dim=2)
    iy = torch.div(idx, w, rounding_mode="floor")
    ix = idx - iy * w
    span = torch.arange(-radius, radius + 1, device=maps.device)
    dy = span.repeat_interleave(2 * radius + 1)  # (n,) window offsets, row-major
    dx = span.repeat(2 * radius + 1)
    yy = iy.unsqueeze(2) + dy  # (B, K, n)
    xx = ix.unsqueeze(2) + dx
    inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    vals = flat.gather(2, (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)))
    peak = vals[..., (dy.numel() - 1) // 2]
    logits = torch.where(inside, (vals - peak.unsqueeze(2)) / temperature, torch.full_like(vals, -1e4))
    weights = torch.softmax(logits, dim=2)
    x = (weights * xx.to(maps.dtype)).sum(2)
    y = (weights * yy.to(maps.dtype)).sum(2)
    if penalty is not None:
        peak = ranked.gather(2, idx.unsqueeze(2)).squeeze(2)
    return torch.stack([x, y], dim=-1), peak


def softargmax_at(
    flat: torch.Tensor, idx: torch.Tensor, size: tuple[int, int], temperature: float, radius: int = 2
) -> torch.Tensor:
    """softargmax_peaks around given cells: flat (B, K, h·w) maps, idx (B, K, P) cells -> (B, K, P, 2) (x, y) in
    grid cells, the mean position under softmax(map / T) in the (2r+1)² window around each cell."""
    h, w = size
    b, k, p = idx.shape
    iy = torch.div(idx, w, rounding_mode="floor")
    ix = idx - iy * w
    span = torch.arange(-radius, radius + 1, device=flat.device)
    dy = span.repeat_interleave(2 * radius + 1)  # (n,) window offsets, row-major
    dx = span.repeat(2 * radius + 1)
    n = dy.numel()
    yy = iy.unsqueeze(3) + dy  # (B, K, P, n)
    xx = ix.unsqueeze(3) + dx
    inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    cells = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).reshape(b, k, p * n)
    vals = flat.gather(2, cells).reshape(b, k, p, n)
    peak = vals[..., (n - 1) // 2]
    logits = torch.where(inside, (vals - peak.unsqueeze(3)) / temperature, torch.full_like(vals, -1e4))
    weights = torch.softmax(logits, dim=3)
    return torch.stack([(weights * xx.to(flat.dtype)).sum(3), (weights * yy.to(flat.dtype)).sum(3)], dim=-1)


def similarity(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each cell to each prototype: features (B, D, h, w) unit, prototypes (K, D) -> (B, K, h, w).

    One batched matrix product, (K, D) @ (B, D, h·w): exported as a MatMul, which ONNX Runtime runs as one GEMM. The
    same product written as an einsum ("bdhw,kd->bkhw") exported as an Einsum, profiled at 11.2 of the mouse graph's
    56 ms per 640×480 frame on this CPU (docs/BENCHMARKS.md); the graph has no Einsum left.
    """
    b, d, h, w = features.shape
    return torch.matmul(prototypes, features.reshape(b, d, h * w)).reshape(b, prototypes.shape[0], h, w)


def grid_to_pixels(pos: torch.Tensor, stride: int) -> torch.Tensor:
    """Grid-cell coordinates -> input pixel coordinates (cell centres at (j + 0.5)·s − 0.5)."""
    return (pos + 0.5) * stride - 0.5


def coke_keypoints(
    features: torch.Tensor,
    prototypes: torch.Tensor,
    clutter: torch.Tensor,
    stride: int,
    softargmax_temperature: float | None = None,
    active: torch.Tensor | None = None,
    sim: torch.Tensor | None = None,
    penalty: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CoKe inference.

    features: (B, D, h, w) unit features; prototypes: (K, D); clutter: (S, D) clutter summary; active: (K,) float32,
    1 for a prototype row in use and 0 for a free one (None: all in use).
    Returns (keypoints (B, K, 4) = x, y (input pixels), score, clutter_score; similarity maps (B, K, h, w)).
    score is the peak cosine similarity to the keypoint's prototype; clutter_score the best similarity of the feature
    at that peak to any clutter centre. softargmax_temperature: refine peaks by local soft-argmax at that temperature
    (models trained with the localisation loss), else by the 3×3 quadratic fit (older models). Each keypoint is
    decided on its own, which is what lets CoKe report some keypoints as occluded while keeping the others.
    sim: (B, K, h, w) the similarity maps when the caller computed them (the graph's generic variant adds the
    generic parts' similarity, rtkp.model.generic); by default similarity(features, prototypes). penalty: (B, K, h, w)
    what each cell loses when the peak is chosen (rtkp.model.generic.placement_penalty; the score includes it).
    A free row's prototype is zeroed (whatever the buffer holds) and its row reads score −1, clutter_score 1: evidence
    −2, below any margin, so a consumer that reads all K rows never sees a free one as visible.
    """
    b, d, h, w = features.shape
    if sim is None:
        masked = prototypes if active is None else prototypes * active.unsqueeze(1)
        sim = similarity(features, masked)
    if softargmax_temperature:
        pos, score = softargmax_peaks(sim, softargmax_temperature, penalty=penalty)
    else:
        pos, score = refine_peaks(sim if penalty is None else sim - penalty)
    k = prototypes.shape[0]
    flat_idx = (sim if penalty is None else sim - penalty).reshape(b, k, h * w).argmax(dim=2)
    feat_flat = features.reshape(b, d, h * w)
    peak_feat = feat_flat.gather(2, flat_idx.unsqueeze(1).expand(b, d, k))
    clutter_score = torch.matmul(clutter, peak_feat).amax(dim=1)  # (S, D) @ (B, D, K) -> (B, S, K) -> (B, K)
    if active is not None:
        on = active.unsqueeze(0) > 0.5  # (1, K)
        score = torch.where(on, score, torch.full_like(score, -1.0))
        clutter_score = torch.where(on, clutter_score, torch.ones_like(clutter_score))
    xy = grid_to_pixels(pos, stride)
    return torch.cat([xy, score.unsqueeze(-1), clutter_score.unsqueeze(-1)], dim=-1), sim


def heatmap_keypoints(maps: torch.Tensor, stride: int) -> torch.Tensor:
    """Heatmap baseline inference: (B, K, h, w) -> (B, K, 4) = x, y, peak value, 0.

    The baseline has no clutter evidence, so its clutter score is 0 and visibility is "peak > margin".
    """
    pos, _ = refine_peaks(torch.log(maps.clamp(min=1e-4)))
    peak = maps.flatten(2).amax(dim=2)
    xy = grid_to_pixels(pos, stride)
    return torch.cat([xy, peak.unsqueeze(-1), torch.zeros_like(peak).unsqueeze(-1)], dim=-1)


def coke_instance_peaks(
    features: torch.Tensor,
    centres: torch.Tensor,
    prototypes: torch.Tensor,
    clutter: torch.Tensor,
    stride: int,
    peaks: int,
    temperature: float,
    active: torch.Tensor | None = None,
    sim: torch.Tensor | None = None,
    penalty: torch.Tensor | None = None,
) -> torch.Tensor:
    """CoKe inference for several animals: the `peaks` best local maxima of each keypoint's similarity map.

    features: (B, D, h, w) unit features; centres: (B, 2, h, w) centre offsets in input px (rtkp.model.network.
    CentreHead); prototypes (K, D), clutter (S, D), active (K,), sim, penalty: as coke_keypoints (the maxima and
    their scores are the penalised map's, their refinement reads the similarity).
    Returns (B, K, P, 6) = x, y (input px, local soft-argmax at `temperature`), score, clutter_score, and the centre
    of the animal the peak belongs to (x, y input px: the peak plus the offset read at its cell), best peak first.
    Every animal is a local maximum of the same map (D2-Net's local-max detection); a 3×3 max-pool keeps the cells
    that are their neighbourhood's maximum. A map with fewer maxima fills the rest with its next-best cells, which
    read low scores; a free row reads score −1, clutter_score 1 as in coke_keypoints.
    """
    b, d, h, w = features.shape
    k = prototypes.shape[0]
    if sim is None:
        sim = similarity(features, prototypes if active is None else prototypes * active.unsqueeze(1))
    chosen = sim if penalty is None else sim - penalty
    local_max = chosen >= torch.nn.functional.max_pool2d(chosen, 3, stride=1, padding=1)
    ranked = torch.where(local_max, chosen, chosen - 4.0).reshape(b, k, h * w)  # non-maxima rank after every maximum
    _, idx = ranked.topk(peaks, dim=2)  # (B, K, P)
    flat = sim.reshape(b, k, h * w)
    score = chosen.reshape(b, k, h * w).gather(2, idx)
    pos = grid_to_pixels(softargmax_at(flat, idx, (h, w), temperature), stride)  # (B, K, P, 2)
    cells = idx.reshape(b, 1, k * peaks)
    peak_feat = features.reshape(b, d, h * w).gather(2, cells.expand(b, d, k * peaks))  # (B, D, K·P)
    clutter_score = torch.matmul(clutter, peak_feat).amax(dim=1).reshape(b, k, peaks)  # (B, S, K·P) -> (B, K, P)
    offset = centres.reshape(b, 2, h * w).gather(2, cells.expand(b, 2, k * peaks))  # (B, 2, K·P)
    centre = pos + offset.permute(0, 2, 1).reshape(b, k, peaks, 2)
    if active is not None:
        on = (active > 0.5).view(1, k, 1)
        score = torch.where(on, score, torch.full_like(score, -1.0))
        clutter_score = torch.where(on, clutter_score, torch.ones_like(clutter_score))
    return torch.cat([pos, score.unsqueeze(-1), clutter_score.unsqueeze(-1), centre], dim=-1)
