"""Frame sources: cameras, video files, network streams, image folders and globs, lavfi test sources.

Every frame carries its index, PTS (seconds) and capture time (time.monotonic_ns() when it left the decoder). A source
that cannot be opened raises SourceError naming the source and the reason, in one line. Live sources (cameras,
streams) reconnect with exponential backoff; files end. `Source(spec, start=N)` begins at frame N with the index and PTS
a full decode gives it (resumed exports, and chunks of a long video).

What --source names: source_spec.py; opening containers and a file's frame table (its frames without decoding them):
containers.py (its `open_container` is the one place a container is opened, called through the module so that a test
can count the opens). A live source is opened only by the Source that reads it (`check_source` does not open it): a
device may refuse a second open while the first is held, and each open costs about a second.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Iterator

import numpy as np

from rtkp.errors import SourceError
from rtkp.messages import Frame
from rtkp.pipeline import containers
from rtkp.pipeline.containers import (
    DECODE_THREADS,
    FrameTable,
    av_error,
    check_camera,
    frame_table,
    open_container,
    prime_decoder,
)
from rtkp.pipeline.source_spec import SourceSpec, image_files, parse_source

# the names callers of rtkp.pipeline.sources use, wherever they are defined
__all__ = ["Source", "SourceSpec", "check_source", "frame_table", "image_files", "open_container", "parse_source"]


def check_source(source: str | SourceSpec) -> SourceSpec:
    """Fail early, in one line, for a source that cannot work, at the cost of at most a cheap probe: files and lavfi
    graphs are opened and closed, image sources listed; a camera is only checked to exist and a stream not at all
    (live sources are opened once, by the decoder). Returns the spec."""
    spec = parse_source(source) if isinstance(source, str) else source
    if spec.kind == "images":
        image_files(spec)
    elif spec.kind == "camera":
        check_camera(spec)
    elif not spec.live:
        containers.open_container(spec).close()
    return spec


class Source:
    """Iterates Frames from a SourceSpec.

    realtime: pace file-like sources by their timestamps (what a camera would do), so that the `live` policy can be
    exercised with files and lavfi graphs. max_frames: stop after that many frames. `skipped` counts frames that failed
    to decode (files continue past them); `errors` keeps their messages; `corrupt` counts frames the decoder flagged
    corrupt (errors it concealed).

    start: the first frame to yield; frames N, N+1, ... come with the index, PTS and pixels of a full decode. Video
    files: seek to the keyframe at or before frame N (frame_table), decode from it, discard until N's pts; when a seek
    lands elsewhere or the table is not exact, decode from the start and discard N frames. (Undecodable packets before
    N: the table counts their frames, a full decode does not.) Image folders: from file N (an image's index is its
    position in the sorted list). lavfi: N frames are generated and discarded. table: the file's frame_table when the
    caller has it already (chunks of one video: the file is demuxed once, not once per chunk).

    Decoding uses FFmpeg's slice threads only, never frame threads: a video whose decoder conceals errors then gives
    the same pixels on every decode (with frame threads the concealment is not repeatable: a 200-frame stream copy of
    the DLC mouse video from a later keyframe, two decodes differed in 170 frames), so `rtkp run` on a file, `rtkp
    export`, its resumes and Ray chunks all see the same frames. Valid streams decode to the same pixels either way,
    slice threads were no slower on the mouse video (2.7-3.1 against 3.1-3.3 ms a frame), and frame threads would
    delay a live stream by a frame per thread.
    """

    def __init__(
        self,
        spec: SourceSpec,
        realtime: bool = False,
        max_frames: int | None = None,
        reconnect: bool | None = None,
        backoff_s: tuple[float, float] = (0.5, 8.0),
        give_up_s: float | None = None,
        start: int = 0,
        table: FrameTable | None = None,
    ):
        if start and spec.live:
            raise SourceError(f"source {spec.text!r}: a live source cannot start at frame {start}")
        self.spec = spec
        self.start = max(int(start), 0)
        self.table = table
        self.realtime = realtime
        self.max_frames = max_frames
        self.reconnect = spec.live if reconnect is None else reconnect
        self.backoff_s = backoff_s
        self.give_up_s = give_up_s  # stop reconnecting after this long without a frame (None: never)
        self.skipped, self.reconnects, self.stopped = 0, 0, False
        # frames the decoder flagged corrupt (errors it concealed), among those yielded
        self.corrupt, self._last_corrupt = 0, False
        self.errors: list[str] = []

    def _camera(self) -> Iterator[Frame]:
        """A camera through FFmpeg, opened once; through OpenCV only when FFmpeg cannot open it but OpenCV can (the
        fallback for platforms or devices PyAV's build does not support)."""
        try:
            container = containers.open_container(self.spec)
        except SourceError as exc:
            check_camera(self.spec)  # no device at all: nothing for OpenCV to find either
            yield from self._opencv_camera(exc)
            return
        yield from self._video(container)

    def _opencv_camera(self, ffmpeg_error: SourceError) -> Iterator[Frame]:
        """The camera through OpenCV; `ffmpeg_error` (FFmpeg's reason) when OpenCV cannot open it either."""
        import cv2

        index = int(self.spec.target) if self.spec.target.isdigit() else self.spec.target
        cap = cv2.VideoCapture(index)
        if not cap.isOpened():
            cap.release()
            raise ffmpeg_error
        t_start, i = time.monotonic(), 0
        try:
            while not self.stopped:
                t0 = time.perf_counter()
                ok, bgr = cap.read()
                if not ok:
                    raise SourceError(f"source {self.spec.text!r}: the camera stopped delivering frames (OpenCV)")
                image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                yield Frame(
                    i, time.monotonic() - t_start, time.monotonic_ns(), image, None, (time.perf_counter() - t0) * 1e3
                )
                i += 1
        finally:
            cap.release()

    def __iter__(self) -> Iterator[Frame]:
        if self.spec.kind == "images":
            frames = self._images()
        elif self.spec.kind == "camera":
            frames = self._camera()
        else:
            frames = self._video()
        count, t0 = 0, None
        for frame in frames:
            if self.realtime and frame.pts is not None:
                if t0 is None:
                    t0 = time.monotonic() - frame.pts
                delay = t0 + frame.pts - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                frame = Frame(frame.index, frame.pts, time.monotonic_ns(), frame.image, frame.name, frame.decode_ms)
            yield frame
            count += 1
            if self.stopped or (self.max_frames is not None and count >= self.max_frames):
                return

    def _images(self) -> Iterator[Frame]:
        from rtkp.data.sample import read_image
        from rtkp.errors import DataError

        files = image_files(self.spec)
        for i, path in enumerate(files[self.start :], self.start):
            t0 = time.perf_counter()
            try:
                image = read_image(path)
            except DataError as exc:
                self.skipped += 1
                self.errors.append(str(exc))
                continue
            yield Frame(i, None, time.monotonic_ns(), image, path.name, (time.perf_counter() - t0) * 1e3)

    def _video(self, opened=None) -> Iterator[Frame]:
        """opened: the source's container when the caller has opened it already (used for the first connection)."""
        import av

        index, delay, last_frame = self.start, self.backoff_s[0], time.monotonic()
        while True:
            try:
                container = opened if opened is not None else containers.open_container(self.spec)
                opened = None
            except SourceError as exc:
                if not self.reconnect or index == self.start and self.reconnects == 0:
                    raise
                if self.give_up_s is not None and time.monotonic() - last_frame > self.give_up_s:
                    raise SourceError(f"{exc} (gave up after {self.give_up_s:g} s without a frame)") from None
                self._log(f"{exc}; retrying in {delay:.1f} s")
                time.sleep(delay)
                delay = min(delay * 2, self.backoff_s[1])
                self.reconnects += 1
                continue
            try:
                frames = self._decode_from(container, av) if index == self.start else self._decode(container, av)
                for pts, image, ms in frames:
                    delay = self.backoff_s[0]
                    last_frame = time.monotonic()
                    self.corrupt += self._last_corrupt
                    yield Frame(index, pts, time.monotonic_ns(), image, None, ms)
                    index += 1
                    if self.stopped:
                        return
            except (av.FFmpegError, OSError) as exc:
                if not self.reconnect:
                    self.errors.append(str(av_error(self.spec, exc)))
                    return
                self._log(f"{av_error(self.spec, exc)}; reconnecting")
            finally:
                container.close()
            if not self.reconnect:
                return
            self._log(f"source {self.spec.text!r} ended; reconnecting in {delay:.1f} s")
            time.sleep(delay)
            delay = min(delay * 2, self.backoff_s[1])
            self.reconnects += 1

    def _decode(self, container, av, ticks: bool = False, from_key: bool = False) -> Iterator[tuple]:
        """(pts seconds, RGB image, decode ms) per decodable frame; corrupt packets are counted and skipped. ticks:
        prefix the pts in stream ticks. from_key: decode nothing before the first keyframe packet (after a seek: no
        frame is decoded from missing references)."""
        if not container.streams.video:
            raise SourceError(f"source {self.spec.text!r}: has no video stream")
        stream = container.streams.video[0]
        if not stream.codec_context.is_open:  # (a retry after a seek decodes on the open codec)
            stream.thread_type = DECODE_THREADS
        for packet in container.demux(stream):
            if from_key:
                if packet.size and not packet.is_keyframe:
                    continue
                from_key = False
            t0 = time.perf_counter()
            try:
                decoded = packet.decode()
            except av.InvalidDataError as exc:
                self.skipped += 1
                self.errors.append(f"packet at pts {packet.pts}: {str(exc).splitlines()[0]}")
                continue
            for frame in decoded:
                pts = float(frame.time) if frame.time is not None else None
                self._last_corrupt = bool(frame.is_corrupt)
                image = frame.to_ndarray(format="rgb24")
                ms = (time.perf_counter() - t0) * 1e3
                yield (frame.pts, pts, image, ms) if ticks else (pts, image, ms)
                t0 = time.perf_counter()

    def _decode_from(self, container, av) -> Iterator[tuple[float | None, np.ndarray, float]]:
        """_decode's frames from frame `self.start` on (see the class docstring)."""
        if self.start == 0:
            yield from self._decode(container, av)
            return
        table = self.table
        if table is None and self.spec.kind == "file":
            table = frame_table(self.spec.target)
        if table is not None and table.exact:
            if self.start >= len(table):
                return
            target, stream = int(table.pts[self.start]), container.streams.video[0]
            prime_decoder(container, stream, av)
            # the nearest keyframe first; an earlier one when the demuxer's seek lands after the target
            for key in table.keyframes_up_to(self.start)[:3]:
                try:
                    container.seek(int(table.pts[key]), stream=stream, backward=True)
                except av.FFmpegError:
                    break
                frames = self._decode(container, av, ticks=True, from_key=True)
                first = next((f for f in frames if f[0] is None or f[0] >= target), None)
                if first is not None and first[0] == target:
                    yield first[1:]
                    yield from (f[1:] for f in frames)
                    return
        with containers.open_container(self.spec) as fresh:  # the safe way: decode from the beginning, count, discard
            frames = self._decode(fresh, av)
            next(itertools.islice(frames, self.start, self.start), None)  # consumes the first `start` frames
            yield from frames

    @staticmethod
    def _log(message: str) -> None:
        print(f"rtkp: {message}", file=sys.stderr)
