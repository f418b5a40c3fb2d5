"""Look at full resolution only where the animal is: a window of the model input that follows the keypoints.

On a CPU the graph's cost grows with the pixels it sees (the shipped mouse model: 51 ms for the 640×480 frame, 9 ms
for a 224×224 window), while the animal fills a small part of the frame. So the ModelStage runs the same graph at the
manifest's `crop_size` on a window centred on the keypoints the previous frame found, and runs the whole frame only
when it must:

- the first frame, and after a frame where no keypoint was visible (the animal is lost, or not in view yet);
- when a window's result cannot be trusted: a visible keypoint within EDGE_PX of a window border that is not the
  frame's own border (the animal may continue outside), or a keypoint that was visible near such a border in the
  previous frame and is hidden now (it may have crossed it) — that frame is run again whole;
- every frame whose index is a multiple of REFRESH_FRAMES, so that a keypoint hidden in the window but visible
  elsewhere, or a window that holds on to a look-alike, is corrected within two seconds at 30 fps. Counted by frame
  index, not by frames seen: what the Follower decides from such a frame on depends only on the frames from there, so
  an export resumed or split into chunks reproduces an uninterrupted one exactly by starting at the last such frame
  before its first (rtkp.export.track, `warm_up_start`).

The window's origin is a multiple of ALIGN_PX = 32 input px, the graph's largest stride: its cells then coincide with
the whole frame's cells, and what differs is only the context the window cuts off (zero padding instead of the
arena), largest near its borders, which the EDGE_PX rule keeps keypoints away from. Measured on the mouse's 24 test
images through a 224×224 window around their keypoints: median move 0.02 px, largest 1.0 px, no keypoint changes
visibility (docs/BENCHMARKS.md).

Why here and not in the network: each keypoint is still decided on its own by the same graph and the same rule
(rtkp.visibility); only where the graph looks changes. Why from the previous frame and not from a cheap low-resolution
pass: on the mouse a 320×256 pass costs 16 ms, more than the window itself, and the previous frame says where the
animal is in all but the frames the rules above send to the whole frame. Images that are not consecutive frames
(image folders, `rtkp eval`) never follow: the Tracker is built with follow=False there, and an export's loop turns
it off for image folders (ModelStage.new_sequence).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rtkp.visibility import evidence

ALIGN_PX = 32  # window origins on the graph's coarsest grid (stride 32): its cells are the whole frame's cells
EDGE_PX = 16  # a visible keypoint this close to an inner window border sends the frame to the whole input
MOTION_PX = 32  # how far a keypoint may move between frames, for one that vanished near a border (Follower.accept)
REFRESH_FRAMES = 60  # a whole-frame look at every frame index that is a multiple of this (2 s at 30 fps)
CONTEXT_PX = 40  # around the animal's keypoint box, the crop size rule's context on each side (crop_size_for)


@dataclass(frozen=True)
class Window:
    """A window of the model input: origin (x0, y0) and size (w, h) in model-input px."""

    x0: int
    y0: int
    w: int
    h: int

    def cut(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) model input -> (h, w, 3) view of the window."""
        return image[self.y0 : self.y0 + self.h, self.x0 : self.x0 + self.w]

    def to_input(self, rows: np.ndarray) -> np.ndarray:
        """Graph rows in window px -> rows in model-input px (a copy): x, y of every row, and for a multi-instance
        graph's (K, P, 6) rows the animal centre (columns 4, 5) too."""
        out = np.array(rows, np.float32, copy=True)
        out[..., 0] += self.x0
        out[..., 1] += self.y0
        if out.shape[-1] >= 6:
            out[..., 4] += self.x0
            out[..., 5] += self.y0
        return out


def crop_size_for(boxes: np.ndarray, input_size: tuple[int, int]) -> tuple[int, int] | None:
    """The window a model follows its animal with: boxes (N, 2) the labelled animals' keypoint box sizes (w, h) in
    model-input px -> a square (s, s), s = the largest box side + 2 × CONTEXT_PX rounded up to ALIGN_PX, or None when
    the window would not save at least half the input's pixels (the animal fills the frame: nothing to gain)."""
    if len(boxes) == 0:
        return None
    side = float(np.max(boxes)) + 2 * CONTEXT_PX
    s = int(np.ceil(side / ALIGN_PX) * ALIGN_PX)
    w, h = input_size
    if s > min(w, h) or s * s > 0.5 * w * h:
        return None
    return (s, s)


