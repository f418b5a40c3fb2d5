"""Frame sources (PyAV): cameras, video files, network streams, image folders and globs, lavfi test sources.

Every frame carries its index, PTS (seconds) and capture time (time.monotonic_ns() when it left the decoder). A source
that cannot be opened raises SourceError naming the source and the reason, in one line. Live sources (cameras,
streams) reconnect with exponential backoff; files end. `Source(spec, start=N)` begins at frame N with the index and PTS
a full decode gives it (resumed exports, and chunks of a long video); `frame_table` lists a file's frames without
decoding them.
"""

from __future__ import annotations

import glob
import itertools
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from rtkp.errors import SourceError
from rtkp.messages import Frame

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


@dataclass(frozen=True)
class SourceSpec:
    """What --source names. kind: camera | file | stream | images | lavfi."""

    kind: str
    target: str
    text: str
    options: dict = field(default_factory=dict)

    @property
    def live(self) -> bool:
        """Cameras and network streams produce frames in real time whether or not we keep up."""
        return self.kind in ("camera", "stream")


def parse_source(
    text: str, size: tuple[int, int] | None = None, fps: float | None = None, pixel_format: str | None = None
) -> SourceSpec:
    """Interpret a --source string (see module docstring); raises SourceError for one that names nothing."""
    opts = {}
    if size:
        opts["video_size"] = f"{size[0]}x{size[1]}"
    if fps:
        opts["framerate"] = f"{fps:g}"
    if pixel_format:
        opts["input_format"] = pixel_format
    if text.startswith("camera") and text[6:].isdigit():
        return SourceSpec("camera", text[6:], text, opts)
    if text.startswith("/dev/video"):
        return SourceSpec("camera", text, text, opts)
    if text.startswith("lavfi:"):
        return SourceSpec("lavfi", text[len("lavfi:") :], text)
    if text.startswith(STREAM_SCHEMES):
        return SourceSpec("stream", text, text)
    path = Path(text)
    if path.is_dir():
        return SourceSpec("images", text, text)
    if any(c in text for c in "*?["):
        return SourceSpec("images", text, text)
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return SourceSpec("images", text, text)
        return SourceSpec("file", text, text)
    raise SourceError(f"source {text!r}: no such file, folder, camera (cameraN) or stream URL")


def _av_error(spec: SourceSpec, exc: Exception) -> SourceError:
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return SourceError(f"source {spec.text!r}: {msg}")


def _camera_open_args(spec: SourceSpec) -> tuple[str, str | None, dict]:
    """(file, format, options) for av.open on this platform."""
    index = spec.target
    if sys.platform.startswith("linux"):
        dev = index if index.startswith("/dev/") else f"/dev/video{index}"
        return dev, "v4l2", spec.options
    if sys.platform == "darwin":
        return index, "avfoundation", spec.options
    if sys.platform.startswith("win"):
        return f"video={index}", "dshow", spec.options
    raise SourceError(f"source {spec.text!r}: no camera support on {sys.platform}")


def open_container(spec: SourceSpec, timeout_s: float = 5.0):
    """av.open for a video-like source, or SourceError in one line."""
    import av

    try:
        if spec.kind == "camera":
            file, fmt, opts = _camera_open_args(spec)
            if fmt == "v4l2" and not os.path.exists(file):
                raise SourceError(f"source {spec.text!r}: camera device {file} does not exist")
            return av.open(file, format=fmt, options=opts, timeout=timeout_s)
        if spec.kind == "lavfi":
            return av.open(spec.target, format="lavfi")
        if spec.kind == "stream":
            opts = {"fflags": "nobuffer", "flags": "low_delay"}
            if spec.target.startswith("rtsp"):
                opts["rtsp_transport"] = "tcp"
            return av.open(spec.target, options=opts, timeout=timeout_s)
        return av.open(spec.target)
    except SourceError:
        raise
    except (av.FFmpegError, OSError) as exc:
        raise _av_error(spec, exc) from None


def _image_files(spec: SourceSpec) -> list[Path]:
    path = Path(spec.target)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(spec.target) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SourceError(f"source {spec.text!r}: no image files found")
    return files


@dataclass(frozen=True)
class FrameTable:
    """A video file's frames from its packets alone (demuxed, not decoded), in presentation order.

    pts: (N,) int64 ticks of `time_base` seconds; keyframe: (N,) bool. exact: every frame has its own pts, so a position
    can be found by pts after a seek (False: a packet without pts, or two with the same one).
    """

    pts: np.ndarray
    keyframe: np.ndarray
    time_base: Fraction
    exact: bool

    def __len__(self) -> int:  # frames
        return len(self.pts)

    def keyframes_up_to(self, n: int) -> list[int]:
        """Indices of the keyframes at or before frame n, nearest first."""
        return [int(k) for k in np.flatnonzero(self.keyframe[: n + 1])[::-1]]


