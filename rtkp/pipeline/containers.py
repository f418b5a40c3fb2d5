"""PyAV containers of video-like sources: opening one (cameras, files, streams, lavfi), and a file's frame table.

Every failure is a SourceError naming the source and the reason, in one line.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from rtkp.errors import SourceError
from rtkp.pipeline.source_spec import SourceSpec

# FFmpeg decodes with slice threads only, never frame threads: their error concealment is not repeatable
# (rtkp.pipeline.sources.Source says why and what it cost)
DECODE_THREADS = "SLICE"


def av_error(spec: SourceSpec, exc: Exception) -> SourceError:
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return SourceError(f"source {spec.text!r}: {msg}")


# the top-level boxes an MP4/MOV (ISO base media) file may start with
_MP4_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"styp", b"sidx", b"moof"}
NO_INDEX = (
    "the file looks truncated: it has no moov atom, the index an MP4/MOV recorder writes when it stops (a recording "
    "that crashed or was cut short); `ffmpeg -c copy` cannot rebuild it: try a repair tool such as untrunc with an "
    "intact file from the same recorder, and record to .mkv, which stays readable when cut short"
)


def mp4_damage(path: str | Path) -> str | None:
    """Why an MP4/MOV file cannot be opened, read from its top-level boxes alone: no moov (its index), or a box cut
    short by the end of the file; None for a file that is not MP4/MOV-like or whose boxes are all there."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            seen, pos, cut = set(), 0, None
            while pos + 8 <= size:
                fh.seek(pos)
                header = fh.read(16)
                length, kind = int.from_bytes(header[:4], "big"), header[4:8]
                if not seen and kind not in _MP4_BOXES:
                    return None
                seen.add(kind)
                if length == 1 and len(header) == 16:
                    length = int.from_bytes(header[8:16], "big")
                elif length == 0:
                    length = size - pos
                if length < 8:
                    return None  # not a box: something else, or damage past what a box walk can say
                if pos + length > size:
                    cut = kind.decode("latin-1")
                pos += length
    except OSError:
        return None
    if not seen:
        return None
    if b"moov" not in seen and b"moof" not in seen:
        return NO_INDEX
    if cut is not None:
        return f"the file looks truncated: its {cut!r} box ends past the end of the file (a recording cut short)"
    return None


def open_error(spec: SourceSpec, exc: Exception) -> SourceError:
    """The SourceError for a container that does not open: for a file FFmpeg finds invalid, what looks wrong with it
    (truncated, no index) and what to do, instead of FFmpeg's bare "[Errno 1094995529] Invalid data found"."""
    import av

    if spec.kind != "file" or not isinstance(exc, av.InvalidDataError):
        return av_error(spec, exc)
    why = mp4_damage(spec.target) or (
        "the file looks truncated or damaged, or is not a video (FFmpeg finds no valid data in it); check that it "
        "plays in a video player"
    )
    return SourceError(f"source {spec.text!r}: {why}")


def camera_open_args(spec: SourceSpec) -> tuple[str, str | None, dict]:
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


def check_camera(spec: SourceSpec) -> None:
    """SourceError when the camera's device file does not exist (Linux), without opening it."""
    file, fmt, _ = camera_open_args(spec)
    if fmt == "v4l2" and not os.path.exists(file):
        raise SourceError(f"source {spec.text!r}: camera device {file} does not exist")


def open_container(spec: SourceSpec, timeout_s: float = 5.0):
    """av.open for a video-like source, or SourceError in one line."""
    import av

    try:
        if spec.kind == "camera":
            file, fmt, opts = camera_open_args(spec)
            check_camera(spec)
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
        raise open_error(spec, exc) from None


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


def prime_decoder(container, stream, av) -> None:
    """Decode the stream's first packet before a seek. Encoders put their identity there (x264: an SEI with its
    build), and FFmpeg works around known encoder bugs by it: without it, e.g. frames of x264 builds before 151 in
    4:4:4 decode as garbage after a seek (the DLC open-field mouse video), however correct their PTS. The decoder's
    threads are set here, since the codec opens here: slice threads only (DECODE_THREADS, rtkp.pipeline.sources)."""
    stream.thread_type = DECODE_THREADS
    for packet in container.demux(stream):
        if packet.size:
            try:
                packet.decode()
            except av.FFmpegError:
                pass  # an undecodable first packet: nothing learnt, the seek goes ahead as before
            return
