"""Prototypes taken where inference looks (`coke.final_prototypes: frames`, an ablation; off by default): each
keypoint's mean unit feature at its labels on the whole training frames, computed with the final network.

During training the keypoint bank is a moving average (CoKe's) over augmented crops, half of them mirrored, and over
the network as it was during the last steps; inference matches whole, unmirrored frames with the final network.
Measured on the mouse's validation split, three trainings of the recipe, each network kept and only its prototypes
replaced: RMSE 3.18 / 3.63 / 3.11 → 3.10 / 3.41 / 3.05 px, evidence AUC 0.965 / 0.971 / 0.968 → 0.969 / 0.973 /
0.969 — smaller than the seeds' scatter of the difference allows to call a gain — and on the shipped model's test
frames RMSE 2.90 → 2.97 px. Not the default (docs/MODEL.md)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rtkp.geometry import Letterbox
from rtkp.model.loss import sample_features
from rtkp.model.network import STRIDE
from rtkp.train.batches import BatchMaker
from rtkp.train.calibrate import calibration_samples


@torch.no_grad()
def frame_prototypes(net, maker: BatchMaker, size: tuple[int, int], bank: torch.Tensor) -> torch.Tensor:
    """(K, D) unit prototypes: per keypoint, the normalised mean of `net`'s unit features at its labels on the
    training frames (calibration_samples: every frame, or 300 spread evenly; every animal of a frame), each frame
    letterboxed into `size` as the backends do. bank: (K, D) the training's prototypes, kept for a keypoint labelled
    in none of those frames."""
    sums = torch.zeros_like(bank)
    counts = torch.zeros(len(bank))
    for i in calibration_samples(maker):
        image = maker.images[i]
        box = Letterbox.fit(image.shape[1::-1], size)
        feats = net(torch.from_numpy(box.apply(image))[None]).float()  # (1, D, h, w)
        for j in (i, *maker.companions[i]):
            vis = torch.as_tensor(np.asarray(maker.visible[j], bool))
            if not vis.any():
                continue
            points = box.to_model(np.nan_to_num(np.asarray(maker.keypoints[j], np.float64)))
            f = sample_features(feats, torch.as_tensor(points, dtype=torch.float32)[None], STRIDE)[0]  # (K, D)
            sums[vis] += f[vis]
            counts[vis] += 1
    out = bank.clone().float()
    seen = counts > 0
    out[seen] = F.normalize(sums[seen], dim=1)
    return out
