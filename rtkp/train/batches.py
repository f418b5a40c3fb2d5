"""Training batches: augmented crops of the labelled frames, and where in a crop the clutter samples come from.

Positions are crop pixels; a feature cell's centre is at (cell + 0.5) · STRIDE − 0.5 (rtkp.model.network.STRIDE).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch

from rtkp.config import Config
from rtkp.data.augment import augment_sample
from rtkp.data.background import empty_background
from rtkp.data.occlude import load_photos
from rtkp.data.sample import Dataset
from rtkp.data.sides import resolve_flip_pairs
from rtkp.geometry import Letterbox
from rtkp.model.network import STRIDE
from rtkp.train.mining import HardNegatives


@dataclass
class Batch:
    """images (B, h, w, 3) uint8; keypoints (B, K, 2) crop pixels; visible (B, K) bool;
    anchors (B, 2) crop pixels of the hard negative a crop is centred on (NaN for other crops);
    flipped (B,) bool: the crops that were mirrored (coke.localise_flipped).

    Multi-instance training adds the crop's other animals: others (B, M, K, 2) crop px, others_visible (B, M, K) (an
    absent animal: all False), and centres (B, 1 + M, 2) crop px of every animal's centre, the crop's own first.
    """

    images: torch.Tensor
    keypoints: torch.Tensor
    visible: torch.Tensor
    anchors: torch.Tensor | None = None
    others: torch.Tensor | None = None
    others_visible: torch.Tensor | None = None
    centres: torch.Tensor | None = None
    flipped: torch.Tensor | None = None

    def instances(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every animal of each crop: (keypoints (B, N, K, 2), visible (B, N, K)), the crop's own first (N = 1 + M)."""
        if self.others is None:
            return self.keypoints[:, None], self.visible[:, None]
        return (
            torch.cat([self.keypoints[:, None], self.others], 1),
            torch.cat([self.visible[:, None], self.others_visible], 1),
        )


def instance_centre(keypoints: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """(2,) an animal's centre: the middle of its labelled keypoints' box (what the centre head points to)."""
    pts = keypoints[visible]
    return (pts.min(0) + pts.max(0)) / 2 if len(pts) else np.full(2, np.nan, np.float32)


class BatchMaker:
    """Holds the training images in memory and draws augmented crops."""

    def __init__(self, data: Dataset, cfg: Config, several: bool = False):
        # one array per frame, shared by the samples (animals) of that frame
        loaded: dict[tuple, np.ndarray] = {}
        self.images = [loaded.setdefault(s.image_key(), s.load_image()) for s in data.samples]
        self.keypoints = [s.keypoints for s in data.samples]
        self.visible = [s.visible for s in data.samples]
        frames = data.frames()
        self.companions = [[j for j in frames[s.image_key()] if j != i] for i, s in enumerate(data.samples)]
        self.several = several
        self.max_others = max((len(c) for c in self.companions), default=0) if several else 0
        self.scales = [Letterbox.fit(im.shape[1::-1], cfg.model.input_size).scale for im in self.images]
        self.flip_pairs = resolve_flip_pairs(data.keypoint_names, cfg.augment.flip_pairs)
        self.photos = [im for folder in cfg.augment.occluder_photos for im in load_photos(folder)]
        self.empty = None
        if cfg.augment.empty_share > 0:
            self.empty, why = empty_background(self.images, self.keypoints, self.visible)
            if self.empty is None:
                print(f"rtkp train: note: no empty-scene crops ({why})", file=sys.stderr)
            else:
                self.empty_scale = Letterbox.fit(self.empty.shape[1::-1], cfg.model.input_size).scale
        self.hard = HardNegatives(len(self.images), min_cells=cfg.coke.clutter_min_distance)
        self.cfg = cfg

    def labelled_points(self, i: int) -> np.ndarray:
        """(n, 2) source px: the visible keypoints of every animal in sample i's frame."""
        return np.concatenate([self.keypoints[j][self.visible[j]] for j in [i, *self.companions[i]]])

    def _others(self, i: int):
        """augment_sample's `others` for sample i: its frame's other animals, padded to max_others absent ones."""
        k = len(self.keypoints[i])
        kp = np.zeros((self.max_others, k, 2), np.float32)
        vis = np.zeros((self.max_others, k), bool)
        centres = np.zeros((1 + self.max_others, 2), np.float32)
        centres[0] = instance_centre(self.keypoints[i], self.visible[i])
        for n, j in enumerate(self.companions[i]):
            kp[n], vis[n] = self.keypoints[j], self.visible[j]
            centres[1 + n] = instance_centre(self.keypoints[j], self.visible[j])
        return kp, vis, centres

    def draw(self, rng: np.random.Generator, batch_size: int) -> Batch:
        a = self.cfg.augment
        crops: list = []
        anchors: list = []
        centre_px = np.array([(a.crop_size[0] - 1) / 2, (a.crop_size[1] - 1) / 2])
        for i in rng.integers(0, len(self.images), batch_size):
            centre = None
            if a.hard_crop > 0 and self.hard.has(i) and rng.random() < a.hard_crop:
                centre = self.hard.pick(rng, i)
            anchors.append(centre_px if centre is not None else np.full(2, np.nan))
            image, keypoints, visible, scale = self.images[i], self.keypoints[i], self.visible[i], self.scales[i]
            others = self._others(i) if self.several else None
            if self.empty is not None and centre is None and rng.random() < a.empty_share:
                # the scene without the object: all keypoints hidden (positions are irrelevant then)
                image, visible, scale = self.empty, np.zeros_like(visible), self.empty_scale
                if others is not None:
                    others = (others[0], np.zeros_like(others[1]), others[2])
            crops.append(
                augment_sample(rng, image, keypoints, visible, a, self.flip_pairs, scale, centre, self.photos, others)
            )
        batch = Batch(
            torch.from_numpy(np.stack([c.crop for c in crops])),
            torch.from_numpy(np.stack([c.keypoints for c in crops])),
            torch.from_numpy(np.stack([c.visible for c in crops])),
            torch.from_numpy(np.stack(anchors).astype(np.float32)),
            flipped=torch.tensor([c.flipped for c in crops]),
        )
        if self.several:
            batch.others = torch.from_numpy(np.stack([c.other_keypoints for c in crops]))
            batch.others_visible = torch.from_numpy(np.stack([c.other_visible for c in crops]))
            batch.centres = torch.from_numpy(np.stack([c.centres for c in crops]))
        return batch


# a hard negative's cell and its 4 neighbours go first among a crop's clutter samples
_ANCHOR_CELLS = np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]], np.float32)


