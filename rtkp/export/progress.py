"""The progress of one input's export (a tqdm bar on stderr) and the frame count it is measured against."""

from __future__ import annotations

import sys


def total_frames(source: str) -> int | None:
    """The frames a video's header lists (None: unknown, e.g. image folders and streams, or unreadable)."""
    try:
        import av

        with av.open(source) as c:
            n = c.streams.video[0].frames
            return n or None
    except Exception:
        return None


class Progress:
    """One bar over all of an input's work, so it reaches 100 % only when everything is written.

    Steps: one per frame tracked (a resumed export starts at the frames already written), one for offline smoothing,
    one per annotation file, one per frame drawn into the annotated video, and a last one for finishing (the renames,
    the .done.json marker). The description names the phase ("tracking", "smoothing", "writing clip.csv",
    "encoding video").
    """

    def __init__(self, stem: str, frames: int | None, after: int, video: bool, enabled: bool, done: int = 0):
        from tqdm import tqdm

        self.stem, self.after, self.video = stem, after, video
        total = self._total(frames) if frames else None
        self.bar = tqdm(
            total=total, initial=done, desc=f"{stem} tracking", unit="step", disable=not enabled, file=sys.stderr
        )

    def _total(self, frames: int) -> int:
        return frames * (2 if self.video else 1) + self.after + 1

    def step(self, n: int = 1) -> None:
        self.bar.update(n)

    def to(self, n: int) -> None:
        """Tracking: `n` frames done in all."""
        if n > self.bar.n:
            self.bar.update(n - self.bar.n)

    def phase(self, name: str, frames: int | None = None) -> None:
        """Enter a phase; `frames` (after tracking): the frames actually tracked, which fixes the total."""
        if frames is not None:
            self.bar.total = self._total(frames)
        self.bar.set_description(f"{self.stem} {name}")  # refreshes the bar

    def close(self) -> None:
        self.bar.close()
