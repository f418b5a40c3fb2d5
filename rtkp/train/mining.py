"""Hard negatives mined on whole training frames, so that training crops visit the background the model confuses.

Training runs on crops around the object (cheap), but inference runs on the whole frame, where every background cell
competes with the keypoint for the arg-max. Measured on the first mouse model: on a video of another session the
tailbase was parked on the arena's corner (score 0.97) whenever the mouse's pose was unusual: random background crops
rarely visit that corner. Every `every` steps the miner runs the current network on a few whole training frames (at
the scale the model sees them), takes the background cells that score highest against any keypoint (excluding a
neighbourhood of the labelled keypoints), and the batch maker centres a share of the crops on them; there they are
sampled as clutter (CoKe) or get zero targets (heatmap baseline). Frames of the training split only.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rtkp.config import Config
from rtkp.model.banks import KeypointBank
from rtkp.model.network import STRIDE


def model_view(image: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) image at the scale the model sees it, in whole multiples of 32 -> (resized, (sx, sy) per-axis)."""
    import cv2

    h, w = image.shape[:2]
    nw, nh = max(32, int(round(w * scale / 32)) * 32), max(32, int(round(h * scale / 32)) * 32)
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA), np.array([nw / w, nh / h])


class HardNegatives:
    """Per training image, up to `per_image` source-pixel positions (N, 2) of its most confusing background cells."""

    def __init__(self, images: int, per_image: int = 4, min_cells: float = 3.0):
        self.points: list[np.ndarray] = [np.zeros((0, 2), np.float32) for _ in range(images)]
        self.per_image = per_image
        self.min_cells = min_cells

    def has(self, i: int) -> bool:
        return len(self.points[i]) > 0

    def pick(self, rng: np.random.Generator, i: int) -> np.ndarray:
        """One of image i's hard negatives (2,) in source pixels."""
        return self.points[i][rng.integers(len(self.points[i]))]

    @torch.no_grad()
    def refresh(self, score_maps, maker, rng: np.random.Generator, frames: int) -> None:
        """Re-mine `frames` random training images.

        score_maps: (1, H, W, 3) uint8 -> (K, h, w) per-keypoint scores at stride 4 (CoKe similarities to the
        prototypes, or heatmaps); maker: the BatchMaker holding images, labels and per-image scales.
        """
        for i in rng.choice(len(maker.images), min(frames, len(maker.images)), replace=False):
            resized, (sx, sy) = model_view(maker.images[i], maker.scales[i])
            maps = score_maps(torch.from_numpy(resized)[None]).float()  # (K, gh, gw)
            best = maps.amax(0)
            gh, gw = best.shape
            # background only: cells near any labelled keypoint are the keypoints' business
            kp = maker.labelled_points(i)  # every animal of the frame: another one's keypoints are no negatives
            if len(kp):
                cells = (kp * np.array([sx, sy]) + 0.5) / STRIDE - 0.5
                yy, xx = np.mgrid[:gh, :gw]
                d = np.sqrt((xx[..., None] - cells[:, 0]) ** 2 + (yy[..., None] - cells[:, 1]) ** 2).min(-1)
                best = best.masked_fill(torch.from_numpy(d < self.min_cells * 2), float("-inf"))
            # local maxima (3×3) so that one bright blob gives one point, not its neighbours
            peaks = best == F.max_pool2d(best[None, None], 3, 1, 1)[0, 0]
            vals = torch.where(peaks & torch.isfinite(best), best, torch.full_like(best, float("-inf"))).flatten()
            top = vals.topk(min(self.per_image, len(vals))).indices
            top = top[torch.isfinite(vals[top])].numpy()
            gy, gx = np.divmod(top, gw)
            px = (np.stack([gx, gy], 1) + 0.5) * STRIDE - 0.5  # resized-image pixels
            self.points[i] = ((px + 0.5) / np.array([sx, sy]) - 0.5).astype(np.float32)


def mine(net, maker, cfg: Config, kp_bank: KeypointBank, rng: np.random.Generator) -> None:
    """Refresh the batch maker's hard negatives (maker.hard, rtkp.train.batches.BatchMaker) with the current network.

    CoKe scores a cell by its similarity to each prototype, so it waits until every prototype has been seen once.
    """
    head = cfg.model.head

    def score_maps(image: torch.Tensor) -> torch.Tensor:
        out = net(image)[0]
        if head == "coke":
            return torch.einsum("dhw,kd->khw", out, kp_bank.prototypes)
        return out

    if head == "coke" and not kp_bank.initialised.all():
        return
    net.eval()
    try:
        maker.hard.refresh(score_maps, maker, rng, cfg.augment.hard_frames)
    finally:
        net.train()
