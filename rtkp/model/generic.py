"""Generic features for keypoints taught from shots: ImageNet MobileNetV2, frozen, beside the trained network.

Why: a network trained to tell its labelled keypoints apart makes every other point of the animal look like clutter, so
a keypoint it was never trained on cannot be matched in its features (docs/FEWSHOT.md: the mouse's tail base, left out
of training and taught from 5 shots, reached 0.08 of the trained PCK@0.1). ImageNet features were never told that:
matched as a hypercolumn of unit taps at strides 8, 16 and 32, the same 5 shots found the tail base in 0.94 of the
validation frames. Training fine-tunes the backbone from layer 4 on (layers 0–3 stay frozen, rtkp.model.network.
KeypointNet.freeze_stem), which costs exactly those features (the trained backbone's own taps: 0.56), so the generic
taps come from a frozen ImageNet copy of layers 4–17 fed with the trained network's stride-4 tap (identical to
ImageNet's, the layers before it being frozen).

A prototype row is [trained part (D) | generic part (G)] (layout: rtkp.graphs.prototypes): a trained keypoint's
generic part is zero, so it scores exactly as without this module, and the graph variant that carries the branch is
only run while some keypoint in use has a generic part (the backends switch).
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
OUT_OF_REACH = 2.0  # subtracted from a taught keypoint's similarity beyond its reach (similarities span [-1, 1])


def within_reach(
    sim: torch.Tensor, trained: torch.Tensor, reach: torch.Tensor, stride: int, peaks: int = 1
) -> torch.Tensor:
    """Similarity maps with each taught keypoint kept near the keypoints the network was trained on.

    sim: (B, K, h, w); trained: (K,) bool, the rows that anchor (trained keypoints in use); reach: (K,) model-input
    px, > 0 for the rows it limits. The anchors are the `peaks` best local maxima of each trained row (several animals:
    one per animal) whose similarity reaches ANCHOR_SCORE; a limited row loses OUT_OF_REACH on every cell farther than
    its reach from all of them, so its peak stays on an animal (a keypoint taught from shots is matched on generic
    ImageNet features, and the arena holds look-alikes: on the reaching mouse, a spot 200 px from the paw).
    A frame with no anchor changes nothing (every cell loses the same). -> (B, K, h, w).
    """
    b, k, h, w = sim.shape
    flat = sim.reshape(b, k, h * w)
    local_max = sim >= F.max_pool2d(sim, 3, stride=1, padding=1)
    score, idx = torch.where(local_max, sim, sim - 4.0).reshape(b, k, h * w).topk(peaks, dim=2)  # (B, K, P)
    valid = (score >= ANCHOR_SCORE) & trained.view(1, k, 1)
    ay = torch.div(idx, w, rounding_mode="floor").to(sim.dtype)
    ax = (idx - torch.div(idx, w, rounding_mode="floor") * w).to(sim.dtype)
    ys = torch.arange(h, dtype=sim.dtype, device=sim.device).view(h, 1).expand(h, w).reshape(1, h * w, 1)
    xs = torch.arange(w, dtype=sim.dtype, device=sim.device).view(1, w).expand(h, w).reshape(1, h * w, 1)
    d2 = (xs - ax.reshape(b, 1, k * peaks)) ** 2 + (ys - ay.reshape(b, 1, k * peaks)) ** 2  # (B, h·w, K·P) cells²
    d2 = torch.where(valid.reshape(b, 1, k * peaks), d2, torch.full_like(d2, 1e12))
    nearest = d2.amin(dim=2)  # (B, h·w)
    limit = (reach / stride) ** 2  # (K,) cells²
    outside = (nearest.unsqueeze(1) > limit.view(1, k, 1)) & (reach > 0).view(1, k, 1)
    return (flat - OUT_OF_REACH * outside.to(sim.dtype)).reshape(b, k, h, w)
