"""Generic features for keypoints taught from shots: ImageNet MobileNetV2, frozen, beside the trained network.

Why: a network trained to tell its labelled keypoints apart makes every other point of the animal look like clutter, so
a keypoint it was never trained on cannot be matched in its features (docs/FEWSHOT.md: the mouse's tail base, left out
of training and taught from 5 shots, reached 0.08 of the trained PCK@0.1). ImageNet features were never told that:
matched as a hypercolumn of unit taps at strides 8, 16 and 32, the same 5 shots found the tail base in 0.94 of the
validation frames. Training fine-tunes the backbone from layer 4 on (layers 0–3 stay frozen, rtkp.model.network.
KeypointNet.freeze_stem), which costs exactly those features (the trained backbone's own taps: 0.56), so the generic
taps come from a frozen ImageNet copy of layers 4–17 fed with the trained network's stride-4 tap (identical to
ImageNet's, the layers before it being frozen).

A prototype row is [trained part (D) | generic part (G) | reach | rings | axis] (layout: rtkp.graphs.prototypes): a
trained keypoint's generic part and the rest are zero, so it scores exactly as without this module, and the graph
variant that carries the branch is only run while some keypoint in use has a generic part (the backends switch).
placement_penalty keeps a taught keypoint where its shots put it relative to the trained keypoints found in the frame.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from rtkp.model.backbone import TAP_CHANNELS, build_backbone

# backbone layers whose outputs are the generic taps (strides 8, 16, 32); layer 3's (stride 4) came out no better on
# validation (docs/FEWSHOT.md) and is left out
GENERIC_TAPS = (6, 13, 17)
GENERIC_CHANNELS = tuple(TAP_CHANNELS[i] for i in GENERIC_TAPS)  # (32, 96, 320): must match rtkp.graphs.prototypes
FIRST_LAYER = 4  # the branch starts after the frozen stem (layers 0–3)


class GenericBranch(nn.Module):
    """(B, 24, H/4, W/4) the trained network's stride-4 tap -> [(B, C_t, H/s_t, W/s_t)] unit ImageNet taps.

    Each tap is centred on its frame's mean (per channel) before it is normalised: ImageNet activations are ReLU
    outputs, all positive, so two arbitrary cells' cosine is high (0.3–0.6) and a taught keypoint scored almost as
    well everywhere; centred, the cosine measures what sets a cell apart in its frame (validation, tail base: PCK@0.1
    from 3 shots 0.89 → 0.94, 1 and 5 shots unchanged)."""

    def __init__(self):
        super().__init__()
        layers = build_backbone("mobilenet_v2", pretrained=True).features[FIRST_LAYER:]
        self.layers = copy.deepcopy(layers).eval()
        for p in self.layers.parameters():
            p.requires_grad_(False)

    def forward(self, stem: torch.Tensor) -> list[torch.Tensor]:
        x, taps = stem, []
        for i, layer in enumerate(self.layers, start=FIRST_LAYER):
            x = layer(x)
            if i in GENERIC_TAPS:
                t = x.float()
                taps.append(F.normalize(t - t.mean((2, 3), keepdim=True), dim=1))
        return taps


def generic_similarity(taps: list[torch.Tensor], prototypes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Similarity of each cell to each prototype's generic part: taps from GenericBranch, prototypes (K, G) (the
    concatenated parts per tap, weights folded in) -> (B, K, h, w) at `size` (h, w).

    Matched at each tap's own resolution, then upsampled: bilinear upsampling is linear, so this equals matching the
    upsampled taps (generic_features) at a fraction of the cost.
    """
    out, start = None, 0
    for tap in taps:
        b, c, th, tw = tap.shape
        part = prototypes[:, start : start + c]
        start += c
        sim = torch.matmul(part, tap.reshape(b, c, th * tw)).reshape(b, part.shape[0], th, tw)
        sim = F.interpolate(sim, size=size, mode="bilinear", align_corners=False)
        out = sim if out is None else out + sim
    return out


