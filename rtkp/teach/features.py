"""The graph's unit features (a backend's `features` output, (B, W, h, w)) read in numpy, where teaching reads them.

The inference graph (rtkp.model.graph) scores features against prototypes in torch; teaching has the features in
numpy and asks the same questions of single cells: what is the feature at a clicked point, and what keypoint row
(score, clutter_score) would the graph report if that cell were the keypoint's peak. The visibility evidence of such a
row is rtkp.visibility's, like every other row's. numpy only.

Taught keypoints are matched on the trained features and on the generic ImageNet taps together (W = D + G,
rtkp.graphs.prototypes, rtkp.model.generic): each part of a feature is a unit vector, and a taught prototype is each
part's unit mean scaled by the part's share (`shares`), so its score is the shares' weighted sum of cosines, in [−1, 1].
"""

from __future__ import annotations

import numpy as np

from rtkp.graphs.prototypes import GENERIC_CHANNELS, row_parts

# Share of each part in a taught keypoint's score: the trained features, then the generic taps at strides 8, 16, 32.
# Chosen on the mouse's validation split, the tail base left out of training (docs/FEWSHOT.md): the generic taps
# carry a keypoint the training never saw (trained part alone: PCK@0.1 0.0 from 5 shots; taps alone: 0.94), and a
# quarter of trained features, which know where the animal is, raised 1 and 3 shots from 0.83 to 0.89.
TRAINED_SHARE = 0.25
TAP_WEIGHTS = (1.0, 1.0, 0.5)
assert len(TAP_WEIGHTS) == len(GENERIC_CHANNELS)


def shares(width: int, d: int) -> np.ndarray:
    """(parts,) the share of each part of a row of `width` with trained width d (one part, share 1, when width = d)."""
    if width == d:
        return np.ones(1)
    taps = np.asarray(TAP_WEIGHTS) / sum(TAP_WEIGHTS) * (1 - TRAINED_SHARE)
    return np.concatenate([[TRAINED_SHARE], taps])


def unit_parts(x: np.ndarray, d: int) -> np.ndarray:
    """x (..., W) with each part (rtkp.graphs.prototypes.row_parts) scaled to unit length; W = d: unit(x)."""
    if x.shape[-1] == d:
        return unit(x)
    return np.concatenate([unit(x[..., p]) for p in row_parts(d)], -1)


def compose(x: np.ndarray, d: int) -> np.ndarray:
    """A taught prototype from summed (or mean) features (..., W): each part's unit direction times its share."""
    parts = [unit(x[..., p]) * w for p, w in zip(row_parts(d), shares(x.shape[-1], d))]
    return np.concatenate(parts, -1)


def unit(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """x scaled to unit length along `axis` (zero vectors stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def sample_features(features: np.ndarray, points: np.ndarray, stride: int, d: int | None = None) -> np.ndarray:
    """Bilinear features at pixel positions, renormalised: (B, W, h, w), (B, 2) model-input px -> (B, W); with the
    trained width d (W > d: generic parts after it), each part on its own (unit_parts).

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
    return unit_parts(out.astype(np.float32), d or out.shape[1])


def keypoint_rows(features: np.ndarray, prototype: np.ndarray, clutter: np.ndarray) -> np.ndarray:
    """The graph's keypoint row for each feature (..., W) taken as the peak of `prototype` ((W,), or one per
    feature (..., W)): (..., 4) = x, y (NaN: not known here), score, clutter_score.

    score is the prototype's dot product with the feature (the cosine similarity, or the shares' sum of them for a
    prototype with generic parts), clutter_score the trained part's best similarity to the clutter summary (S, D)
    (weighed by its share), as the graph computes them; rtkp.visibility.evidence(rows) is the evidence there.
    """
    d = clutter.shape[1]
    prototype = np.asarray(prototype)[..., : features.shape[-1]]  # a full row's reach is not a feature
    score = (features * prototype).sum(-1)
    # weighed by the trained part's length, as the graph's generic variant does (rtkp.model.graph): 1 for trained
    # prototypes, the trained features' share for taught ones
    weight = np.linalg.norm(np.asarray(prototype)[..., :d], axis=-1) if features.shape[-1] > d else 1.0
    clutter_score = (features[..., :d] @ clutter.T).max(-1) * weight
    nan = np.full_like(score, np.nan)
    return np.stack([nan, nan, score, clutter_score], -1)
