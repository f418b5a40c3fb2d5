"""The visibility rule, in one place: a keypoint is visible when score − clutter_score > its margin.

rows are the inference graph's per-keypoint output (..., 4) = x, y, score, clutter_score (rtkp.model.graph). The
margin is the manifest's `visibility_margins` (one per keypoint; older models: the single `visibility_margin`), chosen
on occluded and object-free training crops (rtkp.train.calibrate). The heatmap baseline
has no clutter evidence (clutter_score 0), so for it the rule reads "peak > margin".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from rtkp.manifest import Manifest


def evidence(rows):
    """score − clutter_score: (..., 4) -> (...). Works on numpy arrays and torch tensors alike."""
    return rows[..., 2] - rows[..., 3]


def visible(rows: np.ndarray, margin) -> np.ndarray:
    """(..., K, 4) rows -> (..., K) bool: evidence > margin (a number, or one per keypoint (K,))."""
    return np.asarray(evidence(rows)) > np.asarray(margin, np.float32)


def manifest_margin(manifest: Manifest):
    """The margins a model folder's manifest sets: one per keypoint ((K,) array) when it has `visibility_margins`,
    else its single `visibility_margin` (0 when it has none: models trained before calibration existed)."""
    per_keypoint = manifest.visibility_margins
    if per_keypoint is not None and len(per_keypoint) == len(manifest.keypoint_names):
        return np.asarray(per_keypoint, np.float32)
    return float(manifest.visibility_margin)
