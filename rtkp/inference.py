"""Run a trained model on whole images with PyTorch: letterbox, predict, map back to source pixels.

This is the reference path (`rtkp eval`, tests); streaming backends reproduce it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .model.checkpoint import load_model
from .model.predictor import Predictor
from .tracker import Matcher


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
        self.matcher = Matcher(self.manifest)
        self.keypoint_names = list(self.manifest["keypoint_names"])

    @torch.no_grad()
    def predict(self, images: list[np.ndarray]) -> list[Prediction]:
        """images: list of (H, W, 3) uint8 RGB, any sizes -> one Prediction each (run as one batch)."""
        sizes = [(im.shape[1], im.shape[0]) for im in images]
        batch = np.stack([self.matcher.letterbox(size).apply(im) for size, im in zip(sizes, images)])
        out = self.predictor(torch.from_numpy(batch), self.prototypes, self.clutter).numpy()
        preds = []
        for size, o in zip(sizes, out):
            xy, score, visible = self.matcher(o, size)
            preds.append(Prediction(xy, score, o[:, 3], visible))
        return preds
