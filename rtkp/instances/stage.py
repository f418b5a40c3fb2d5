"""A multi-instance graph's rows → the frame's animals: grouping, visibility, track ids, smoothing per track.

The Tracker's KeypointStage hands a multi-instance model's results here (rtkp.tracker); a single-instance model never
comes here. Each track has its own smoother (rtkp.smoothing.KeypointSmoother), so smoothing and Kalman prediction
never mix two animals; all tracks share one clock, so a track that reappears after a gap sees the real time passed.
"""

from __future__ import annotations

import numpy as np

from rtkp.errors import ConfigError
from rtkp.geometry import Letterbox
from rtkp.instances.grouping import group_peaks
from rtkp.instances.identity import IdentityTracker
from rtkp.instances.pose import BodyFrame, template_names
from rtkp.manifest import Manifest
from rtkp.messages import Instance, instance_score
from rtkp.smoothing import KeypointSmoother, SmoothingConfig, SteadyClock
from rtkp.visibility import visible


def check_max_instances(manifest: Manifest, wanted: int | None) -> int:
    """How many animals a Tracker reports per frame: `wanted` (--max-instances), else the model's default (1 for a
    single-instance model); ConfigError for a number the model cannot give."""
    if wanted is None:
        return int(manifest.default_instances or 1) if manifest.multi_instance else 1
    if isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 1:
        raise ConfigError(f"--max-instances must be a whole number >= 1, got {wanted!r}")
    if not manifest.multi_instance and wanted > 1:
        raise ConfigError(
            f"--max-instances {wanted}: this model finds one animal per frame; train it on frames labelled with "
            "several animals (rtkp train reads them from COCO, DeepLabCut multi-animal and SLEAP files)"
        )
    if manifest.multi_instance and wanted > manifest.max_instances:
        raise ConfigError(
            f"--max-instances {wanted}: this model's graph reports at most {manifest.max_instances} animals per frame "
            f"(manifest max_instances); give at most {manifest.max_instances}, or retrain with model.max_instances"
        )
    return wanted


class InstanceStage:
    """(K, P, 6) rows of one frame, in frame order -> its Instances, in increasing track order (stateful)."""

    def __init__(self, manifest: Manifest, margin, max_instances: int, smoothing: SmoothingConfig):
        self.margin = margin
        self.max_instances = max_instances
        self.instance_size = float(manifest.instance_size or max(manifest.input_size) / 4)
        self.smoothing = smoothing
        self.k = len(manifest.keypoint_names)
        self.identities = IdentityTracker(max_instances, self.instance_size)
        self.smoothers: dict[int, KeypointSmoother] = {}
        self.clock = SteadyClock()
        template = manifest.pose_template
        # a template of other keypoints (a folder saved with a changed set keeps its rows' names) is not used
        same = template_names(template, manifest.keypoint_names) == list(manifest.keypoint_names)
        self.body = BodyFrame(template) if template and same else None

    def change_keypoints(self, margin, previous: list[int]) -> None:
        """A new keypoint set (see KeypointStage.change_keypoints): every track's smoother follows it; the identity
        tracker forgets the old keypoints' positions (tracks continue by their centres)."""
        self.margin = margin
        self.k = len(previous)
        self.body = None  # the pose template's rows were the trained keypoints'; a changed set no longer has them
        for smoother in self.smoothers.values():
            smoother.remap(previous)
        for track in self.identities.tracks.values():  # every new keypoint at the track's centre, to match against
            centre = track.keypoints[track.visible].mean(0) if track.visible.any() else track.keypoints.mean(0)
            track.keypoints = np.repeat(centre[None], len(previous), 0)
            track.visible = np.ones(len(previous), bool)

    def __call__(self, rows: np.ndarray, box: Letterbox, pts: float | None, latency: float) -> list[Instance]:
        t = self.clock(pts)
        margin = np.broadcast_to(np.asarray(self.margin, np.float32), (self.k,))
        animals = group_peaks(rows, margin, self.instance_size * box.scale, self.max_instances, self.body)
        xys = [box.to_source(a.rows[:, :2]) for a in animals]
        shown = [visible(a.rows, margin) & a.assigned for a in animals]
        ids = self.identities.assign(t, xys, shown)
        out = []
        for track, animal, xy, vis in sorted(zip(ids, animals, xys, shown), key=lambda x: x[0]):
            smoother = self.smoothers.get(track)
            if smoother is None:
                smoother = self.smoothers[track] = KeypointSmoother(self.k, self.smoothing)
            xy, vis, state = smoother.update(t, xy, vis, latency)
            scores = animal.rows[:, 2].astype(np.float32)
            out.append(Instance(track, instance_score(scores, vis), xy.astype(np.float32), scores, vis, state))
        return out
