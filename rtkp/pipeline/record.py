"""Annotated video writer (PyAV, libx264), keeping the source's size, rate and timestamps."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


class VideoWriter:
    """Write RGB frames to an MP4 with their source PTS (seconds); written to a temporary name, renamed on close."""

    def __init__(self, path: str | Path, size: tuple[int, int], rate: float = 30.0):
        import av

        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.stem + ".partial" + self.path.suffix)
        self.container = av.open(str(self.tmp), "w", format="mp4")
        self.stream = self.container.add_stream("libx264", rate=Fraction(rate).limit_denominator(1001))
        self.stream.width, self.stream.height = size
        self.stream.pix_fmt = "yuv420p"
        self.stream.time_base = Fraction(1, 1000)
        self.stream.options = {"preset": "veryfast", "crf": "20"}
        self.last_pts = -1
        self.frames = 0

    def write(self, image: np.ndarray, pts_s: float | None) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        pts = int(round(pts_s * 1000)) if pts_s is not None else self.last_pts + 33
        pts = max(pts, self.last_pts + 1)  # strictly increasing, as the muxer requires
        frame.pts, frame.time_base = pts, Fraction(1, 1000)
        self.last_pts = pts
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self, keep: bool = True) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        if keep:
            self.tmp.replace(self.path)
        else:
            self.tmp.unlink(missing_ok=True)
