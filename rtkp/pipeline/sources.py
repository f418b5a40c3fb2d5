"""Frame sources (PyAV): cameras, video files, network streams, image folders and globs, lavfi test sources.

Every frame carries its index, PTS (seconds) and capture time (time.monotonic_ns() when it left the decoder). A source
that cannot be opened raises SourceError naming the source and the reason, in one line. Live sources (cameras,
streams) reconnect with exponential backoff; files end.
"""

from __future__ import annotations

import glob
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SourceError
from ..messages import Frame

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


class Source:
    """Iterates Frames from a SourceSpec.

    realtime: pace file-like sources by their timestamps (what a camera would do), so that the `live` policy can be
    exercised with files and lavfi graphs. max_frames: stop after that many frames. `skipped` counts frames that failed
    to decode (files continue past them); `errors` keeps their messages.
    """

    def __init__(
        self,
        spec: SourceSpec,
        realtime: bool = False,
        max_frames: int | None = None,
        reconnect: bool | None = None,
        backoff_s: tuple[float, float] = (0.5, 8.0),
        give_up_s: float | None = None,
    ):
        self.spec = spec
        self.realtime = realtime
        self.max_frames = max_frames
        self.reconnect = spec.live if reconnect is None else reconnect
        self.backoff_s = backoff_s
        self.give_up_s = give_up_s  # stop reconnecting after this long without a frame (None: never)
        self.skipped = 0
        self.errors: list[str] = []
        self.reconnects = 0
        self.stopped = False
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
        count = 0
        t0 = None
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
        from ..data.sample import read_image
        from ..errors import DataError

        for i, path in enumerate(_image_files(self.spec)):
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

        index = 0
        delay = self.backoff_s[0]
        last_frame = time.monotonic()
        while True:
            try:
                container = open_container(self.spec)
            except SourceError as exc:
                if not self.reconnect or index == 0 and self.reconnects == 0:
                    raise
                if self.give_up_s is not None and time.monotonic() - last_frame > self.give_up_s:
                    raise SourceError(f"{exc} (gave up after {self.give_up_s:g} s without a frame)") from None
                self._log(f"{exc}; retrying in {delay:.1f} s")
                time.sleep(delay)
                delay = min(delay * 2, self.backoff_s[1])
                self.reconnects += 1
                continue
            try:
                for pts, image, ms in self._decode(container, av):
                    delay = self.backoff_s[0]
                    last_frame = time.monotonic()
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

    def _decode(self, container, av) -> Iterator[tuple[float | None, np.ndarray, float]]:
        """(pts seconds, RGB image, decode ms) per decodable frame; corrupt packets are counted and skipped."""
        if not container.streams.video:
            raise SourceError(f"source {self.spec.text!r}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for packet in container.demux(stream):
            t0 = time.perf_counter()
            try:
                decoded = packet.decode()
            except av.InvalidDataError as exc:
                self.skipped += 1
                self.errors.append(f"packet at pts {packet.pts}: {str(exc).splitlines()[0]}")
                continue
            for frame in decoded:
                pts = float(frame.time) if frame.time is not None else None
                image = frame.to_ndarray(format="rgb24")
                yield pts, image, (time.perf_counter() - t0) * 1e3
                t0 = time.perf_counter()

    @staticmethod
    def _log(message: str) -> None:
        print(f"rtkp: {message}", file=sys.stderr)
