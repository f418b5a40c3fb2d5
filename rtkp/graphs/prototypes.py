"""The inference graph's prototype input (rtkp.model.graph): K_max rows, the K in use first, and a mask of them.

K_max is a shape of the graph, fixed when it is exported or built into an engine, so it is the model folder's
(manifest `max_keypoints`) and every backend pads the K prototypes in use to it. numpy only: the inference stages of
`rtkp run` use it without importing torch.
"""

from __future__ import annotations

import numpy as np

from rtkp.errors import ModelError
from rtkp.manifest import Manifest

DEFAULT_MAX_KEYPOINTS = 32  # prototype rows of an exported graph when the manifest does not set `max_keypoints`


def max_keypoints(manifest: Manifest) -> int:
    """K_max of a model: the manifest's `max_keypoints`, else max(DEFAULT_MAX_KEYPOINTS, K)."""
    k = len(manifest.keypoint_names)
    declared = manifest.max_keypoints
    if declared is None:
        return max(DEFAULT_MAX_KEYPOINTS, k)
    if not isinstance(declared, int) or isinstance(declared, bool) or declared < max(k, 1):
        raise ModelError(f"manifest `max_keypoints` must be an integer >= its {k} keypoints, got {declared!r}")
    return declared


def pad_prototypes(prototypes: np.ndarray, k_max: int) -> tuple[np.ndarray, np.ndarray]:
    """(K, D) prototypes -> (padded (K_max, D) float32 with zero rows after K, active (K_max,) float32 1/0)."""
    prototypes = np.asarray(prototypes, np.float32)
    k, d = prototypes.shape
    if k > k_max:
        raise ModelError(f"{k} prototypes, but this model's graph holds at most {k_max} (manifest `max_keypoints`)")
    padded = np.zeros((k_max, d), np.float32)
    padded[:k] = prototypes
    active = np.zeros(k_max, np.float32)
    active[:k] = 1.0
    return padded, active
