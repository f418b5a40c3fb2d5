"""Temporal smoothing of keypoints, driven by timestamps (numpy only).

Two filters per keypoint coordinate:
- One Euro (Casiez et al., CHI 2012): a low-pass whose cutoff rises with speed — little jitter at rest, little lag in
  motion. Units here are pixels and seconds: min_cutoff in Hz, beta in Hz per (px/s), d_cutoff in Hz.
- Constant-velocity Kalman, with optional forward prediction by the measured latency (DeepLabCut-Live's idea), for
  closed-loop control that wants where the keypoint is *now*, not where it was when the frame was captured.

KeypointSmoother adds the occlusion policy: a keypoint the model reports hidden is held on its prediction for up to
`hold_s`, then reported missing; filters reset after gaps longer than `reset_s`; and a visible keypoint is never moved
more than `max_deviation_px` from the model's measurement.

Both smoothers (this one and rtkp.export.offline_smoothing) see frame times through SteadyClock, the one time-step
rule: a frame with no PTS, or a PTS not after the previous frame's, is placed one nominal step after the previous frame.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from rtkp.config import SmoothingConfig

MEASURED, SMOOTHED, PREDICTED, MISSING = 0, 1, 2, 3
NOMINAL_STEP_S = 1 / 30  # the step of a track with no usable time step yet (image folders, all-zero PTS)
STEP_WINDOW = 1000  # the nominal step is the median of at most this many latest usable steps


class SteadyClock:
    """The time-step rule of both smoothers, online: call with each frame's PTS (s; None or NaN when it has none) in
    frame order; returns the time the filter uses, always after the previous one's.

    A frame whose PTS is missing or not after the previous frame's time is placed one nominal step after it; the
    nominal step is the median of the usable steps seen so far (the latest STEP_WINDOW of them: PTS to PTS of
    consecutive frames, both present, increasing), or NOMINAL_STEP_S (30 fps) while there is none. So all-zero
    timestamps and image folders (no PTS) are smoothed by frame index at 30 fps, and a repeated or backward PTS in a
    video costs one nominal step instead of a zero or negative one (which stopped a filter, or threw it backwards).
    """

    def __init__(self):
        self.steps = deque(maxlen=STEP_WINDOW)
        self.pts = self.t = None  # the previous frame's own PTS (None if it had none) and its time

    def nominal(self) -> float:
        return float(np.median(self.steps)) if self.steps else NOMINAL_STEP_S

    def __call__(self, pts) -> float:
        pts = None if pts is None or not math.isfinite(float(pts)) else float(pts)
        if pts is not None and self.pts is not None and pts > self.pts:
            self.steps.append(pts - self.pts)
        if self.t is None:
            t = 0.0 if pts is None else pts
        elif pts is not None and pts > self.t:
            t = pts
        else:
            t = self.t + self.nominal()
        self.pts, self.t = pts, t
        return t


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2 * math.pi * np.asarray(cutoff))
    return 1.0 / (1.0 + tau / dt)


class OneEuro:
    """One Euro filter over an array of coordinates (any shape)."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x = self.dx = None
        self.t = None

    def reset(self, x: np.ndarray, t: float) -> np.ndarray:
        self.x, self.dx, self.t = x.astype(np.float64), np.zeros_like(x, np.float64), t
        return self.x.copy()

    def __call__(self, x: np.ndarray, t: float, mask: np.ndarray | None = None) -> np.ndarray:
        """Filter measurement x at time t (s); only entries where `mask` is True are updated."""
        if self.x is None:
            return self.reset(x, t)
        dt = max(t - self.t, 1e-6)
        dx = (x - self.x) / dt
        dx_hat = self.dx + _alpha(self.d_cutoff, dt) * (dx - self.dx)
        cutoff = self.min_cutoff + self.beta * np.abs(dx_hat)
        x_hat = self.x + _alpha(cutoff, dt) * (x - self.x)
        if mask is not None:
            x_hat = np.where(mask, x_hat, self.x)
            dx_hat = np.where(mask, dx_hat, self.dx)
        self.x, self.dx, self.t = x_hat, dx_hat, t
        return x_hat.copy()

    def predict(self, t: float) -> np.ndarray:
        """The last estimate (One Euro has no motion model to extrapolate with)."""
        return self.x.copy()


class ConstantVelocityKalman:
    """Independent constant-velocity Kalman filters for each coordinate (state: position, velocity).

    accel_noise: std of the unmodelled acceleration (px/s²); meas_noise: std of a measurement (px).
    """

    def __init__(self, accel_noise: float = 500.0, meas_noise: float = 1.5):
        self.q, self.r = accel_noise**2, meas_noise**2
        self.p = self.v = self.cov = None
        self.t = None

    def reset(self, x: np.ndarray, t: float) -> np.ndarray:
        self.p, self.v = x.astype(np.float64), np.zeros_like(x, np.float64)
        # covariance per coordinate: [[pp, pv], [pv, vv]]
        self.cov = np.zeros(x.shape + (2, 2))
        self.cov[..., 0, 0] = self.r
        self.cov[..., 1, 1] = 1e6
        self.t = t
        return self.p.copy()

    def _predict_state(self, dt: float):
        p = self.p + self.v * dt
        c = self.cov
        pp = c[..., 0, 0] + 2 * dt * c[..., 0, 1] + dt * dt * c[..., 1, 1] + self.q * dt**4 / 4
        pv = c[..., 0, 1] + dt * c[..., 1, 1] + self.q * dt**3 / 2
        vv = c[..., 1, 1] + self.q * dt**2
        return p, pp, pv, vv

    def __call__(self, x: np.ndarray, t: float, mask: np.ndarray | None = None) -> np.ndarray:
        if self.p is None:
            return self.reset(x, t)
        dt = max(t - self.t, 1e-6)
        p, pp, pv, vv = self._predict_state(dt)
        s = pp + self.r
        kp, kv = pp / s, pv / s
        innov = x - p
        new_p, new_v = p + kp * innov, self.v + kv * innov
        new_pp, new_pv, new_vv = (1 - kp) * pp, (1 - kp) * pv, vv - kv * pv
        if mask is not None:
            new_p, new_v = np.where(mask, new_p, p), np.where(mask, new_v, self.v)
            new_pp, new_pv, new_vv = np.where(mask, new_pp, pp), np.where(mask, new_pv, pv), np.where(mask, new_vv, vv)
        self.p, self.v, self.t = new_p, new_v, t
        self.cov = np.stack([np.stack([new_pp, new_pv], -1), np.stack([new_pv, new_vv], -1)], -2)
        return self.p.copy()

    def predict(self, t: float) -> np.ndarray:
        """Position extrapolated to time t with the current velocity."""
        return self.p + self.v * (t - self.t)


