"""What --source names: a SourceSpec (kind, target, options), parsed from the text, and the files of an image source.

Kinds: camera (cameraN, /dev/videoN), stream (rtsp://, rtmp://, http(s)://, udp://, tcp://, srt://), lavfi (lavfi:GRAPH,
an FFmpeg test source), images (a folder, a glob, one image file), file (any other existing file: a video).
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path

from rtkp.errors import SourceError

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

    @property
    def consecutive(self) -> bool:
        """Its frames follow each other in time (not unrelated images): the graph may follow the animal from one to
        the next (rtkp.follow)."""
        return self.kind != "images"


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


def image_files(spec: SourceSpec) -> list[Path]:
    """The image files of an images source, sorted by name; SourceError when there are none."""
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
