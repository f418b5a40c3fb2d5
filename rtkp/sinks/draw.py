"""Overlay drawing for the live window and recorded videos (cv2 imported lazily)."""

from __future__ import annotations

import numpy as np

from rtkp.messages import KeypointFrame
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


def draw_keypoints(image: np.ndarray, kf: KeypointFrame, names: list[str], skeleton=(), hud: str | None = None):
    """Return a copy of an RGB image with skeleton, keypoints (hollow when predicted), names and a HUD line."""
    import cv2

    out = np.ascontiguousarray(image).copy()
    scale = max(out.shape[:2]) / 640
    radius, thick = max(int(4 * scale), 2), max(int(2 * scale), 1)
    pts = kf.keypoints
    for a, b in skeleton:
        if kf.visible[a] and kf.visible[b]:
            cv2.line(out, _pt(pts[a]), _pt(pts[b]), (255, 255, 255), thick, cv2.LINE_AA)
    for k, name in enumerate(names):
        if not kf.visible[k]:
            continue
        colour = _PALETTE[k % len(_PALETTE)]
        fill = thick if kf.state[k] == PREDICTED else -1
        cv2.circle(out, _pt(pts[k]), radius, colour, fill, cv2.LINE_AA)
        cv2.putText(out, name, _pt(pts[k] + radius + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * scale, colour, 1, cv2.LINE_AA)
    if hud:
        cv2.putText(out, hud, (8, int(20 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(
            out, hud, (8, int(20 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (255, 255, 0), 1, cv2.LINE_AA
        )
    return out


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
