"""Where finished frames go: the post stage hands every KeypointFrame, in frame order, to a list of sinks.

One small interface (Sink): `write(item)` per frame, `close(complete)` once. Built in: publish (ZeroMQ), display (the
window), record (annotated MP4), collect (every frame to the parent: tests, bench). `rtkp export` adds its writer
sinks through `RunOptions.sinks`: picklable specs whose `open(context)` builds the sink inside the post process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..messages import KeypointFrame


@dataclass(frozen=True)
class SinkContext:
    """What every sink may need to know about the run. names: (K,) keypoint names; skeleton: [(a, b)] index pairs."""

    names: list[str]
    skeleton: list[tuple[int, int]]
    manifest: dict
    source: str
    model_id: str


class SinkItem:
    """One finished frame as sinks see it: the KeypointFrame, its pixels (only when a sink needs them) and the HUD
    line. `drawn()` is the overlay, drawn once however many sinks use it."""

    def __init__(self, kf: KeypointFrame, image: np.ndarray | None, hud: str, context: SinkContext):
        self.kf, self.image, self.hud, self._context = kf, image, hud, context
        self._drawn: np.ndarray | None = None

    def drawn(self) -> np.ndarray:
        if self._drawn is None:
            from ..viz import draw_keypoints

            ctx = self._context
            self._drawn = draw_keypoints(self.image, self.kf, ctx.names, ctx.skeleton, self.hud)
        return self._drawn


class Sink(Protocol):
    """name: for timings and the summary; needs_pixels: whether write() uses item.image / item.drawn()."""

    name: str
    needs_pixels: bool

    def write(self, item: SinkItem) -> None: ...

    def close(self, complete: bool) -> dict:
        """complete: the stream ended by itself (not stopped or failed). Returns this sink's summary."""
        ...


class SinkSpec(Protocol):
    """A picklable recipe for a sink, opened in the post process."""

    def open(self, context: SinkContext) -> Sink: ...


class PublishSink:
    """ZeroMQ: every frame on `.keypoints`, plus a `.status` message once a second (see publish.py)."""

    name, needs_pixels = "publish", False

    def __init__(self, publisher, status):
        self.publisher, self.status = publisher, status  # status(): the post stage's current counters
        self._last_status = None

    def write(self, item: SinkItem) -> None:
        self.publisher.publish(item.kf)
        now = time.monotonic()
        if self._last_status is None or now - self._last_status >= 1.0:
            self._last_status = now
            self.publisher.status(self.status())

    def close(self, complete: bool) -> dict:
        summary = {"published": self.publisher.sent, "publish_dropped": self.publisher.dropped}
        self.publisher.close()
        return summary


class DisplaySink:
    """The live window; `q` or Esc asks the run to stop."""

    name, needs_pixels = "display", True

    def __init__(self, stop):
        self.stop = stop

    def write(self, item: SinkItem) -> None:
        import cv2

        cv2.imshow("rtkp", cv2.cvtColor(item.drawn(), cv2.COLOR_RGB2BGR))
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self.stop.set()

    def close(self, complete: bool) -> dict:
        import cv2

        cv2.destroyAllWindows()
        return {}


class RecordSink:
    """The annotated video, with the source's rate and timestamps (record.VideoWriter)."""

    name, needs_pixels = "record", True

    def __init__(self, path: str, source: str):
        self.path, self.source, self.writer = path, source, None

    def write(self, item: SinkItem) -> None:
        if self.writer is None:
            from .record import VideoWriter

            image = item.image
            self.writer = VideoWriter.for_source(self.path, (image.shape[1], image.shape[0]), self.source)
        self.writer.write(item.drawn(), item.kf.pts)

    def close(self, complete: bool) -> dict:
        if self.writer is None:
            return {}
        self.writer.close()
        return {"recorded": self.writer.frames}


class CollectSink:
    """Every KeypointFrame to the parent process (its `on_frame`): for tests and the bench, not for long videos."""

    name, needs_pixels = "collect", False

    def __init__(self, report):
        self.report = report

    def write(self, item: SinkItem) -> None:
        self.report.put(item.kf)

    def close(self, complete: bool) -> dict:
        return {}
