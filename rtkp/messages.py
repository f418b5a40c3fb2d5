"""The records that move between pipeline stages and leave rtkp (frozen dataclasses; numpy arrays inside)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    index: 0-based position in the source; pts: presentation time in seconds (None when the source has none);
    capture_ns: time.monotonic_ns() when the frame left the decoder; image: (H, W, 3) uint8 RGB.
    """

    index: int
    pts: float | None
    capture_ns: int
    image: np.ndarray
    name: str | None = None  # file name for image folders
    decode_ms: float = 0.0


@dataclass(frozen=True)
class KeypointFrame:
    """What a frame becomes.

    keypoints: (K, 2) float32 source pixels; scores: (K,) float32 (similarity to the prototype, or heatmap peak);
    visible: (K,) bool; state: (K,) uint8 (0 measured, 1 smoothed, 2 predicted while hidden, 3 missing);
    timings_ms: per-stage durations; dropped: frames the live policy skipped since the previous result.
    """

    index: int
    pts: float | None
    capture_ns: int
    source_size: tuple[int, int]
    keypoints: np.ndarray
    scores: np.ndarray
    visible: np.ndarray
    state: np.ndarray
    timings_ms: dict = field(default_factory=dict)
    dropped: int = 0
    name: str | None = None
