"""What the training recipe decides from the data before training, and what the model folder records of it.

Kept free of torch and of the training loop: calibration (rtkp.train.calibrate) and the loop (rtkp.train.loop) both
read `peak_decoding`, and `rtkp train` prints `few_frames_warning` before it loads torch.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass

import numpy as np

from rtkp.config import Config
from rtkp.data.load import one_instance_per_frame
from rtkp.data.sample import Dataset
from rtkp.data.sides import pair_sides
from rtkp.errors import ConfigError

# Fewer labelled frames than this and the recipe overfits: the shipped mouse model trained on 92 frames (test RMSE
# 4.1 px), while 12 frames of the same data gave an RMSE of 37.9 px.
RECIPE_MIN_FRAMES = 50


def few_frames_warning(data: Dataset) -> str | None:
    """A one-line warning when `data` has fewer labelled frames (distinct images) than the recipe needs, else None."""
    frames = len({s.image_key() for s in data.samples if s.visible.any()})
    if frames >= RECIPE_MIN_FRAMES:
        return None
    return (
        f"rtkp train: warning: the recipe expects about {RECIPE_MIN_FRAMES}+ labelled frames; got {frames} "
        "(expect a large error; label more frames, e.g. 50-100 spread over the videos)"
    )


def peak_decoding(cfg: Config) -> dict | None:
    """The manifest's "peak" entry: how the inference graph refines a similarity peak (rtkp.model.graph)."""
    if cfg.model.head == "coke" and cfg.coke.localise_weight > 0:
        return {"refine": "softargmax", "temperature": cfg.coke.temperature}
    return None


def flip_policy(names: list[str], cfg: Config) -> Config:
    """Print the flip pairs. With `auto`, flips stay on only when the names pair up into left/right sides.

    A horizontal flip that leaves a sided keypoint in place teaches the model that its sides are interchangeable
    (seen on a 13-keypoint animal set whose names used bare L/R: 30–56 % of left predictions nearer the right label),
    so names that look sided but have no counterpart turn flips off. Names with no sides at all turn them off too: a
    mirrored printed target or a mirrored side view shows the keypoints in an arrangement the camera never sees
    (an explicit `augment.flip_pairs: []` flips without swapping anything).
    """
    pairing = pair_sides(names)
    if cfg.augment.flip_pairs != "auto" or cfg.augment.flip == 0:
        return cfg
    print(f"rtkp train: {pairing.describe(names)}", file=sys.stderr)
    if pairing.unpaired:
        print(
            f"rtkp train: warning: {', '.join(pairing.unpaired)} look sided but have no counterpart: horizontal flips "
            "are off (name both sides, or set augment.flip_pairs to a list of [left, right] pairs)",
            file=sys.stderr,
        )
    elif not pairing.pairs:
        print(
            "rtkp train: no left/right keypoints: horizontal flips are off (augment.flip_pairs: [] flips anyway)",
            file=sys.stderr,
        )
    else:
        return cfg
    return dataclasses.replace(cfg, augment=dataclasses.replace(cfg.augment, flip=0.0))


@dataclass(frozen=True)
class InstancePlan:
    """Whether the model finds several animals per frame, and the manifest entries that say how (rtkp.manifest)."""

    several: bool
    max_instances: int | None = None  # the graph's peaks per keypoint
    default_instances: int | None = None  # --max-instances by default: the most animals a labelled frame holds
    instance_size: float | None = None  # median longer side of a labelled animal's keypoint box, source px
    pose_template: dict | None = None  # rtkp.instances.pose.pose_prior of the labelled animals

    def manifest_entries(self) -> dict:
        if not self.several:
            return {}
        return {
            "max_instances": self.max_instances,
            "default_instances": self.default_instances,
            "instance_size": self.instance_size,
            **({"pose_template": self.pose_template} if self.pose_template else {}),
        }


def instance_plan(data: Dataset, cfg: Config) -> InstancePlan:
    """Single- or multi-instance, from `model.max_instances` and the data (rtkp.config.ModelConfig)."""
    most = data.max_instances()
    wanted = cfg.model.max_instances
    if wanted == 1 or (wanted == 0 and most <= 1):
        one_instance_per_frame(data, "--data")
        return InstancePlan(False)
    if cfg.model.head != "coke":
        raise ConfigError("several animals per frame need the CoKe head (model.head: coke)")
    sides = [np.ptp(s.keypoints[s.visible], axis=0).max() for s in data.samples if s.visible.sum() >= 2]
    size = float(np.median(sides)) if sides else float(max(cfg.model.input_size)) / 4
    peaks = wanted if wanted > 1 else max(4, 2 * most)
    from rtkp.data.sides import resolve_flip_pairs
    from rtkp.instances.pose import pose_prior

    pairs = resolve_flip_pairs(data.keypoint_names, cfg.augment.flip_pairs)
    prior = pose_prior([s.keypoints for s in data.samples], [s.visible for s in data.samples], pairs)
    return InstancePlan(True, peaks, max(most, 1), round(size, 1), prior)


def follow_crop_size(data: Dataset, scales: list[float], input_size: tuple[int, int]) -> tuple[int, int] | None:
    """The window the Tracker follows the animals with on the CPU (manifest `crop_size`, rtkp.follow.crop_size_for):
    from each labelled frame's keypoint box around all its animals, in model-input px (scales: each sample's
    letterbox scale, BatchMaker.scales); None when the animals fill too much of the frame for a window to pay."""
    from rtkp.follow import crop_size_for

    boxes = []
    for rows in data.frames().values():
        pts = np.concatenate([data.samples[i].keypoints[data.samples[i].visible] * scales[i] for i in rows])
        if len(pts) >= 2:
            boxes.append(np.ptp(pts, axis=0))
    return crop_size_for(np.asarray(boxes, np.float32).reshape(-1, 2), tuple(input_size))
