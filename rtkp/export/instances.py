"""Several animals per frame in an export: a frame rebuilt around its (smoothed) instances, and the causal smoother
run per track. Smoothing never crosses tracks: each track id has its own filter, fed only the frames it appears in.

A single-instance model's frames hold one instance, track 0, in every frame, so the same code smooths them exactly as
the frame's own arrays were smoothed before instances existed (the published files stay byte for byte the same).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rtkp.messages import Instance, KeypointFrame
from rtkp.smoothing import KeypointSmoother


def with_instances(kf: KeypointFrame, instances) -> KeypointFrame:
    """kf holding `instances` (in increasing track order), its frame-level arrays those of the first one, as
    rtkp.messages.KeypointFrame says; a frame with none keeps its own (missing) arrays. (dataclasses.replace alone
    would keep the old instances beside new arrays.)"""
    instances = tuple(instances)
    if not instances:
        return dataclasses.replace(kf, instances=())
    first = instances[0]
    arrays = {"keypoints": first.keypoints, "scores": first.scores, "visible": first.visible, "state": first.state}
    return dataclasses.replace(kf, **arrays, instances=instances)


def moved(inst: Instance, xy: np.ndarray, visible: np.ndarray, state: np.ndarray) -> Instance:
    """The instance with smoothed positions, visibility and state (its scores, and so its score, as measured)."""
    return Instance(inst.track, inst.score, xy, inst.scores, visible, state)


class CausalTracks:
    """The live smoother (rtkp.smoothing.KeypointSmoother) per track id, run over the frames in order: what
    `--smooth causal` publishes. A track's smoother sees only the frames the track is in, each at the frame's PTS
    (its own clock makes a missing PTS one nominal step, as live)."""

    def __init__(self, num_keypoints: int, cfg):
        self.k, self.cfg = num_keypoints, cfg
        self.smoothers: dict[int, KeypointSmoother] = {}

    def update(self, t: float | None, kf: KeypointFrame) -> KeypointFrame:
        """The frame with every instance smoothed on its own track; t: the frame's time (its PTS, or None)."""
        out = []
        for inst in kf.instances:
            smoother = self.smoothers.get(inst.track)
            if smoother is None:
                smoother = self.smoothers[inst.track] = KeypointSmoother(self.k, self.cfg)
            out.append(moved(inst, *smoother.update(t, inst.keypoints, inst.visible)))
        return with_instances(kf, out)
