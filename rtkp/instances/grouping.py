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

from rtkp.instances.pose import BodyFrame

JOIN = 0.25  # a vote joins an animal whose centre is within JOIN × instance size
GATE = 0.5  # a peak belongs to an animal only when its vote is within GATE × instance size of the animal's centre
MIN_SHARE = 0.2  # an animal needs visible votes from at least this share of the keypoints (and at least 2)
STRENGTH = 5.0  # weight of a peak's evidence against its vote's distance (in animal sizes) when choosing among peaks
APART = 0.1  # the two keypoints of a left/right pair lie at least this many animal sizes apart


@dataclass(frozen=True)
class GroupedInstance:
    """One animal in model-input px: rows (K, 4) x, y, score, clutter_score (the graph's single-instance row layout,
    so the visibility rule reads it unchanged); assigned (K,) bool: a peak was within the gate (False: the row is the
    animal's centre with score −1, clutter 1, never visible); centre (2,)."""

    rows: np.ndarray
    assigned: np.ndarray
    centre: np.ndarray


def group_peaks(
    peaks: np.ndarray,
    margins: np.ndarray,
    instance_size: float,
    max_instances: int,
    body: BodyFrame | None = None,
) -> list[GroupedInstance]:
    """peaks (K, P, 6) = x, y, score, clutter_score, centre_x, centre_y; margins (K,) visibility margins;
    instance_size: an animal's size in the same px; body: the model's pose template (left/right pairs), if any ->
    up to `max_instances` animals, the best supported first.

    Among the peaks whose votes fall within the gate of an animal's centre, a keypoint takes the one that is strong
    and near (evidence × STRENGTH against the vote's distance in animal sizes: on the validation flies, choosing the
    nearest vote alone took a look-alike of the same animal in 1 of 5 leg and wing keypoints)."""
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
        cost = dist / instance_size - STRENGTH * evidence[j][None, :] + np.where(dist <= gate, 0.0, 1e3)
        inst, peak = linear_sum_assignment(cost)
        for i, p in zip(inst, peak):
            if dist[i, p] <= gate:
                rows[i, j] = peaks[j, p, :4]
                assigned[i, j] = True
    if body is not None:
        for i in range(n):
            refine_pairs(peaks, evidence, centres, i, rows[i], assigned[i], body, instance_size)
    return [GroupedInstance(rows[i], assigned[i], centres[i]) for i in range(n)]


def refine_pairs(peaks, evidence, centres, i, rows, assigned, body: BodyFrame, instance_size: float) -> None:
    """Animal i's left/right pairs, in place: for each pair the body frame orders (body.pairs), the two strongest
    peaks of this animal (their votes nearest its centre, within the gate) that lie APART and on their own sides.
    (Both wing keypoints of a fly took the same wing in 1 of 4 validation frames before; after, 1 in 12.)"""
    side = body.lateral_of(rows[:, :2].astype(np.float64), assigned)
    if side is None:
        return
    gate = GATE * instance_size
    nearest = np.linalg.norm(peaks[..., None, 4:6] - centres[None, None], axis=-1)  # (K, P, n)
    mine = (nearest.argmin(-1) == i) & (nearest[..., i] <= gate)  # (K, P)
    for a, b in body.pairs:
        ca, cb = np.nonzero(mine[a])[0], np.nonzero(mine[b])[0]
        best, choice = -np.inf, None
        for p in ca:
            for q in cb:
                if np.linalg.norm(peaks[a, p, :2] - peaks[b, q, :2]) < APART * instance_size:
                    continue
                la, lb = side(np.stack([peaks[a, p, :2], peaks[b, q, :2]]))
                if la <= lb:
                    continue
                if evidence[a, p] + evidence[b, q] > best:
                    best, choice = evidence[a, p] + evidence[b, q], (p, q)
        if choice is not None:
            rows[a], rows[b] = peaks[a, choice[0], :4], peaks[b, choice[1], :4]
            assigned[a] = assigned[b] = True


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
