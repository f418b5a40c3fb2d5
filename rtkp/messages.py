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
    bank_version: int = 0  # the keypoint bank (prototypes and names) that produced it; changes when keypoints do


@dataclass(frozen=True)
class ModelResult:
    """Inference → post stage: one frame's graph rows and what the post stage needs to finish it.

    frame: the decoded frame's metadata (its `image` is None: pixels stay in the ring); source_size: (W, H);
    rows: (K, 4) float32 x, y (model-input px), score, clutter_score; timings_ms: decode, preprocess, inference (per
    batch), batch; dropped: frames the live policy skipped before this one; bank_version: see KeypointFrame;
    slot: the ring slot still holding the pixels for sinks that draw (None: released already);
    image: the pixels when they came through the pipe instead of the ring (frames larger than a slot), else None.
    """

    frame: Frame
    source_size: tuple[int, int]
    rows: np.ndarray
    timings_ms: dict
    dropped: int = 0
    bank_version: int = 0
    slot: int | None = None
    image: np.ndarray | None = None


@dataclass(frozen=True)
class KeypointsChanged:
    """Inference → post, in frame order: every ModelResult after this one has rows for these keypoints.

    Sent when a control request (rtkp.control) adds, removes or renames keypoints. bank_version: the new version
    (ModelStage.bank_version; the stream's `bank`); names: (K,) in row order; margins: (K,) float32 visibility margins;
    skeleton: index pairs into names; shots: {name: number of shots} of the keypoints added from shots;
    previous: (K,) each keypoint's row before the change, −1 for a new one (a renamed keypoint keeps its row).
    """

    bank_version: int
    names: tuple[str, ...]
    margins: np.ndarray
    previous: tuple[int, ...]
    skeleton: tuple[tuple[int, int], ...] = ()
    shots: dict = field(default_factory=dict)


# Stage -> parent reports (the run's report queue). KeypointFrames travel on it too, for CollectSink.


@dataclass(frozen=True)
class StageError:
    """A stage could not go on: `stage` is decode, infer or post; `message` is one line for the user."""

    stage: str
    message: str


@dataclass(frozen=True)
class StageSummary:
    """A stage's figures at its end (counters, timings), merged into the run summary under `stage`."""

    stage: str
    figures: dict


@dataclass(frozen=True)
class BackendReady:
    """The inference stage has loaded the model on this backend (its name says the precision too)."""

    name: str


@dataclass(frozen=True)
class Progress:
    """Frames the post stage has finished so far."""

    frames: int
