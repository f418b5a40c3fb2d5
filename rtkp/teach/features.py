"""The graph's unit features (a backend's `features` output, (B, D, h, w)) read in numpy, where teaching reads them.

The inference graph (rtkp.model.graph) scores features against prototypes in torch; teaching has the features in
numpy and asks the same questions of single cells: what is the feature at a clicked point, and what keypoint row
(score, clutter_score) would the graph report if that cell were the keypoint's peak. The visibility evidence of such a
row is rtkp.visibility's, like every other row's. numpy only.
"""

from __future__ import annotations

import numpy as np


def unit(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """x scaled to unit length along `axis` (zero vectors stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def sample_features(features: np.ndarray, points: np.ndarray, stride: int) -> np.ndarray:
    """Bilinear features at pixel positions, renormalised: (B, D, h, w), (B, 2) model-input px -> (B, D).

    The same sampling as training's rtkp.model.loss.sample_features (cell (i, j) centred on input pixel
    ((j + 0.5)·s − 0.5, (i + 0.5)·s − 0.5)); beyond the outer cell centres the outer cells are used.
    """
    b, d, h, w = features.shape
    g = (np.asarray(points, np.float64) + 0.5) / stride - 0.5
    gx, gy = np.clip(g[:, 0], 0, w - 1), np.clip(g[:, 1], 0, h - 1)
    x0, y0 = np.floor(gx).astype(int), np.floor(gy).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    ax, ay = (gx - x0)[:, None], (gy - y0)[:, None]
    i = np.arange(b)
    f = lambda yy, xx: features[i, :, yy, xx]  # (B, D)
    out = (1 - ay) * ((1 - ax) * f(y0, x0) + ax * f(y0, x1)) + ay * ((1 - ax) * f(y1, x0) + ax * f(y1, x1))
    return unit(out.astype(np.float32))


def keypoint_rows(features: np.ndarray, prototype: np.ndarray, clutter: np.ndarray) -> np.ndarray:
    """The graph's keypoint row for each unit feature (..., D) taken as the peak of `prototype` ((D,), or one per
    feature (..., D)): (..., 4) = x, y (NaN: not known here), score, clutter_score.

    score is the cosine similarity to the prototype, clutter_score the best similarity to the clutter summary (S, D),
    as rtkp.model.peaks.coke_keypoints computes them; rtkp.visibility.evidence(rows) is the keypoint's evidence there.
    """
    score = (features * prototype).sum(-1)
    clutter_score = (features @ clutter.T).max(-1)
    nan = np.full_like(score, np.nan)
    return np.stack([nan, nan, score, clutter_score], -1)
