"""Hypercolumn decoder: merge the stride 32/16/8/4 backbone maps at stride 4 (Thewlis-style hypercolumn, ICCV 2021).

Each tap gets a 1×1 lateral projection; the projections are upsampled to stride 4 and summed (a sum of 1×1 projections
is a 1×1 projection of the concatenated hypercolumn, without materialising it), then refined by one depthwise-separable
block and projected to D channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class HypercolumnDecoder(nn.Module):
    """[(B, C_i, H/s_i, W/s_i)] for s_i = 4, 8, 16, 32 -> (B, D, H/4, W/4) (not normalised)."""

    def __init__(self, in_channels: list[int], channels: int, out_dim: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.refine = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
            nn.Conv2d(channels, channels, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
            nn.Conv2d(channels, channels, 1),
            nn.ReLU(inplace=True),
        )
        self.project = nn.Conv2d(channels, out_dim, 1)

    def merge(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """The hypercolumn before the final projection: (B, C, H/4, W/4)."""
        size = feats[0].shape[-2:]
        x = self.lateral[0](feats[0])
        for lat, f in zip(self.lateral[1:], feats[1:]):
            x = x + F.interpolate(lat(f), size=size, mode="bilinear", align_corners=False)
        return self.refine(x)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.project(self.merge(feats))
