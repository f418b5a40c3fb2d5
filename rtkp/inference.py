"""Run a trained model on whole images with PyTorch: letterbox, predict, map back to source pixels.

This is the reference path (`rtkp eval`, tests); streaming backends reproduce it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .geometry import Letterbox
from .model.checkpoint import load_model
from .model.predictor import Predictor


@dataclass(frozen=True)
class Prediction:
    """Per-keypoint results for one image, in source pixels.

    keypoints: (K, 2) x, y; score: (K,); clutter_score: (K,); visible: (K,) bool (score − clutter_score > margin).
    """

    keypoints: np.ndarray
    score: np.ndarray
    clutter_score: np.ndarray
    visible: np.ndarray


class ImageModel:
    """A model folder loaded for inference on images of any size."""

    def __init__(self, model_dir: str | Path, threads: int = 0):
        if threads:
            torch.set_num_threads(threads)
        net, self.manifest, self.prototypes, self.clutter = load_model(model_dir)
        self.predictor = Predictor(net).eval()
        self.input_size = tuple(self.manifest["input_size"])
        self.margin = float(self.manifest.get("visibility_margin", 0.0))
        self.keypoint_names = list(self.manifest["keypoint_names"])

    @torch.no_grad()
    def predict(self, images: list[np.ndarray]) -> list[Prediction]:
        """images: list of (H, W, 3) uint8 RGB, any sizes -> one Prediction each (run as one batch)."""
        boxes = [Letterbox.fit(im.shape[1::-1], self.input_size) for im in images]
        batch = torch.from_numpy(np.stack([lb.apply(im) for lb, im in zip(boxes, images)]))
        out = self.predictor(batch, self.prototypes, self.clutter).numpy()
        preds = []
        for lb, o in zip(boxes, out):
            preds.append(Prediction(lb.to_source(o[:, :2]), o[:, 2], o[:, 3], (o[:, 2] - o[:, 3]) > self.margin))
        return preds
