"""Track ids that stay with the animals: the frame-to-frame half of several-animals tracking (numpy + scipy).

Each frame's animals are matched to the tracks by the mean distance of their keypoints (those visible in both) to
where each track's keypoints are predicted now (its last keypoints moved by its velocity), an optimal assignment
(Hungarian). The id pool is bounded by --max-instances: when as many tracks exist as animals may be in view, an
unmatched animal takes the id of the track that is missing (it left the view, or was hidden, and came back) instead
of a new one, so two flies stay 0 and 1 through touching, crossing and re-entering.

Why not a library: norfair (which tracks sets of keypoints with a custom distance) pins numpy < 2, which OpenCV 5 (an
rtkp dependency) cannot run with; supervision's ByteTrack and the SORT family track boxes, whose IoU says nothing
when two animals touch. What remains is this assignment, ~100 lines on scipy's linear_sum_assignment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

GATE = 1.0  # an animal continues a track seen in the previous frames only within GATE × instance size
VELOCITY_MEMORY = 0.5  # weight of the previous velocity in the smoothed one


@dataclass
class _Track:
    keypoints: np.ndarray  # (K, 2) last seen
    visible: np.ndarray  # (K,)
    velocity: np.ndarray  # (2,) px per second, of the visible keypoints' mean
    seen: float  # time last matched (s)

    def predicted(self, t: float) -> np.ndarray:
        return self.keypoints + self.velocity * max(t - self.seen, 0.0)


class IdentityTracker:
    """Assigns track ids to each frame's animals, in frame order.

    max_instances: the id pool (--max-instances); instance_size: an animal's size in px, the distances' scale.
    """

    def __init__(self, max_instances: int, instance_size: float):
        self.max_instances = max_instances
        self.size = max(float(instance_size), 1.0)
        self.tracks: dict[int, _Track] = {}
        self._next = 0

    def assign(self, t: float, keypoints: list[np.ndarray], visible: list[np.ndarray]) -> list[int]:
        """One frame at time t (s): (K, 2) keypoints and (K,) visible of each animal -> each animal's track id."""
        n = len(keypoints)
        ids: list[int | None] = [None] * n
        track_ids = list(self.tracks)
        if n and track_ids:
            cost = np.array(
                [[self._cost(keypoints[d], visible[d], self.tracks[i], t) for i in track_ids] for d in range(n)]
            )
            rows, cols = linear_sum_assignment(cost)
            for d, c in zip(rows, cols):
                if cost[d, c] <= GATE:
                    ids[d] = track_ids[c]
            # the pool is full: an animal left unmatched takes a missing track's id (it came back), nearest first
            missing = [i for i in track_ids if i not in ids]
            waiting = [d for d in range(n) if ids[d] is None]
            if waiting and missing and len(self.tracks) >= self.max_instances:
                sub = cost[np.ix_(waiting, [track_ids.index(i) for i in missing])]
                for r, c in zip(*linear_sum_assignment(sub)):
                    ids[waiting[r]] = missing[c]
        for d in range(n):
            if ids[d] is None:
                ids[d] = self._next
                self._next += 1
            self._update(ids[d], keypoints[d], visible[d], t)
        return [int(i) for i in ids]

    def _cost(self, kp: np.ndarray, vis: np.ndarray, track: _Track, t: float) -> float:
        """Mean distance of the keypoints visible in both (else of the visible keypoints' means), in instance sizes."""
        pred = track.predicted(t)
        both = vis & track.visible
        if both.any():
            return float(np.linalg.norm(kp[both] - pred[both], axis=1).mean()) / self.size
        if vis.any() and track.visible.any():
            return float(np.linalg.norm(kp[vis].mean(0) - pred[track.visible].mean(0))) / self.size
        return 10.0 * GATE  # nothing to compare: matched only to fill the pool

    def _update(self, track_id: int, kp: np.ndarray, vis: np.ndarray, t: float) -> None:
        old = self.tracks.get(track_id)
        velocity = np.zeros(2)
        if old is not None and t > old.seen and vis.any() and old.visible.any():
            step = (kp[vis].mean(0) - old.keypoints[old.visible].mean(0)) / (t - old.seen)
            velocity = VELOCITY_MEMORY * old.velocity + (1 - VELOCITY_MEMORY) * step
        keep_kp, keep_vis = kp.copy(), vis.copy()
        if old is not None:  # keypoints hidden now keep their last seen place (moved with the animal)
            both = vis & old.visible
            shift = kp[both].mean(0) - old.keypoints[both].mean(0) if both.any() else 0.0
            keep_kp[~vis] = old.keypoints[~vis] + shift
            keep_vis = vis | old.visible
        self.tracks[track_id] = _Track(keep_kp, keep_vis, velocity, t)
