"""The records that move between pipeline stages and leave rtkp (frozen dataclasses; numpy arrays inside)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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
class Instance:
    """One animal (object) in a frame.

    track: an id >= 0 that stays with the animal from frame to frame (through touching, crossing, short occlusion;
    an animal that left the view for longer than the tracker holds it comes back with a new id); score: the
    instance's score, the mean of its visible keypoints' scores (−1 when none is visible);
    keypoints (K, 2) float32 source pixels; scores (K,) float32; visible (K,) bool; state (K,) uint8: the same
    meanings as KeypointFrame's arrays, row k is keypoint k of the model's names.
    """

    track: int
    score: float
    keypoints: np.ndarray
    scores: np.ndarray
    visible: np.ndarray
    state: np.ndarray


STATE_MISSING = 3  # KeypointFrame.state / Instance.state: no measurement and no prediction


def missing_keypoints(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The frame-level arrays of a frame in which no instance was found: (K, 2) zeros, scores −1, hidden, missing."""
    return (
        np.zeros((k, 2), np.float32),
        np.full(k, -1.0, np.float32),
        np.zeros(k, bool),
        np.full(k, STATE_MISSING, np.uint8),
    )


@dataclass(frozen=True)
class KeypointFrame:
    """What a frame becomes.

    keypoints: (K, 2) float32 source pixels; scores: (K,) float32 (similarity to the prototype, or heatmap peak);
    visible: (K,) bool; state: (K,) uint8 (0 measured, 1 smoothed, 2 predicted while hidden, 3 missing);
    timings_ms: per-stage durations; dropped: frames the live policy skipped since the previous result.

    instances: every animal found, in increasing track order. A single-instance model always reports exactly one,
    Instance(track 0) holding these same arrays. For a multi-instance model (manifest `max_instances`) there are 0 to
    --max-instances, and the frame-level arrays above are those of the first instance (the lowest track id), or
    `missing_keypoints(K)` when there is none, so that readers of one animal keep working.
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
    instances: tuple[Instance, ...] | None = None  # None: built without it (one instance, the arrays above)

    def __post_init__(self):
        if self.instances is None:  # single-instance: the one instance is the frame's own arrays
            one = Instance(
                0, instance_score(self.scores, self.visible), self.keypoints, self.scores, self.visible, self.state
            )
            object.__setattr__(self, "instances", (one,))


def instance_score(scores: np.ndarray, visible: np.ndarray) -> float:
    """An instance's score: the mean score of its visible keypoints, −1 when none is visible."""
    visible = np.asarray(visible, bool)
    return float(np.mean(np.asarray(scores)[visible])) if visible.any() else -1.0


@dataclass(frozen=True)
class ModelResult:
    """Inside the Tracker (ModelStage → KeypointStage): one frame's graph rows and what is needed to finish it.

    frame: the decoded frame's metadata (its `image` is None); source_size: (W, H); rows: (K, 4) float32 x, y
    (model-input px), score, clutter_score — or, from a multi-instance graph, (K, P, 6): P peaks per keypoint, each
    x, y, score, clutter_score, centre_x, centre_y (the centre of the animal it belongs to, model-input px);
    timings_ms: decode, preprocess, inference (per batch), batch; dropped: frames the live policy skipped before this
    one; bank_version: see KeypointFrame.
    """

    frame: Frame
    source_size: tuple[int, int]
    rows: np.ndarray
    timings_ms: dict
    dropped: int = 0
    bank_version: int = 0


@dataclass(frozen=True)
class TrackedFrame:
    """Inference → post, in frame order: a finished frame and where sinks that draw find its pixels.

    kf: the KeypointFrame (the Tracker's, whole); slot: the ring slot still holding the pixels (None: released
    already, no sink draws); image: the pixels when they came through the pipe instead of the ring (frames larger
    than a slot), else None.
    """

    kf: KeypointFrame
    slot: int | None = None
    image: np.ndarray | None = None


@dataclass(frozen=True)
class KeypointsChanged:
    """Inference → post, in frame order: every TrackedFrame after this one has these keypoints (the Tracker in the
    inference process has changed already; the post process tells the sinks, so the publisher re-sends `.meta`
    before the first keypoints of the new set).

    Sent when a control request (rtkp.control) adds, removes or renames keypoints. bank_version: the new version
    (Tracker.bank_version; the stream's `bank`); names: (K,) in row order; skeleton: index pairs into names;
    shots: {name: number of shots} of the keypoints added from shots.
    """

    bank_version: int
    names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...] = ()
    shots: dict = field(default_factory=dict)


# Stage -> parent reports (the run's report queue). KeypointFrames travel on it too, for CollectSink.


@dataclass(frozen=True)
class StageError:
    """A stage could not go on: `stage` is decode, infer or post; `message` is one line for the user. source: the
    source failed before its first frame (the run raises SourceError, as for a bad --source). kind: the name of the
    RtkpError subclass the stage raised, which the run raises again (its exit code: a ModelError exits 5 wherever it
    happens); "" for a PipelineError."""

    stage: str
    message: str
    source: bool = False
    kind: str = ""


@dataclass(frozen=True)
class FrameSize:
    """Decode → parent, once: the source's first frame has `nbytes` of pixels (H × W × 3); the parent sizes the
    ring's slots from it before the frame goes in (the decoder is the only one to open the source)."""

    nbytes: int


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