class KeypointSmoother:
    """Smooths K keypoints over time and applies the occlusion policy (module docstring)."""

    def __init__(self, num_keypoints: int, cfg: SmoothingConfig | None = None):
        self.k, self.cfg = num_keypoints, cfg or SmoothingConfig()
        self.last_seen = np.full(num_keypoints, -np.inf)
        self.filter = self._new_filter()
        self.clock = SteadyClock()

    def _new_filter(self):
        c = self.cfg
        if c.filter == "kalman":
            return ConstantVelocityKalman(c.accel_noise, c.meas_noise)
        if c.filter == "one_euro":
            return OneEuro(c.min_cutoff, c.beta, c.d_cutoff)
        return None

    def update(self, t: float | None, xy: np.ndarray, visible: np.ndarray, latency_s: float = 0.0):
        """One frame. xy: (K, 2) source px; visible: (K,) bool; t: the frame's PTS (s), None when it has none (made
        usable by SteadyClock: no PTS, or one not after the previous frame's, is one nominal step after it).

        Returns (xy (K, 2), visible (K,) bool, state (K,) uint8 of MEASURED/SMOOTHED/PREDICTED/MISSING).
        """
        c = self.cfg
        t = self.clock(t)
        xy = np.asarray(xy, np.float64)
        visible = np.asarray(visible, bool)
        state = np.full(self.k, MISSING, np.uint8)
        if self.filter is None:
            state[visible] = MEASURED
            return xy.astype(np.float32), visible.copy(), state
        f = self.filter
        stale = (t - self.last_seen) > c.reset_s
        if f.t is None or (stale & visible).any():
            # (re)start the filter where it is stale: take the measurement as the state
            base = xy if f.t is None else np.where(stale[:, None] & visible[:, None], xy, f.predict(t))
            f.reset(base, t) if f.t is None else self._reseed(base, stale & visible, t)
        mask = np.broadcast_to(visible[:, None], xy.shape)
        out = f(xy, t, mask)
        if c.filter == "kalman" and c.predict_latency and latency_s > 0:
            out = f.predict(t + latency_s)
        # never move a visible keypoint further than the bound from what the model measured
        delta = out - xy
        norm = np.linalg.norm(delta, axis=1, keepdims=True)
        scale = np.minimum(1.0, c.max_deviation_px / np.maximum(norm, 1e-9))
        out = np.where(visible[:, None], xy + delta * scale, out)
        self.last_seen[visible] = t
        held = ~visible & ((t - self.last_seen) <= c.hold_s)
        state[visible] = SMOOTHED
        state[held] = PREDICTED
        if held.any():
            out[held] = f.predict(t)[held]
        return out.astype(np.float32), visible | held, state

    def remap(self, old_index) -> None:
        """Follow a change of the keypoint set without losing anyone's track: old_index (K',) is each keypoint's
        index before the change, or −1 for a new one (which starts fresh, like a keypoint seen for the first time)."""
        old_index = np.asarray(old_index, int)
        keep = old_index >= 0
        src = old_index[keep]
        last_seen = np.full(len(old_index), -np.inf)
        last_seen[keep] = self.last_seen[src]
        f = self.filter
        if f is not None and f.t is not None:
            fresh_cov = np.zeros((len(old_index), 2, 2, 2))
            fresh_cov[..., 0, 0], fresh_cov[..., 1, 1] = getattr(f, "r", 0.0), 1e6
            for attr in ("x", "dx") if isinstance(f, OneEuro) else ("p", "v", "cov"):
                old = getattr(f, attr)
                new = fresh_cov.copy() if attr == "cov" else np.zeros((len(old_index),) + old.shape[1:])
                new[keep] = old[src]
                setattr(f, attr, new)
        self.k, self.last_seen = len(old_index), last_seen

    def _reseed(self, base: np.ndarray, which: np.ndarray, t: float) -> None:
        """Reset the filter state of the keypoints in `which` (K,) to `base`, keeping the others."""
        f = self.filter
        if isinstance(f, OneEuro):
            f.x = np.where(which[:, None], base, f.x)
            f.dx = np.where(which[:, None], 0.0, f.dx)
        else:
            f.p = np.where(which[:, None], base, f.p)
            f.v = np.where(which[:, None], 0.0, f.v)
            fresh = np.zeros_like(f.cov)
            fresh[..., 0, 0], fresh[..., 1, 1] = f.r, 1e6
            f.cov = np.where(which[:, None, None, None], fresh, f.cov)
