"""The inference module: uint8 images (+ prototypes and clutter summary as inputs) -> per-keypoint results.

This is the graph that is exported: the image enters as uint8, prototypes and clutter summary enter as inputs (so a
user can swap keypoints without re-exporting), and a few bytes per keypoint come out instead of the feature map.
"""

from __future__ import annotations

import torch
from torch import nn

from .decode import coke_keypoints, heatmap_keypoints
from .network import STRIDE, KeypointNet


class Predictor(nn.Module):
    """(B, H, W, 3) uint8 -> (B, K, 4) = (x, y, score, clutter_score) in model-input pixels.

    A keypoint is reported visible when score − clutter_score > margin (the margin lives in the manifest).
    """

    def __init__(self, net: KeypointNet):
        super().__init__()
        self.net = net

    def forward(
        self, images: torch.Tensor, prototypes: torch.Tensor | None = None, clutter: torch.Tensor | None = None
    ):
        out = self.net(images)
        if self.net.head == "heatmap":
            return heatmap_keypoints(out, STRIDE)
        return coke_keypoints(out, prototypes, clutter, STRIDE)[0]