def frame_table(path: str | Path) -> FrameTable:
    """Demux a video file's video stream without decoding (about the cost of reading the file once).

    Frame i is the packet with the i-th smallest pts: what a decoder outputs, in that order, when every packet decodes.
    Packets the container marks to be discarded (edit lists) are left out, as the decoder drops their frames too.
    """
    import av

    spec = SourceSpec("file", str(path), str(path))
    with open_container(spec) as container:
        if not container.streams.video:
            raise SourceError(f"source {str(path)!r}: has no video stream")
        stream = container.streams.video[0]
        try:
            rows = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size and not p.is_discard]
        except av.FFmpegError:
            rows = []  # an unreadable tail: no table, Source counts frames instead
        time_base = Fraction(stream.time_base) if stream.time_base else Fraction(1)
    exact = bool(rows) and None not in (p for p, _ in rows) and len({p for p, _ in rows}) == len(rows)
    rows.sort(key=lambda r: (r[0] is None, r[0] or 0))
    pts = np.array([p if p is not None else -1 for p, _ in rows], np.int64)
    return FrameTable(pts, np.array([k for _, k in rows], bool), time_base, exact)


def _prime_decoder(container, stream, av) -> None:
    """Decode the stream's first packet before a seek. Encoders put their identity there (x264: an SEI with its
    build), and FFmpeg works around known encoder bugs by it: without it, e.g. frames of x264 builds before 151 in
    4:4:4 decode as garbage after a seek (the DLC open-field mouse video), however correct their PTS."""
    stream.thread_type = "AUTO"
    for packet in container.demux(stream):
        if packet.size:
            try:
                packet.decode()
            except av.FFmpegError:
                pass  # an undecodable first packet: nothing learnt, the seek goes ahead as before
            return


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
        self._opencv: bool | None = None

    def check(self) -> None:
        """Open and close the source once, so a bad source fails before any process starts."""
        if self.spec.kind == "images":
            _image_files(self.spec)
            return
        if self.spec.kind == "camera" and self._use_opencv():
            return
        open_container(self.spec).close()

    def _use_opencv(self) -> bool:
        """Whether to read this camera with OpenCV: only when FFmpeg cannot open it but OpenCV can (the fallback for
        platforms or devices PyAV's build does not support)."""
        if self._opencv is not None:
            return self._opencv
        try:
            open_container(self.spec).close()
            self._opencv = False
        except SourceError:
            file, fmt, _ = _camera_open_args(self.spec)
            if fmt == "v4l2" and not os.path.exists(file):
                raise  # no device at all: nothing for OpenCV to find either
            import cv2

            index = int(self.spec.target) if self.spec.target.isdigit() else self.spec.target
            cap = cv2.VideoCapture(index)
            self._opencv = bool(cap.isOpened())
            cap.release()
            if not self._opencv:
                raise
        return self._opencv

    def _opencv_camera(self) -> Iterator[Frame]:
        import cv2

        index = int(self.spec.target) if self.spec.target.isdigit() else self.spec.target
        cap = cv2.VideoCapture(index)
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
        elif self.spec.kind == "camera" and self._use_opencv():
            frames = self._opencv_camera()
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

        files = _image_files(self.spec)
        for i, path in enumerate(files[self.start :], self.start):
            t0 = time.perf_counter()
            try:
                image = read_image(path)
            except DataError as exc:
                self.skipped += 1
                self.errors.append(str(exc))
                continue
            yield Frame(i, None, time.monotonic_ns(), image, path.name, (time.perf_counter() - t0) * 1e3)

    def _video(self) -> Iterator[Frame]:
        import av

        index, delay, last_frame = self.start, self.backoff_s[0], time.monotonic()
        while True:
            try:
                container = open_container(self.spec)
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
                    self.errors.append(str(_av_error(self.spec, exc)))
                    return
                self._log(f"{_av_error(self.spec, exc)}; reconnecting")
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
            stream.thread_type = "AUTO"
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
            _prime_decoder(container, stream, av)
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
        with open_container(self.spec) as fresh:  # the safe way: decode from the beginning, count, discard
            frames = self._decode(fresh, av)
            next(itertools.islice(frames, self.start, self.start), None)  # consumes the first `start` frames
            yield from frames

    @staticmethod
    def _log(message: str) -> None:
        print(f"rtkp: {message}", file=sys.stderr)
