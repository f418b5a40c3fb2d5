"""Which predicted instance is which labelled one, in one frame.

A labelled instance's size is the longer side of the box of its labelled keypoints (as `rtkp eval` measures PCK for
one animal). Two instances are compared by the mean distance over the keypoints labelled in the labels and reported
by the prediction; a prediction counts as finding a labelled animal when that distance is below FOUND_FRACTION of the
animal's size: half a fly away is another fly, or none.
"""

from __future__ import annotations

import numpy as np

FOUND_FRACTION = 0.5


def box_side(keypoints: np.ndarray, labelled: np.ndarray) -> float:
    """keypoints (K, 2), labelled (K,) bool -> the longer side of the labelled keypoints' box, at least 1 px."""
    points = keypoints[labelled]
    return max(float(np.ptp(points, 0).max()), 1.0) if len(points) else 1.0


def instance_distance(pred_xy: np.ndarray, pred_visible: np.ndarray, gt_xy: np.ndarray, labelled: np.ndarray) -> float:
    """Mean distance (px) over the keypoints labelled in `gt` and reported (visible, finite) in the prediction;
    inf when they share none (such a pair can never be a match)."""
    both = labelled & pred_visible & np.isfinite(pred_xy).all(1)
    if not both.any():
        return float("inf")
    return float(np.linalg.norm(pred_xy[both] - gt_xy[both], axis=1).mean())


def distance_matrix(predicted: list, labelled: list) -> np.ndarray:
    """(P, G) instance_distance of every predicted instance (`.keypoints`, `.visible`) to every labelled Sample."""
    out = np.full((len(predicted), len(labelled)), np.inf)
    for p, pred in enumerate(predicted):
        xy, visible = np.asarray(pred.keypoints, np.float64), np.asarray(pred.visible, bool)
        for g, sample in enumerate(labelled):
            out[p, g] = instance_distance(xy, visible, sample.keypoints, sample.visible)
    return out


def gates(labelled: list) -> np.ndarray:
    """(G,) the largest distance at which each labelled Sample still counts as found: FOUND_FRACTION x its size."""
    return np.array([FOUND_FRACTION * box_side(s.keypoints, s.visible) for s in labelled], np.float64)


def match_frame(predicted: list, labelled: list) -> list[tuple[int, int, float]]:
    """Hungarian assignment of predicted to labelled instances by distance, pairs beyond the gate excluded before
    assigning (so a far pair never takes a labelled animal from a near one): [(p, g, distance)] for the pairs found."""
    from scipy.optimize import linear_sum_assignment

    if not predicted or not labelled:
        return []
    dist = distance_matrix(predicted, labelled)
    allowed = dist < gates(labelled)[None, :]
    if not allowed.any():
        return []
    # a cost no allowed set of pairs can reach, for the pairs that may not match; assignments using them are dropped
    big = float(dist[allowed].sum()) + 1.0
    cost = np.where(allowed, dist, big)
    rows, cols = linear_sum_assignment(cost)
    return [(int(p), int(g), float(dist[p, g])) for p, g in zip(rows, cols) if allowed[p, g]]
