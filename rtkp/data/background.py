"""An empty scene from the training frames themselves: their per-pixel median, when the object moves enough.

A static camera that films a moving animal sees every background pixel uncovered in most frames, so the median of the
training frames is the scene without the animal (on the DLC mouse: a clean empty arena from 92 frames, although the
mouse never leaves the arena's left third). Training crops of it teach "nothing here": every keypoint hidden, every
cell clutter, which is what an empty arena at run time must give. Where the object stays put (a hand on a joystick), the
median still shows it, and training on it as empty would teach the model to hide the object: the median is used only
when it differs from the frames at their labelled keypoints.
"""

from __future__ import annotations

import numpy as np

MIN_FRAMES = 10
MAX_FRAMES = 200  # spread evenly over the data: the median of more changes little and costs memory
PATCH = 4  # half-size of the patch compared at each keypoint (pixels)
MIN_DIFFERENCE = 20.0  # mean absolute grey-level difference that says "the object is here, not in the median"
MIN_SHARE = 0.9  # of labelled keypoints whose patch must differ from the median


def empty_background(images: list[np.ndarray], keypoints: list[np.ndarray], visible: list[np.ndarray]):
    """(median image (H, W, 3) uint8, None) for the most common frame size, or (None, the reason it is not used).

    images: (H, W, 3) uint8 RGB; keypoints: (K, 2) pixels; visible: (K,) bool — the training samples.
    """
    sizes: dict[tuple, list[int]] = {}
    for i, im in enumerate(images):
        sizes.setdefault(im.shape, []).append(i)
    shape, members = max(sizes.items(), key=lambda kv: len(kv[1]))
    if len(members) < MIN_FRAMES:
        return None, f"fewer than {MIN_FRAMES} frames of one size"
    members = [members[j] for j in np.linspace(0, len(members) - 1, min(len(members), MAX_FRAMES)).round().astype(int)]
    median = np.median(np.stack([images[i] for i in members]), axis=0).astype(np.uint8)
    grey_median = median.astype(np.float32).mean(2)
    differs = []
    h, w = shape[:2]
    for i in members:
        grey = images[i].astype(np.float32).mean(2)
        for x, y in keypoints[i][visible[i]]:
            x0, y0 = int(np.clip(round(x) - PATCH, 0, w - 1)), int(np.clip(round(y) - PATCH, 0, h - 1))
            x1, y1 = int(np.clip(round(x) + PATCH + 1, 1, w)), int(np.clip(round(y) + PATCH + 1, 1, h))
            diff = np.abs(grey[y0:y1, x0:x1] - grey_median[y0:y1, x0:x1]).mean()
            differs.append(diff >= MIN_DIFFERENCE)
    share = float(np.mean(differs)) if differs else 0.0
    if share < MIN_SHARE:
        return None, f"the object stays in view in the frames' median ({share:.0%} of keypoints differ from it)"
    return median, None
