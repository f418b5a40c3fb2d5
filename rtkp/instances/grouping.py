"""One frame's keypoint peaks → animals: the grouping half of several-animals tracking (numpy only).

A multi-instance graph (rtkp.model.graph) reports, for each keypoint, its P best local maxima, each with the centre of
the animal it belongs to (the centre head's vote). Visible peaks vote: votes that land together are one animal, and
each keypoint of an animal is the peak whose vote lies nearest to that animal's centre (an assignment per keypoint,
so two animals never share a peak). Bottom-up like CenterNet-style pose models: one graph run for all animals, so the
cost of an extra animal is this grouping (well under a millisecond), not another network pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

JOIN = 0.25  # a vote joins an animal whose centre is within JOIN × instance size
GATE = 0.5  # a peak belongs to an animal only when its vote is within GATE × instance size of the animal's centre
MIN_SHARE = 0.2  # an animal needs visible votes from at least this share of the keypoints (and at least 2)


@dataclass(frozen=True)
class GroupedInstance:
    """One animal in model-input px: rows (K, 4) x, y, score, clutter_score (the graph's single-instance row layout,
    so the visibility rule reads it unchanged); assigned (K,) bool: a peak was within the gate (False: the row is the
    animal's centre with score −1, clutter 1, never visible); centre (2,)."""

    rows: np.ndarray
    assigned: np.ndarray
    centre: np.ndarray


def group_peaks(
    peaks: np.ndarray, margins: np.ndarray, instance_size: float, max_instances: int
) -> list[GroupedInstance]:
    """peaks (K, P, 6) = x, y, score, clutter_score, centre_x, centre_y; margins (K,) visibility margins;
    instance_size: an animal's size in the same px -> up to `max_instances` animals, the best supported first."""
    k = peaks.shape[0]
    evidence = peaks[..., 2] - peaks[..., 3]
    visible = evidence > np.asarray(margins, np.float32)[:, None]
    centres = _cluster_votes(peaks, visible, JOIN * instance_size, max(2, int(np.ceil(MIN_SHARE * k))))
    centres = centres[:max_instances]
    if not len(centres):
        return []
    n = len(centres)
    rows = np.zeros((n, k, 4), np.float32)
    rows[..., 2], rows[..., 3] = -1.0, 1.0
    rows[..., :2] = centres[:, None, :]
    assigned = np.zeros((n, k), bool)
    gate = GATE * instance_size
    for j in range(k):
        dist = np.linalg.norm(peaks[j, None, :, 4:6] - centres[:, None, :], axis=2)  # (n, P)
        # a visible peak beats a hidden one at any distance within the gate
        cost = dist + np.where(visible[j], 0.0, gate)[None, :]
        inst, peak = linear_sum_assignment(cost)
        for i, p in zip(inst, peak):
            if dist[i, p] <= gate:
                rows[i, j] = peaks[j, p, :4]
                assigned[i, j] = True
    return [GroupedInstance(rows[i], assigned[i], centres[i]) for i in range(n)]


def _cluster_votes(peaks: np.ndarray, visible: np.ndarray, radius: float, min_keypoints: int) -> np.ndarray:
    """(n, 2) animal centres from the visible peaks' votes, ordered by support (the sum of their best score per
    keypoint). Greedy in score order: a vote joins the nearest centre within `radius` (the centre moves to the votes'
    score-weighted mean), or starts a new one; centres with votes from fewer than `min_keypoints` keypoints go."""
    kk, pp = np.nonzero(visible)
    if not len(kk):
        return np.zeros((0, 2), np.float32)
    scores = peaks[kk, pp, 2]
    order = np.argsort(-scores, kind="stable")
    sums: list[np.ndarray] = []  # score-weighted vote sums
    weights: list[float] = []
    best: list[dict] = []  # keypoint -> its best score in the cluster
    for o in order:
        j, vote, s = kk[o], peaks[kk[o], pp[o], 4:6], max(float(scores[o]), 1e-3)
        if sums:
            centres = np.array(sums) / np.array(weights)[:, None]
            d = np.linalg.norm(centres - vote, axis=1)
            c = int(np.argmin(d))
            if d[c] <= radius:
                sums[c] = sums[c] + s * vote
                weights[c] += s
                best[c][j] = max(best[c].get(j, -1.0), s)
                continue
        sums.append(s * vote.astype(np.float64))
        weights.append(s)
        best.append({j: s})
    support = np.array([sum(b.values()) for b in best])
    keep = [c for c in np.argsort(-support, kind="stable") if len(best[c]) >= min_keypoints]
    return np.array([sums[c] / weights[c] for c in keep], np.float32).reshape(-1, 2)
