"""The visibility rule, in one place: a keypoint is visible when score − clutter_score > margin.

rows are the inference graph's per-keypoint output (..., 4) = x, y, score, clutter_score (rtkp.model.graph). The
margin is the manifest's `visibility_margin`, chosen on occluded training crops (rtkp.calibrate). The heatmap baseline
has no clutter evidence (clutter_score 0), so for it the rule reads "peak > margin".
"""

from __future__ import annotations

import numpy as np


def evidence(rows):
    """score − clutter_score: (..., 4) -> (...). Works on numpy arrays and torch tensors alike."""
    return rows[..., 2] - rows[..., 3]


def visible(rows: np.ndarray, margin: float) -> np.ndarray:
    """(..., 4) rows -> (...) bool: evidence > margin."""
    return np.asarray(evidence(rows)) > margin


def manifest_margin(manifest: dict) -> float:
    """The margin a model folder's manifest sets (0 when it has none: models trained before calibration existed)."""
    return float(manifest.get("visibility_margin", 0.0))
