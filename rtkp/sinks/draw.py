"""Overlay drawing for the live window and recorded videos (cv2 imported lazily).

One animal (a single-instance model's frames): each keypoint its own colour, a white skeleton, names beside the points.
Several animals: each track its own colour (TRACK_PALETTE indexed by track id, so an animal keeps its colour from frame
to frame), used for its keypoints, skeleton and names, and a "#<track>" label above it, so that identity swaps show.
"""

from __future__ import annotations

import numpy as np

from rtkp.messages import Instance, KeypointFrame
from rtkp.smoothing import PREDICTED

_PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
]
TRACK_PALETTE = _PALETTE  # track t is drawn in TRACK_PALETTE[t % len]: fixed, so a colour means the same animal
SKELETON_COLOUR = (255, 255, 255)


def track_colour(track: int) -> tuple[int, int, int]:
    """The RGB colour of track id `track` (stable: the same id gets the same colour in every frame and run)."""
    return TRACK_PALETTE[track % len(TRACK_PALETTE)]


def draws_by_track(kf: KeypointFrame) -> bool:
    """Whether `kf` is drawn in track colours by default: it holds several instances or one with a track id other
    than 0 (a single-instance model's frame always holds just Instance(track 0), drawn as one animal)."""
    return len(kf.instances) > 1 or any(inst.track != 0 for inst in kf.instances)


def draw_keypoints(
    image: np.ndarray,
    kf: KeypointFrame,
    names: list[str],
    skeleton=(),
    hud: str | None = None,
    by_track: bool | None = None,
):
    """Return a copy of an RGB image (H, W, 3) uint8 with every instance of `kf` drawn (skeleton, keypoints hollow
    when predicted, names) and a HUD line.

    by_track: colour by track id and label each instance "#<track>"; None (default): when draws_by_track(kf). A
    multi-instance model's caller passes True, so that a frame with only track 0 in it is drawn like the others.
    """
    import cv2

    out = np.ascontiguousarray(image).copy()
    scale = max(out.shape[:2]) / 640
    radius, thick = max(int(4 * scale), 2), max(int(2 * scale), 1)
    if by_track is None:
        by_track = draws_by_track(kf)
    for inst in kf.instances:
        colour = track_colour(inst.track) if by_track else None
        _draw_instance(out, inst, names, skeleton, colour, radius, thick, scale)
        if by_track:
            _draw_track_label(out, inst, colour, radius, scale)
    if hud:
        cv2.putText(out, hud, (8, int(20 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(
            out, hud, (8, int(20 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (255, 255, 0), 1, cv2.LINE_AA
        )
    return out


def _draw_instance(out, inst: Instance, names, skeleton, colour, radius: int, thick: int, scale: float) -> None:
    """One animal: skeleton lines, keypoints and names. colour None: one colour per keypoint and a white skeleton."""
    import cv2

    pts, visible = inst.keypoints, inst.visible
    for a, b in skeleton:
        if visible[a] and visible[b]:
            cv2.line(out, _pt(pts[a]), _pt(pts[b]), colour or SKELETON_COLOUR, thick, cv2.LINE_AA)
    for k, name in enumerate(names):
        if not visible[k]:
            continue
        c = colour or _PALETTE[k % len(_PALETTE)]
        fill = thick if inst.state[k] == PREDICTED else -1
        cv2.circle(out, _pt(pts[k]), radius, c, fill, cv2.LINE_AA)
        cv2.putText(out, name, _pt(pts[k] + radius + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * scale, c, 1, cv2.LINE_AA)


def _draw_track_label(out, inst: Instance, colour, radius: int, scale: float) -> None:
    """ "#<track>" above the instance's visible keypoints (outlined in black, readable on any background)."""
    import cv2

    if not np.asarray(inst.visible).any():
        return
    pts = np.asarray(inst.keypoints)[np.asarray(inst.visible, bool)]
    x, y = float(pts[:, 0].min()), float(pts[:, 1].min()) - radius - 4 * scale
    font, size, inner = cv2.FONT_HERSHEY_SIMPLEX, max(0.7 * scale, 0.45), max(int(2 * scale), 2)
    text = f"#{inst.track}"
    (_, th), _ = cv2.getTextSize(text, font, size, inner)
    h, w = out.shape[:2]
    org = (int(np.clip(x, 0, max(w - 1, 0))), int(np.clip(y, th + 1, max(h - 1, 0))))  # stays in the picture
    cv2.putText(out, text, org, font, size, (0, 0, 0), inner + 2, cv2.LINE_AA)
    cv2.putText(out, text, org, font, size, colour, inner, cv2.LINE_AA)


def _pt(p) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))


def draw_lines(image: np.ndarray, lines: list[str], first_row: int = 1) -> np.ndarray:
    """Text lines in the HUD's style below its first line (rows counted from 0), drawn on `image` in place."""
    import cv2

    scale = max(image.shape[:2]) / 640
    for i, text in enumerate(lines):
        y = int(20 * scale * (first_row + i + 1))
        for colour, thick in (((0, 0, 0), 3), ((255, 255, 0), 1)):
            cv2.putText(image, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale, colour, thick, cv2.LINE_AA)
    return image


def draw_marker(image: np.ndarray, x: float, y: float) -> np.ndarray:
    """A cross where the user clicked, drawn on `image` in place."""
    import cv2

    size = max(int(8 * max(image.shape[:2]) / 640), 4)
    cv2.drawMarker(image, _pt((x, y)), (255, 255, 255), cv2.MARKER_CROSS, size * 2, 3, cv2.LINE_AA)
    cv2.drawMarker(image, _pt((x, y)), (255, 0, 255), cv2.MARKER_CROSS, size * 2, 1, cv2.LINE_AA)
    return image
