"""The dense feature network shared by the CoKe model and the heatmap baseline.

backbone (MobileNetV2) -> hypercolumn decoder (stride 4) -> D channels. The CoKe head L2-normalises them per location;
the heatmap head adds a 1×1 convolution to K maps. Images enter as uint8 RGB and are normalised inside the network, so
exported graphs take camera frames as they come.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rtkp.model.backbone import TAP_CHANNELS, build_backbone
from rtkp.model.hypercolumn import HypercolumnDecoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STRIDE = 4
CENTRE_UNIT = 32.0  # the centre head predicts offsets in units of this many input px (outputs stay near ±3)


class CentreHead(nn.Module):
    """Several animals per frame: at every cell, the offset to the centre of the animal there.

    (B, C, h, w) merged hypercolumn -> (B, 2, h, w) (dx, dy) in input px. Read at a keypoint's peak it says which
    animal the peak belongs to (rtkp.model.peaks.coke_instance_peaks), as CenterNet-style pose models group their
    keypoints. It reads the hypercolumn, not the unit features, so the features stay what the prototypes match.
    """

    def __init__(self, channels: int, hidden: int = 64):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 2, 1),
        )

    def forward(self, merged: torch.Tensor) -> torch.Tensor:
        return self.layers(merged) * CENTRE_UNIT


class KeypointNet(nn.Module):
    """Dense features (CoKe) or heatmaps (baseline) from uint8 images.

    Args:
        head: "coke" (L2-normalised D-dim features) or "heatmap" (K maps).
        num_keypoints: K, used by the heatmap head.
        centre: add the centre head (multi-instance models, CoKe only).
        aux_heatmap: add a training-only 1×1 convolution from the unit features to K heatmaps (coke.heatmap_weight);
            its weights start with "aux_heatmap." and save_model leaves them out.
    """

    def __init__(
        self,
        head: str,
        num_keypoints: int,
        feature_dim: int = 128,
        decoder_channels: int = 96,
        backbone: str = "mobilenet_v2",
        pretrained: bool = True,
        centre: bool = False,
        aux_heatmap: bool = False,
    ):
        super().__init__()
        self.head = head
        self.backbone = build_backbone(backbone, pretrained)
        self.decoder = HypercolumnDecoder(list(TAP_CHANNELS.values()), decoder_channels, feature_dim)
        self.heatmap = nn.Conv2d(feature_dim, num_keypoints, 1) if head == "heatmap" else None
        self.centre = CentreHead(decoder_channels) if centre and head == "coke" else None
        # training only (coke.heatmap_weight): K heatmaps from the unit features; never saved with the model
        self.aux_heatmap = nn.Conv2d(feature_dim, num_keypoints, 1) if aux_heatmap and head == "coke" else None
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)

    def freeze_stem(self, upto: int = 3) -> None:
        """Freeze backbone layers 0..upto (parameters and BN statistics).

        The stride-2/4 layers dominate the cost of a backward pass at full resolution, and their ImageNet filters are
        generic; freezing them roughly halves a training step on the CPU.
        """
        for layer in self.backbone.features[: upto + 1]:
            for p in layer.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        """Backbone BatchNorm keeps its ImageNet statistics (small batches of crops would corrupt them)."""
        super().train(mode)
        for m in self.backbone.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, H, W, 3) uint8 RGB (or float 0..255).

        Returns (B, D, H/4, W/4) unit features (coke) or (B, K, H/4, W/4) heatmaps (heatmap).
        """
        return self.head_out(self.body(images))

    def body(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone and hypercolumn merge: (B, H, W, 3) -> (B, C, H/4, W/4), in the buffers' dtype."""
        return self.decoder.merge(self.taps(images))

    def taps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's stride 4/8/16/32 maps of (B, H, W, 3) images (rtkp.model.backbone), in the buffers' dtype."""
        # The buffers' dtype is the body's: float32, or float16 in the FP16 export.
        x = images.permute(0, 3, 1, 2).to(self.mean.dtype)
        x = (x - self.mean) / self.std
        return self.backbone(x)

    def with_centre(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(unit features (B, D, h, w), centre offsets (B, 2, h, w) input px) from one pass (multi-instance)."""
        merged = self.body(images).float()
        return self.head_out(merged), self.centre(merged)

    def head_out(self, merged: torch.Tensor) -> torch.Tensor:
        """Final projection to D channels, then unit features (coke) or K heatmaps (heatmap)."""
        feats = self.decoder.project(merged)
        if self.heatmap is not None:
            return self.heatmap(feats)
        return F.normalize(feats, dim=1)
