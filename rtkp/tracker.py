"""The synchronous Tracker: the single definition of what a frame becomes.

    letterbox → graph (through a backend) → keypoints in source pixels → visibility → smoothing → KeypointFrame
    └──────────── ModelStage ───────────┘   └──────────────── KeypointStage ──────────────────┘

`rtkp eval`, `rtkp bench`'s naive loop and tests call `Tracker.process`; the multi-process runner calls the two stages
in two processes (inference and post). Each stage is whole in the process that runs it: no stage is built half-empty.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from rtkp.geometry import Letterbox
from rtkp.messages import Frame, KeypointFrame, KeypointsChanged, ModelResult
from rtkp.smoothing import KeypointSmoother, SmoothingConfig
from rtkp.visibility import manifest_margin, visible


class KeypointMapper:
    """The graph's (K, 4) rows in model-input pixels → source-pixel keypoints, scores and the visibility rule.

    The visibility rule is rtkp.visibility's, with the manifest's margin.
    """

    def __init__(self, manifest: dict):
        self.margin = manifest_margin(manifest)
        self.input_size = tuple(manifest["input_size"])
        self._boxes: dict[tuple[int, int], Letterbox] = {}

    def letterbox(self, size: tuple[int, int]) -> Letterbox:
        """Cached Letterbox for a source size (w, h)."""
        if size not in self._boxes:
            self._boxes[size] = Letterbox.fit(size, self.input_size)
        return self._boxes[size]

    def __call__(self, rows: np.ndarray, size: tuple[int, int]):
        """rows: (K, 4) -> (keypoints (K, 2) source px, scores (K,), visible (K,))."""
        xy = self.letterbox(size).to_source(rows[:, :2])
        return xy, rows[:, 2].astype(np.float32), visible(rows, self.margin)


class ModelStage:
    """Frames → graph rows: the letterbox and the backend (the inference process runs this one)."""

    def __init__(self, backend, manifest: dict):
        self.backend = backend
        self.mapper = KeypointMapper(manifest)
        self.bank_version = 0  # bumped whenever the prototypes change (set_prototypes)

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (h, w, 3) uint8 model input."""
        return self.mapper.letterbox((image.shape[1], image.shape[0])).apply(image)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """(B, h, w, 3) uint8 -> (B, K, 4)."""
        return self.backend.infer(batch)

    def set_prototypes(self, prototypes: np.ndarray, clutter: np.ndarray) -> int:
        """Swap the keypoint bank, (K, D) for any K up to the graph's K_max, without rebuilding anything; returns the
        new bank version. Rows of every later `infer` follow the new prototypes."""
        self.backend.set_prototypes(prototypes, clutter)
        self.bank_version += 1
        return self.bank_version


class KeypointStage:
    """Graph rows → KeypointFrame: source pixels, visibility, smoothing (the post process runs this one).

    Stateful (the smoother): call in frame order.
    """

    def __init__(self, manifest: dict, smoothing: SmoothingConfig | None = None):
        self.mapper = KeypointMapper(manifest)
        self.keypoint_names = list(manifest["keypoint_names"])
        self.smoother = KeypointSmoother(len(self.keypoint_names), smoothing or SmoothingConfig(filter="none"))

    def change_keypoints(self, change: KeypointsChanged) -> None:
        """Apply a change of the keypoint set (sent by the inference stage before the first rows that have it):
        names and margins are replaced, and a keypoint that stays keeps its smoothing track, whatever its new row."""
        self.smoother.remap(change.previous)
        self.keypoint_names = list(change.names)
        self.mapper.margin = np.asarray(change.margins, np.float32)

    def finish(self, result: ModelResult) -> KeypointFrame:
        t0 = time.perf_counter()
        xy, scores, visible = self.mapper(result.rows, result.source_size)
        t1 = time.perf_counter()
        frame = result.frame
        latency = (time.monotonic_ns() - frame.capture_ns) / 1e9
        t = frame.pts if frame.pts is not None else frame.capture_ns / 1e9
        xy, visible, state = self.smoother.update(t, xy, visible, latency)
        t2 = time.perf_counter()
        timings = dict(result.timings_ms, match=(t1 - t0) * 1e3, smooth=(t2 - t1) * 1e3)
        return KeypointFrame(
            frame.index,
            frame.pts,
            frame.capture_ns,
            result.source_size,
            xy,
            scores,
            visible,
            state,
            timings,
            result.dropped,
            frame.name,
            result.bank_version,
        )


class Tracker:
    """Both stages in one process. `process(frame)` runs every stage for one frame."""

    def __init__(self, backend, manifest: dict, smoothing: SmoothingConfig | None = None):
        self.manifest = manifest
        self.model = ModelStage(backend, manifest)
        self.keypoints = KeypointStage(manifest, smoothing)
        self.keypoint_names = self.keypoints.keypoint_names

    def process(self, frame: Frame) -> KeypointFrame:
        t0 = time.perf_counter()
        model_input = self.model.preprocess(frame.image)
        t1 = time.perf_counter()
        rows = self.model.infer(model_input[None])[0]
        t2 = time.perf_counter()
        size = (frame.image.shape[1], frame.image.shape[0])
        timings = {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3}
        meta = dataclasses.replace(frame, image=None)
        return self.keypoints.finish(ModelResult(meta, size, rows, timings, 0, self.model.bank_version))

    def process_batch(self, frames: list[Frame]) -> list[KeypointFrame]:
        """`process` for B frames in order, with one graph call for all of them: (B,) Frames -> (B,) KeypointFrames.

        The same numbers as B `process` calls when the backend is batch-invariant (ONNX Runtime on the CPU is:
        tests/test_cluster.py), and the lossless runner batches the same way.
        """
        t0 = time.perf_counter()
        inputs = np.stack([self.model.preprocess(f.image) for f in frames])  # a copy: frames may be reused after
        t1 = time.perf_counter()
        rows = self.model.infer(inputs)
        t2 = time.perf_counter()
        timings = {"preprocess": (t1 - t0) * 1e3 / len(frames), "inference": (t2 - t1) * 1e3, "batch": len(frames)}
        out = []
        for frame, r in zip(frames, rows):
            size = (frame.image.shape[1], frame.image.shape[0])
            meta = dataclasses.replace(frame, image=None)
            out.append(self.keypoints.finish(ModelResult(meta, size, r, timings, 0, self.model.bank_version)))
        return out