class Follower:
    """Where the next frame's graph should look (`window`), and whether a window's rows can stand (`accept`).

    input_size, crop_size: (W, H) model-input px; margin: the visibility margins ((K,) or one number), kept current
    by `change_keypoints`. Call `window(index)` before each frame, then `update(rows, whole)` with the rows kept for
    it (model-input px): whole=True when they come from the whole input. Stats: frames, windows (kept), whole (looks
    at the whole input, first looks and refreshes included), rejected (windows run again whole).
    """

    def __init__(self, input_size: tuple[int, int], crop_size: tuple[int, int], margin, refresh: int = REFRESH_FRAMES):
        self.input_size = tuple(int(v) for v in input_size)
        self.crop_size = tuple(int(v) for v in crop_size)
        self.margin = margin
        self.refresh = refresh
        self.enabled = True  # False: the frames are unrelated images, each run whole (ModelStage.new_sequence)
        self.stats = {"frames": 0, "windows": 0, "whole": 0, "rejected": 0}
        self.reset()

    def reset(self) -> None:
        """Forget the animal: the next frame looks at the whole input."""
        self._centre: np.ndarray | None = None
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # the last frame's (x, y) and visible, per row

    def change_keypoints(self, margin) -> None:
        """A new keypoint set (teaching): new margins, and a whole-input look next, where a new keypoint may be."""
        self.margin = margin
        self.reset()

    def _visible(self, rows: np.ndarray) -> np.ndarray:
        """rows (K, 4) or (K, P, 6) -> (K,) or (K, P) visible."""
        margin = np.asarray(self.margin, np.float32)
        return evidence(rows) > (margin[:, None] if rows.ndim == 3 and margin.ndim == 1 else margin)

    def warm_up_start(self, start: int) -> int:
        """The frame to start tracking from so that frame `start` gets the rows an uninterrupted run gives it: the
        last refresh frame at or before it (the frames in between are tracked and not written)."""
        return start - start % self.refresh

    def window(self, index: int) -> Window | None:
        """The window for frame `index` (its source index), or None: look at the whole input."""
        if self._centre is None or index % self.refresh == 0:
            return None
        (w, h), (cw, ch) = self.input_size, self.crop_size
        x0 = _aligned(self._centre[0] - cw / 2, w - cw)
        y0 = _aligned(self._centre[1] - ch / 2, h - ch)
        return Window(x0, y0, cw, ch)

    def accept(self, rows: np.ndarray, window: Window) -> bool:
        """Whether rows (model-input px) found in `window` stand, or the frame must be run on the whole input."""
        vis = self._visible(rows)
        if not vis.any():
            return False
        if self._near_inner_border(rows[..., :2][vis], window, EDGE_PX).any():
            return False  # the animal may go on outside the window
        if self._last is not None and self._last[1].shape == vis.shape:
            # a keypoint seen last frame near a border it may have crossed, and not seen now: it may be outside.
            # One that vanishes well inside the window is covered (or its evidence flickers), which the whole
            # frame would not change: on the mouse video these were 60 of 68 second looks before this rule.
            last_xy, last_vis = self._last
            gone = last_vis & ~vis
            if gone.any() and self._near_inner_border(last_xy[gone], window, EDGE_PX + MOTION_PX).any():
                return False
        return True

    def _near_inner_border(self, xy: np.ndarray, window: Window, band: float) -> np.ndarray:
        """(N, 2) model-input px -> (N,) within `band` px of a border of the window that is not the input's own."""
        w, h = self.input_size
        near = np.zeros(len(xy), bool)
        if window.x0 > 0:
            near |= xy[:, 0] < window.x0 + band
        if window.y0 > 0:
            near |= xy[:, 1] < window.y0 + band
        if window.x0 + window.w < w:
            near |= xy[:, 0] > window.x0 + window.w - band
        if window.y0 + window.h < h:
            near |= xy[:, 1] > window.y0 + window.h - band
        return near

    def update(self, rows: np.ndarray, whole: bool, rejected: bool = False) -> None:
        """The rows kept for a frame (model-input px); whole: they come from the whole input; rejected: a window was
        run first and not accepted."""
        self.stats["frames"] += 1
        self.stats["whole" if whole else "windows"] += 1
        self.stats["rejected"] += int(rejected)
        vis = self._visible(rows)
        self._last = (np.array(rows[..., :2], np.float32), vis)
        if not vis.any():
            self._centre = None  # lost: the whole input next frame
            return
        xy = rows[..., :2][vis]
        self._centre = (xy.min(axis=0) + xy.max(axis=0)) / 2


def _aligned(start: float, limit: int) -> int:
    """A window origin: `start` rounded to the nearest multiple of ALIGN_PX, within [0, limit] (at the far border the
    window ends on the input's edge, aligned or not)."""
    return int(min(max(round(start / ALIGN_PX) * ALIGN_PX, 0), max(0, int(limit))))
