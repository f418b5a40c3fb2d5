"""Where finished frames go: the post stage hands every KeypointFrame, in frame order, to a list of sinks.

One small interface (Sink): `write(item)` per frame, `keypoints_changed(context, bank)` when a control request changed
the keypoints (a no-op for most), `close(complete)` once. Built in: publish (ZeroMQ), display (the
window), record (annotated MP4), collect (every frame to the parent: tests, bench). `rtkp export` adds its writer
sinks through `RunOptions.sinks`: picklable specs whose `open(context)` builds the sink inside the post process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from rtkp.manifest import Manifest
from rtkp.messages import KeypointFrame


@dataclass(frozen=True)
class SinkContext:
    """What every sink may need to know about the run. names: (K,) keypoint names; skeleton: [(a, b)] index pairs;
    shots: {name: shots} of keypoints added from shots (rtkp.control). When the keypoints change during a run, the
    post stage makes a new context and calls every sink's `keypoints_changed(context, bank)`."""

    names: list[str]
    skeleton: list[tuple[int, int]]
    manifest: Manifest
    source: str
    model_id: str
    shots: dict = field(default_factory=dict)


class SinkItem:
    """One finished frame as sinks see it: the KeypointFrame, its pixels (only when a sink needs them) and the HUD
    line. `drawn()` is the overlay, drawn once however many sinks use it."""

    def __init__(self, kf: KeypointFrame, image: np.ndarray | None, hud: str, context: SinkContext):
        self.kf, self.image, self.hud, self._context = kf, image, hud, context
        self._drawn: np.ndarray | None = None

    @property
    def context(self) -> SinkContext:
        """The run's context when this frame was finished (its keypoint names are this frame's)."""
        return self._context

    def drawn(self) -> np.ndarray:
        if self._drawn is None:
            from rtkp.sinks.draw import draw_keypoints

            ctx = self._context
            by_track = ctx.manifest.multi_instance  # each animal in its track's colour, labelled
            self._drawn = draw_keypoints(self.image, self.kf, ctx.names, ctx.skeleton, self.hud, by_track=by_track)
        return self._drawn


class Sink(Protocol):
    """name: for timings and the summary; needs_pixels: whether write() uses item.image / item.drawn()."""

    name: str
    needs_pixels: bool

    def write(self, item: SinkItem) -> None: ...

    def keypoints_changed(self, context: SinkContext, bank: int) -> None:
        """The keypoints changed (names, skeleton, shots in `context`; `bank`: the new bank version) before the next
        item: every later item has them. A sink with nothing to do about it does nothing."""
        ...

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

    def keypoints_changed(self, context: SinkContext, bank: int) -> None:
        self.publisher.set_keypoints(context.names, context.skeleton, bank, context.shots)

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
    """The live window; `q` or Esc asks the run to stop. With a control endpoint (the run's private one for the
    window), clicks teach the running model new keypoints (rtkp.control.window.ClickTeacher: click, type a name,
    Enter; u undoes, d deletes), through the same control requests as the socket."""

    name, needs_pixels = "display", True

    def __init__(self, stop, control: str | None = None):
        self.stop = stop
        self.teacher = self.client = None
        self._last = None  # (image, kf) on screen: what a click refers to
        if control:
            from rtkp.control.remote import ControlClient
            from rtkp.control.window import ClickTeacher

            self.client = ControlClient(control)
            self.teacher = ClickTeacher(self.client)
        self._window = False

    def _open_window(self) -> None:
        import cv2

        cv2.namedWindow("rtkp", cv2.WINDOW_AUTOSIZE)  # autosize: window pixels are the frame's source pixels
        if self.teacher is not None:
            cv2.setMouseCallback("rtkp", self._on_mouse)
        self._window = True

    def _on_mouse(self, event, x, y, flags, param) -> None:
        import cv2

        if event == cv2.EVENT_MOUSEMOVE:
            self.teacher.move(x, y)
        elif event == cv2.EVENT_LBUTTONDOWN and self._last is not None:
            self.teacher.click(x, y, self._last[0])

    def write(self, item: SinkItem) -> None:
        import cv2

        from rtkp.sinks.draw import draw_lines, draw_marker

        if not self._window:
            self._open_window()
        shown = item.drawn()
        if self.teacher is not None:
            self.teacher.poll()
            self._last = (item.image, item.kf)
            shown = shown.copy()  # the extra lines are the window's, not the recording's
            draw_lines(shown, self.teacher.hud_lines(item.context.shots))
            if self.teacher.pending is not None:
                draw_marker(shown, self.teacher.pending.x, self.teacher.pending.y)
        cv2.imshow("rtkp", cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
        key = cv2.waitKey(1)
        names = list(item.context.names)
        if self.teacher is not None and self.teacher.key(key, names, item.context.shots, item.kf.keypoints):
            return
        if key & 0xFF in (ord("q"), 27):
            self.stop.set()

    def keypoints_changed(self, context: SinkContext, bank: int) -> None:
        """Nothing to do: each item carries its own context."""

    def close(self, complete: bool) -> dict:
        import cv2

        cv2.destroyAllWindows()
        if self.client is not None:
            self.client.close()
        return {}


class RecordSink:
    """The annotated video, with the source's rate and timestamps (record.VideoWriter)."""

    name, needs_pixels = "record", True

    def __init__(self, path: str, source: str):
        self.path, self.source, self.writer = path, source, None

    def write(self, item: SinkItem) -> None:
        if self.writer is None:
            from rtkp.sinks.video import VideoWriter

            image = item.image
            self.writer = VideoWriter.for_source(self.path, (image.shape[1], image.shape[0]), self.source)
        self.writer.write(item.drawn(), item.kf.pts)

    def keypoints_changed(self, context: SinkContext, bank: int) -> None:
        """Nothing to do: each item carries its own context."""

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

    def keypoints_changed(self, context: SinkContext, bank: int) -> None:
        """Nothing to do: each item carries its own context."""

    def close(self, complete: bool) -> dict:
        return {}
