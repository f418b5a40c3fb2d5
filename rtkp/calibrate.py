"""Choose the visibility margin on augmented *training* crops (never on test data).

A keypoint is reported visible when score − clutter_score > margin (the rule: rtkp.visibility). The margin is the
threshold that maximises balanced accuracy (mean of the visible and the hidden recall) over crops with occluders pasted
on, where the labels say which keypoints are covered or cut off.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .config import Config
from .model.graph import InferenceGraph
from .visibility import evidence as visibility_evidence


def best_threshold(evidence: np.ndarray, visible: np.ndarray) -> float:
    """The threshold t maximising balanced accuracy of (evidence > t) against `visible` (both (N,))."""
    if visible.all() or not visible.any():
        return 0.0
    order = np.sort(np.unique(evidence))
    candidates = np.concatenate([[order[0] - 1e-3], (order[1:] + order[:-1]) / 2, [order[-1] + 1e-3]])
    pos, neg = evidence[visible], evidence[~visible]
    tpr = (pos[None, :] > candidates[:, None]).mean(1)
    tnr = (neg[None, :] <= candidates[:, None]).mean(1)
    return float(candidates[np.argmax(tpr + tnr)])


@torch.no_grad()
def calibrate_margin(net, maker, cfg: Config, prototypes, clutter, batches: int = 8, seed: int = 12345) -> float:
    """Margin from `batches` augmented training batches with occluders always on."""
    aug = dataclasses.replace(cfg.augment, occluder=1.0)
    maker_cfg = maker.cfg
    maker.cfg = dataclasses.replace(cfg, augment=aug)
    # the FP32 inference graph that the backends run, so the margin is chosen on the figures they report
    graph = InferenceGraph(net).eval()
    evidence, visible = [], []
    try:
        for i in range(batches):
            rng = np.random.default_rng([seed, i])
            batch = maker.draw(rng, cfg.train.batch_size)
            rows = graph(batch.images, prototypes, clutter)  # (B, K, 4)
            evidence.append(visibility_evidence(rows).flatten().numpy())
            visible.append(batch.visible.flatten().numpy())
    finally:
        maker.cfg = maker_cfg
    return round(best_threshold(np.concatenate(evidence), np.concatenate(visible)), 5)
