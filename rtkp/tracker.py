"""The synchronous Tracker: the single definition of what a frame becomes.

preprocess (letterbox to the model size) -> backend (the exported graph) -> match (model px -> source px, visibility
rule) -> smooth (optional, stateful). The multi-process runner calls the same stages in different processes and the
offline exporter calls `process`, so live and offline output cannot drift apart.
"""

from __future__ import annotations

import time

import numpy as np

from .geometry import Letterbox
from .messages import Frame, KeypointFrame
from .pipeline.smooth import KeypointSmoother, SmoothingConfig


class Matcher:
    """Turns the graph's (K, 4) rows into source-pixel keypoints with the manifest's visibility rule."""

    def __init__(self, manifest: dict):
        self.margin = float(manifest.get("visibility_margin", 0.0))
        self.input_size = tuple(manifest["input_size"])
        self._boxes: dict[tuple[int, int], Letterbox] = {}

    def letterbox(self, size: tuple[int, int]) -> Letterbox:
        """Cached Letterbox for a source size (w, h)."""
        if size not in self._boxes:
            self._boxes[size] = Letterbox.fit(size, self.input_size)
        return self._boxes[size]

    def __call__(self, raw: np.ndarray, size: tuple[int, int]):
        """raw: (K, 4) -> (keypoints (K, 2) source px, scores (K,), visible (K,))."""
        xy = self.letterbox(size).to_source(raw[:, :2])
        return xy, raw[:, 2].astype(np.float32), (raw[:, 2] - raw[:, 3]) > self.margin


class Tracker:
    """backend + matcher + smoother. `process(frame)` runs every stage; the stages are public for the runner."""

    def __init__(self, backend, manifest: dict, smoothing: SmoothingConfig | None = None):
        self.backend = backend
        self.manifest = manifest
        self.matcher = Matcher(manifest)
        self.keypoint_names = list(manifest["keypoint_names"])
        self.smoother = KeypointSmoother(len(self.keypoint_names), smoothing or SmoothingConfig(filter="none"))

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (h, w, 3) uint8 model input."""
        return self.matcher.letterbox((image.shape[1], image.shape[0])).apply(image)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """(B, h, w, 3) uint8 -> (B, K, 4)."""
        return self.backend.infer(batch)

    def finish(self, frame_meta: Frame, size: tuple[int, int], raw: np.ndarray, timings: dict, dropped: int = 0):
        """match + smooth one frame's (K, 4) result into a KeypointFrame (stateful: call in frame order)."""
        t0 = time.perf_counter()
        xy, scores, visible = self.matcher(raw, size)
        t1 = time.perf_counter()
        latency = (time.monotonic_ns() - frame_meta.capture_ns) / 1e9
        t = frame_meta.pts if frame_meta.pts is not None else frame_meta.capture_ns / 1e9
        xy, visible, state = self.smoother.update(t, xy, visible, latency)
        t2 = time.perf_counter()
        timings = dict(timings, match=(t1 - t0) * 1e3, smooth=(t2 - t1) * 1e3)
        return KeypointFrame(
            frame_meta.index,
            frame_meta.pts,
            frame_meta.capture_ns,
            size,
            xy,
            scores,
            visible,
            state,
            timings,
            dropped,
            frame_meta.name,
        )

    def process(self, frame: Frame) -> KeypointFrame:
        """Every stage for one frame, in this process."""
        t0 = time.perf_counter()
        model_input = self.preprocess(frame.image)
        t1 = time.perf_counter()
        raw = self.infer(model_input[None])[0]
        t2 = time.perf_counter()
        size = (frame.image.shape[1], frame.image.shape[0])
        return self.finish(frame, size, raw, {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3})
