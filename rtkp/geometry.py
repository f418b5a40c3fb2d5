"""Letterbox resize and its exact inverse (source pixels <-> model-input pixels).

Convention everywhere in rtkp: pixel (i, j) has its centre at (x=j, y=i); the image's top-left corner is (-0.5, -0.5).
A uniform scale s and padding (px, py) map source to model coordinates as  x_m = (x_s + 0.5)·s − 0.5 + px.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Letterbox:
    """The transform from a (src_w, src_h) frame into a (dst_w, dst_h) model input.

    scale_x and scale_y differ only by rounding (the resized size is a whole number of pixels); using the exact
    per-axis ratios keeps to_source an exact inverse of what cv2.resize did.
    """

    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int
    src_size: tuple[int, int]
    dst_size: tuple[int, int]

    @classmethod
    def fit(cls, src_size: tuple[int, int], dst_size: tuple[int, int]) -> Letterbox:
        """Largest uniform scale that fits src inside dst, centred, padding split evenly (whole pixels)."""
        sw, sh = src_size
        dw, dh = dst_size
        scale = min(dw / sw, dh / sh)
        nw, nh = min(round(sw * scale), dw), min(round(sh * scale), dh)
        return cls(nw / sw, nh / sh, (dw - nw) // 2, (dh - nh) // 2, (sw, sh), (dw, dh))

    @property
    def scale(self) -> float:
        """The (mean) scale from source to model pixels."""
        return (self.scale_x + self.scale_y) / 2

    def to_model(self, pts: np.ndarray) -> np.ndarray:
        """(..., 2) source pixel coordinates -> model-input pixel coordinates."""
        pts = np.asarray(pts, np.float64)
        s = np.array([self.scale_x, self.scale_y])
        return ((pts + 0.5) * s - 0.5 + np.array([self.pad_x, self.pad_y])).astype(np.float32)

    def to_source(self, pts: np.ndarray) -> np.ndarray:
        """(..., 2) model-input pixel coordinates -> source pixel coordinates (exact inverse of to_model)."""
        pts = np.asarray(pts, np.float64)
        s = np.array([self.scale_x, self.scale_y])
        return ((pts - np.array([self.pad_x, self.pad_y]) + 0.5) / s - 0.5).astype(np.float32)

    def apply(self, image: np.ndarray, pad_value: int = 114) -> np.ndarray:
        """(H, W, 3) uint8 source image -> (dst_h, dst_w, 3) uint8 model input (area filter when shrinking)."""
        import cv2

        sw, sh = self.src_size
        dw, dh = self.dst_size
        nw, nh = round(sw * self.scale_x), round(sh * self.scale_y)
        if (nw, nh) != (sw, sh):
            interp = cv2.INTER_AREA if nw < sw else cv2.INTER_LINEAR
            image = cv2.resize(image, (nw, nh), interpolation=interp)
        if (nw, nh) == (dw, dh):
            return image
        left, top = self.pad_x, self.pad_y
        return cv2.copyMakeBorder(
            image, top, dh - nh - top, left, dw - nw - left, cv2.BORDER_CONSTANT, value=(pad_value,) * 3
        )