def clutter_points(rng: np.random.Generator, batch: Batch, per_image: int, min_cells: float) -> torch.Tensor:
    """(B, per_image, 2) pixel positions of feature cells `min_cells` or more cells from every visible keypoint.

    A crop centred on a hard negative (batch.anchors) samples that cell and its neighbours first.
    """
    b, h, w = batch.images.shape[:3]
    gh, gw = h // STRIDE, w // STRIDE
    out = np.zeros((b, per_image, 2), np.float32)
    all_kp, all_vis = batch.instances()
    all_kp, all_vis = all_kp.flatten(1, 2), all_vis.flatten(1, 2)
    for i in range(b):
        cells = np.stack([rng.integers(0, gw, per_image * 4), rng.integers(0, gh, per_image * 4)], 1).astype(np.float32)
        if batch.anchors is not None and not torch.isnan(batch.anchors[i]).any():
            anchor = np.round((batch.anchors[i].numpy() + 0.5) / STRIDE - 0.5)
            near = np.clip(anchor + _ANCHOR_CELLS, 0, [gw - 1, gh - 1])
            cells = np.concatenate([near, cells])
        kp = (all_kp[i][all_vis[i]].numpy() + 0.5) / STRIDE - 0.5  # away from every animal's keypoints
        if len(kp):
            dist = np.linalg.norm(cells[:, None] - kp[None], axis=2).min(1)
            cells = np.concatenate([cells[dist >= min_cells], cells[dist < min_cells]])
        out[i] = (cells[:per_image] + 0.5) * STRIDE - 0.5
    return torch.from_numpy(out)


def ring_points(rng: np.random.Generator, batch: Batch, per_keypoint: int, radius=(1.5, 3.0)) -> torch.Tensor:
    """(B, K·per_keypoint, 2) pixel positions 1.5–3 cells from each visible keypoint and >= 1.5 cells from all of them.

    Positions that fail (invisible keypoint, too close to another keypoint, outside the crop) repeat a random-clutter
    position instead, so the tensor stays rectangular.
    """
    b, h, w = batch.images.shape[:3]
    k = batch.keypoints.shape[1]
    n = k * per_keypoint
    out = np.zeros((b, n, 2), np.float32)
    for i in range(b):
        kp = (batch.keypoints[i].numpy() + 0.5) / STRIDE - 0.5
        vis = batch.visible[i].numpy()
        ang = rng.uniform(0, 2 * np.pi, n)
        rad = rng.uniform(*radius, n)
        centre = np.repeat(kp, per_keypoint, axis=0)
        cells = centre + np.stack([np.cos(ang), np.sin(ang)], 1) * rad[:, None]
        ok = np.repeat(vis, per_keypoint) & (cells[:, 0] >= 0) & (cells[:, 1] >= 0)
        ok &= (cells[:, 0] <= w / STRIDE - 1) & (cells[:, 1] <= h / STRIDE - 1)
        if vis.any():
            ok &= np.linalg.norm(cells[:, None] - kp[vis][None], axis=2).min(1) >= radius[0]
        fallback = rng.uniform([0, 0], [w / STRIDE - 1, h / STRIDE - 1], (n, 2))
        cells = np.where(ok[:, None], cells, fallback)
        out[i] = (cells + 0.5) * STRIDE - 0.5
    return torch.from_numpy(out)
