"""Rolling latency percentiles and counters for the pipeline's stages."""

from __future__ import annotations

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
