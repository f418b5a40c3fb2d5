"""Rolling latency percentiles and counters for the pipeline's stages."""

from __future__ import annotations

import time
from collections import deque

import numpy as np


class RollingStats:
    """The last `window` samples (ms) of each named stage; percentiles on demand."""

    def __init__(self, window: int = 300):
        self.window = window
        self.samples: dict[str, deque] = {}

    def add(self, stage: str, ms: float) -> None:
        q = self.samples.get(stage)
        if q is None:
            q = self.samples[stage] = deque(maxlen=self.window)
        q.append(float(ms))

    def add_all(self, timings: dict) -> None:
        for stage, ms in timings.items():
            self.add(stage, ms)

    def percentiles(self, stage: str, qs=(50, 95, 99)) -> dict[str, float]:
        data = self.samples.get(stage)
        if not data:
            return {}
        values = np.percentile(np.fromiter(data, float), qs)
        return {f"p{q}": round(float(v), 3) for q, v in zip(qs, values)}

    def summary(self) -> dict[str, dict[str, float]]:
        return {stage: self.percentiles(stage) for stage in self.samples}


class RunCounters:
    """The post stage's figures: frames finished, frames dropped upstream, batch sizes and per-stage timings (`stats`,
    ms). `status()` is what the publisher's `.status` message says; `hud()` the line drawn on the frame; `summary()`
    the post stage's part of the run summary."""

    def __init__(self, window: int = 300):
        self.stats = RollingStats(window)
        self.frames = self.dropped = self.batch_sum = 0
        self.first_ns: int | None = None
        self.t_start = time.monotonic()

    def add(self, kf) -> None:
        """Count a finished KeypointFrame and take its stage timings (ms)."""
        self.frames += 1
        self.dropped += kf.dropped
        self.batch_sum += kf.timings_ms.get("batch", 1)
        self.first_ns = self.first_ns or time.monotonic_ns()
        self.stats.add_all({k: v for k, v in kf.timings_ms.items() if k != "batch"})

    def published(self, kf) -> None:
        """The frame has reached its first reader (the publisher, else the last sink): capture→publish latency."""
        self.stats.add("capture_to_publish", (time.monotonic_ns() - kf.capture_ns) / 1e6)

    def status(self) -> dict:
        return {
            "fps": self.frames / max(time.monotonic() - self.t_start, 1e-9),
            "frames": self.frames,
            "dropped": self.dropped,
            "latency_ms": self.stats.percentiles("capture_to_publish"),
        }

    def hud(self) -> str:
        """fps since the first frame, median capture→publish and drops, for the drawn overlay."""
        seconds = (time.monotonic_ns() - self.first_ns) / 1e9 if self.first_ns else 0.0
        fps = self.frames / max(seconds, 1e-9) if self.frames > 1 else 0.0
        p50 = self.stats.percentiles("capture_to_publish").get("p50", 0)
        return f"{fps:5.1f} fps  {p50:5.1f} ms  drops {self.dropped}"

    def summary(self, complete: bool) -> dict:
        """complete: the stream ended by itself. published/publish_dropped are the publisher's (0 without one)."""
        return {
            "frames": self.frames,
            "dropped": self.dropped,
            "seconds": round(time.monotonic() - self.t_start, 3),
            "stages_ms": self.stats.summary(),
            "mean_batch": round(self.batch_sum / max(self.frames, 1), 2),
            "published": 0,
            "publish_dropped": 0,
            "complete": complete,
        }
