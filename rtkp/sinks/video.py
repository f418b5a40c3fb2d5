"""Annotated video writer (PyAV, libx264), keeping the source's size, rate and timestamps.

Frames arrive with their PTS in seconds (Frame.pts = the decoded frame's pts × its stream's time base, see sources.py).
The writer encodes and muxes in the source stream's own time base, so every written timestamp is the source's, tick for
tick, and the MP4's average rate is the source's. (The encoder's time base must be set explicitly: left alone, PyAV sets
it to 1/rate and rebases every frame onto that grid, which turned a 25 fps source into 30 fps ticks, and a 60 fps one
into duplicate timestamps.) Without a source time base (cameras, streams, image folders), a fine 1/90000 is used.
"""

from __future__ import annotations

import contextlib
from fractions import Fraction
from pathlib import Path

import numpy as np

from rtkp.files import atomic

FINE_TIME_BASE = Fraction(1, 90000)  # MPEG's clock: exact for 24, 25, 30, 50, 60 and the NTSC x/1.001 rates


def source_timing(source: str) -> tuple[Fraction | None, Fraction | None, bool]:
    """(average rate, time base, zero_start) of a --source string, for a recording of it.

    Files and lavfi graphs are opened once more to read their video stream's rate and time base. Cameras and network
    streams are not opened a second time (the decoder holds them): their timestamps are clock readings, so the
    recording starts at zero instead (zero_start). Image folders have no timestamps: frames are spaced at the default
    rate.
    """
    from rtkp.pipeline.containers import open_container
    from rtkp.pipeline.source_spec import parse_source

    try:
        spec = parse_source(source)
    except Exception:
        return None, None, False
    if spec.live:
        return None, None, True
    if spec.kind not in ("file", "lavfi"):
        return None, None, False
    try:
        with open_container(spec) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            return (Fraction(rate) if rate else None), (Fraction(stream.time_base) if stream.time_base else None), False
    except Exception:
        return None, None, False


class VideoWriter:
    """Write RGB frames to an MP4 at their source PTS (seconds); written to a temporary name, renamed on close.

    rate: the source's average frame rate (the encoder's nominal rate, and the spacing of frames without a PTS).
    time_base: the source stream's time base; the output uses it, so each PTS round-trips exactly.
    zero_start: shift timestamps so the first frame is at 0 (for clock-stamped live sources).
    """

    def __init__(
        self,
        path: str | Path,
        size: tuple[int, int],
        rate: float | Fraction | None = None,
        time_base: Fraction | None = None,
        zero_start: bool = False,
    ):
        import av

        self.path = Path(path)
        # written through rtkp.files.atomic: under a temporary name until close() keeps it
        self.file = contextlib.ExitStack()
        fh = self.file.enter_context(atomic(self.path, "wb"))
        self.rate = Fraction(rate).limit_denominator(1_000_000) if rate and rate > 0 else Fraction(30)
        self.time_base = Fraction(time_base) if time_base and time_base > 0 else FINE_TIME_BASE
        self.zero_start = zero_start
        self.origin: int | None = None
        self.container = av.open(fh, "w", format="mp4")
        self.stream = self.container.add_stream("libx264", rate=self.rate)
        self.stream.width, self.stream.height = size
        self.stream.pix_fmt = "yuv420p"
        # the encoder's time base too: PyAV rebases each frame's pts onto it (by default 1/rate, a coarse grid)
        self.stream.codec_context.time_base = self.time_base
        self.stream.time_base = self.time_base
        self.stream.options = {"preset": "veryfast", "crf": "20"}
        self.step = max(1, round(1 / (self.rate * self.time_base)))  # ticks between frames without a PTS
        self.last_pts: int | None = None
        self.frames = 0

    def ticks(self, pts_s: float | None) -> int:
        """The output PTS (in time_base ticks) for a frame at pts_s seconds: strictly increasing, as muxers require."""
        if pts_s is None:
            pts = 0 if self.last_pts is None else self.last_pts + self.step
        else:
            pts = round(Fraction(pts_s) / self.time_base)
            if self.zero_start:
                if self.origin is None:
                    self.origin = pts
                pts -= self.origin
        if self.last_pts is not None:
            pts = max(pts, self.last_pts + 1)
        return pts

    def write(self, image: np.ndarray, pts_s: float | None) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts, frame.time_base = self.ticks(pts_s), self.time_base
        self.last_pts = frame.pts
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self, keep: bool = True) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        if keep:
            self.file.close()  # renamed into place
        else:
            discard = RuntimeError("recording discarded")
            self.file.__exit__(RuntimeError, discard, None)  # atomic() removes the temporary file on an error

    @classmethod
    def for_source(cls, path: str | Path, size: tuple[int, int], source: str) -> VideoWriter:
        """A writer that keeps `source`'s rate and timestamps (see source_timing)."""
        rate, time_base, zero_start = source_timing(source)
        return cls(path, size, rate, time_base, zero_start)