def generic_features(taps: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """The taps upsampled to `size` and concatenated: (B, G, h, w), what a prototype's generic part is matched
    against (teaching reads it at the clicked points)."""
    return torch.cat([F.interpolate(t, size=size, mode="bilinear", align_corners=False) for t in taps], 1)


ANCHOR_SCORE = 0.5  # a trained keypoint's peak anchors taught ones when its similarity reaches this (must match
# rtkp.graphs.prototypes.ANCHOR_SCORE, which teaching reads)
# ... and its evidence (similarity − best clutter similarity at the peak) this: a covered keypoint's peak lands
# somewhere, often with a fair similarity; anchoring on it moved taught keypoints whenever another was covered
ANCHOR_EVIDENCE = 0.0
OUT_OF_REACH = 2.0  # subtracted from a taught keypoint's similarity beyond its reach (similarities span [-1, 1])
# subtracted for each ring a cell is off: half the similarity span of a taught keypoint's peak over its look-alikes,
# so a cell at the right distances wins over a better-scoring one at the wrong distances unless that one scores far
# higher; set beforehand, not tuned (docs/FEWSHOT.md)
OFF_RING = 0.5


def placement_penalty(
    sim: torch.Tensor,
    trained: torch.Tensor,
    reach: torch.Tensor,
    stride: int,
    peaks: int = 1,
    rings: torch.Tensor | None = None,
    features: torch.Tensor | None = None,
    clutter: torch.Tensor | None = None,
) -> torch.Tensor:
    """What each cell loses for a taught keypoint to be kept where its shots put it relative to the trained keypoints.

    sim: (B, K, h, w); trained: (K,) bool, the rows that anchor (trained keypoints in use); reach: (K,) model-input
    px, > 0 for the rows it limits; rings: (K, R·3 + 4) per row R × (anchor row, distance px, tolerance px),
    tolerance 0 for none, then its axis (row a, row b, their distance in the shots px, side; rtkp.graphs.prototypes).
    The anchors are the `peaks` best local maxima of each trained row (several animals: one per animal) whose
    similarity reaches ANCHOR_SCORE and, given the trained features (B, D, h, w) and clutter summary (S, D), whose
    evidence reaches ANCHOR_EVIDENCE (a covered keypoint anchors nothing).
      reach: a limited row loses OUT_OF_REACH on every cell farther than its reach from all anchors, so its peak stays
        on an animal (a keypoint taught from shots is matched on generic ImageNet features, and the arena holds
        look-alikes: on the reaching mouse, a spot 200 px from the paw).
      rings: a cell loses OFF_RING for each ring whose anchor is found but none of whose peaks lies at the ring's
        distance ± tolerance from it, both scaled by the animal's size now against the shots' (off_rings), and
        OFF_RING more on the other side of its axis than the shots. Generic features do not tell a left ear from a
        right one, nor one fly leg from another; distances to trained keypoints and a side do (the mouse's left ear
        from 5 shots: 6 of its 9 test misses landed on or beside the trained right ear).
    An anchor not found changes nothing (every cell loses the same). The penalty chooses the peak; the peak's position
    is refined on the similarity itself (rtkp.model.peaks), so a ring's edge never pulls it. -> (B, K, h, w) ≥ 0.
    """
    b, k, h, w = sim.shape
    local_max = sim >= F.max_pool2d(sim, 3, stride=1, padding=1)
    score, idx = torch.where(local_max, sim, sim - 4.0).reshape(b, k, h * w).topk(peaks, dim=2)  # (B, K, P)
    valid = (score >= ANCHOR_SCORE) & trained.view(1, k, 1)
    if features is not None and clutter is not None:
        d = features.shape[1]
        at = features.reshape(b, d, h * w).gather(2, idx.reshape(b, 1, k * peaks).expand(b, d, k * peaks))
        clutter_score = torch.matmul(clutter, at).amax(dim=1).reshape(b, k, peaks)  # (B, K, P)
        valid = valid & (score - clutter_score >= ANCHOR_EVIDENCE)
    ay = torch.div(idx, w, rounding_mode="floor").to(sim.dtype)
    ax = (idx - torch.div(idx, w, rounding_mode="floor") * w).to(sim.dtype)
    ys = torch.arange(h, dtype=sim.dtype, device=sim.device).view(h, 1).expand(h, w).reshape(1, h * w, 1)
    xs = torch.arange(w, dtype=sim.dtype, device=sim.device).view(1, w).expand(h, w).reshape(1, h * w, 1)
    ex, ey = xs - ax.reshape(b, 1, k * peaks), ys - ay.reshape(b, 1, k * peaks)
    d2 = ex * ex + ey * ey  # (B, h·w, K·P) cells²
    d2 = torch.where(valid.reshape(b, 1, k * peaks), d2, torch.full_like(d2, 1e12))
    nearest = d2.amin(dim=2)  # (B, h·w)
    limit = (reach / stride) ** 2  # (K,) cells²
    outside = (nearest.unsqueeze(1) > limit.view(1, k, 1)) & (reach > 0).view(1, k, 1)
    penalty = OUT_OF_REACH * outside.to(sim.dtype)
    if rings is not None:
        penalty = penalty + OFF_RING * off_rings(d2, valid, ax, ay, xs, ys, rings, stride, peaks)
    return penalty.reshape(b, k, h, w)


def off_rings(
    d2: torch.Tensor,
    valid: torch.Tensor,
    ax: torch.Tensor,
    ay: torch.Tensor,
    xs: torch.Tensor,
    ys: torch.Tensor,
    rings: torch.Tensor,
    stride: int,
    peaks: int,
) -> torch.Tensor:
    """How many of each row's rings (and its side) each cell is off (placement_penalty): d2 (B, h·w, K·P) cells² from
    every cell to every anchor peak, valid (B, K, P) the peaks found, ax, ay (B, K, P) their cells, xs, ys (1, h·w, 1)
    the cells', rings (K, R·3 + 4), peaks P -> (B, K, h·w).

    The rings' distances were measured in the shots; the animal may be nearer the camera now. Its scale is the
    distance between the row's two axis keypoints now against the same distance in the shots; 1 when either is not
    found or the scale was not measured. Their peaks are grid cells, so the scale is known to about one cell over that
    distance, and a ring's tolerance grows by its distance times that (a tail base 100 px from ears 18 px apart:
    ± 22 px more). The side: a cell on the other side of the line from axis keypoint a to b than the shots is off by
    one more. Several animals: each cell is read against the animal whose a is nearest it, with the b whose distance
    from that a is nearest the shots' (its axis, its scale).
    """
    b, n, _ = d2.shape
    k = rings.shape[0]
    p = peaks  # a Python int: the graph's shapes follow it
    axis_rows = rings[:, -4:-2].round().long().clamp(0, k - 1)  # (K, 2)
    bar, side = rings[:, -2], rings[:, -1]  # (K,) px between them in the shots (0: not measured); ±1 or 0
    rings = rings[:, :-4].reshape(k, -1, 3)
    r = rings.shape[1]
    row = rings[..., 0].round().long().clamp(0, k - 1)  # (K, R) the anchor rows
    found = valid.index_select(1, row.reshape(k * r)).reshape(b, k, r, p).to(d2.dtype)  # (B, K, R, P)
    # the axis: for each peak of a (one per animal), the found peak of b at the distance nearest the shots' (not the
    # nearest peak: two flies side by side put one's head nearer the other's abdomen than its own)
    pick = lambda t, i: t.index_select(1, axis_rows[:, i]).reshape(b, k, p)  # noqa: E731  (B, K, P) of a or b
    a_x, a_y, b_x, b_y = pick(ax, 0), pick(ay, 0), pick(ax, 1), pick(ay, 1)
    gx, gy = a_x.unsqueeze(3) - b_x.unsqueeze(2), a_y.unsqueeze(3) - b_y.unsqueeze(2)
    both = pick(valid, 0).unsqueeze(3) & pick(valid, 1).unsqueeze(2)
    gaps = torch.where(both, (gx * gx + gy * gy).sqrt(), torch.full_like(gx, 1e6))  # (B, K, P, P) cells
    bar_cells = (bar / stride).clamp(min=1e-6).view(1, k, 1)
    partner = (gaps - bar_cells.unsqueeze(3)).abs().argmin(dim=3, keepdim=True)  # (B, K, P, 1)
    gap = gaps.gather(3, partner).squeeze(3)  # (B, K, P) cells
    known = both.any(3) & (bar > 0).view(1, k, 1)  # (B, K, P)
    scale = torch.where(known, gap / bar_cells, torch.ones_like(gap))  # (B, K, P) each animal's size against the shots'
    # the scale is measured to about a cell over the axis's length: a ring that far out widens by as much
    unsure = torch.where(known, 1 / bar_cells, torch.zeros_like(gap))  # (B, K, P)
    bx_for_a = b_x.gather(2, partner.squeeze(3))  # (B, K, P) the partner b of each a peak
    by_for_a = b_y.gather(2, partner.squeeze(3))
    if p == 1:
        # one animal: every cell reads it; (B, 1, K) broadcasts over the cells (the per-cell gathers below cost a
        # single-animal graph a fifth of its time)
        at = lambda t: t.reshape(b, 1, k)  # noqa: E731
    else:
        # each cell is read against the animal whose a is nearest it
        to_a = d2.reshape(b, n, k, p).index_select(2, axis_rows[:, 0])  # (B, h·w, K, P) cells² to a's peaks
        nearest = to_a.argmin(dim=3, keepdim=True)  # (B, h·w, K, 1)
        at = lambda t: t.unsqueeze(1).expand(b, n, k, p).gather(3, nearest).squeeze(3)  # noqa: E731  (B, h·w, K)
    cell_scale, cell_unsure = at(scale), at(unsure)
    centre = rings[..., 1].view(1, 1, k, r) * cell_scale.unsqueeze(3) / stride  # (B, h·w, K, R) cells
    tol = rings[..., 2].view(1, 1, k, r) + rings[..., 1].view(1, 1, k, r) * cell_unsure.unsqueeze(3)
    tol = tol * cell_scale.unsqueeze(3) / stride
    # from each cell to each ring's anchor peaks, from their cells (a gather of d2's columns cost 14 ms a frame)
    rx = ax.index_select(1, row.reshape(k * r)).reshape(b, 1, k, r, p)
    ry = ay.index_select(1, row.reshape(k * r)).reshape(b, 1, k, r, p)
    ex, ey = xs.view(1, n, 1, 1, 1) - rx, ys.view(1, n, 1, 1, 1) - ry
    dist = (ex * ex + ey * ey).sqrt()  # (B, h·w, K, R, P) cells (x * x: ONNX Runtime's Pow is several times slower)
    near = ((dist - centre.unsqueeze(4)).abs() <= tol.unsqueeze(4)).to(d2.dtype)
    near = near * found.unsqueeze(1)  # (B, h·w, K, R, P)
    on = (rings[..., 2] > 0).to(d2.dtype).view(1, 1, k, r)
    # off a ring: the ring is on, its anchor found (some peak), and no found peak at the ring's distance
    off = (on * found.amax(dim=3).unsqueeze(1) * (1 - near.amax(dim=4))).sum(dim=3)  # (B, h·w, K)
    # the side of that animal's line a → b
    ox, oy, bx, by = at(a_x), at(a_y), at(bx_for_a), at(by_for_a)
    cross = (bx - ox) * (ys - oy) - (by - oy) * (xs - ox)  # (B, h·w, K) (b − a) × (cell − a)
    sided = (side != 0).view(1, 1, k) & at(known.to(d2.dtype)).bool()
    off = off + (sided & (cross * side.view(1, 1, k) < 0)).to(d2.dtype)
    return off.permute(0, 2, 1)  # (B, K, h·w)
