"""Offline smoothing: a forward constant-velocity Kalman filter followed by a Rauch–Tung–Striebel backward pass.

It uses future frames, so it only exists for offline export; for a keypoint hidden for a while it interpolates between
the frames on either side instead of extrapolating.
"""

from __future__ import annotations

import numpy as np

from rtkp.smoothing import MISSING, PREDICTED, SMOOTHED


def rts_smooth(
    t: np.ndarray,
    xy: np.ndarray,
    visible: np.ndarray,
    accel_noise: float = 500.0,
    meas_noise: float = 1.5,
    hold_s: float = 0.25,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smooth a whole track.

    t: (N,) seconds; xy: (N, K, 2) measurements; visible: (N, K) bool (hidden frames are not measurements).
    Returns (xy (N, K, 2), visible (N, K), state (N, K) uint8): a hidden keypoint is reported as PREDICTED when a
    frame where it is visible lies within `hold_s` before or after, and as MISSING otherwise.
    """
    n, k = visible.shape
    q, r = accel_noise**2, meas_noise**2
    # state per coordinate: mean (N, K, 2, 2[pos, vel]) and covariance (N, K, 2, 2, 2)
    m_f = np.zeros((n, k, 2, 2))
    p_f = np.zeros((n, k, 2, 2, 2))
    m_p = np.zeros_like(m_f)
    p_p = np.zeros_like(p_f)
    mean = np.zeros((k, 2, 2))
    cov = np.zeros((k, 2, 2, 2))
    cov[..., 0, 0], cov[..., 1, 1] = 1e8, 1e8
    started = np.zeros(k, bool)
    for i in range(n):
        dt = 0.0 if i == 0 else max(t[i] - t[i - 1], 1e-6)
        f = np.array([[1, dt], [0, 1]])
        qm = q * np.array([[dt**4 / 4, dt**3 / 2], [dt**3 / 2, dt**2]])
        mean = mean @ f.T
        cov = f @ cov @ f.T + qm
        m_p[i], p_p[i] = mean, cov
        obs = visible[i]
        fresh = obs & ~started
        if fresh.any():  # first sighting: position = measurement, velocity unknown
            mean[fresh, :, 0] = xy[i, fresh]
            mean[fresh, :, 1] = 0
            cov[fresh] = np.diag([r, 1e6])
            started |= fresh
        upd = obs & ~fresh
        if upd.any():
            s = cov[upd, :, 0, 0] + r
            gain = cov[upd, :, :, 0] / s[..., None]
            innov = xy[i, upd] - mean[upd, :, 0]
            mean[upd] = mean[upd] + gain * innov[..., None]
            cov[upd] = cov[upd] - gain[..., :, None] * cov[upd, :, 0, :][..., None, :]
        m_f[i], p_f[i] = mean, cov
    m_s, p_s = m_f.copy(), p_f.copy()
    for i in range(n - 2, -1, -1):
        dt = max(t[i + 1] - t[i], 1e-6)
        f = np.array([[1, dt], [0, 1]])
        gain = p_f[i] @ f.T @ np.linalg.inv(p_p[i + 1])
        m_s[i] = m_f[i] + (gain @ (m_s[i + 1] - m_p[i + 1])[..., None])[..., 0]
        p_s[i] = p_f[i] + gain @ (p_s[i + 1] - p_p[i + 1]) @ np.swapaxes(gain, -1, -2)
    out = m_s[..., 0].astype(np.float32)
    # hidden keypoints: reported as predicted near a sighting, missing otherwise
    last = np.full(k, -np.inf)
    since = np.zeros((n, k))
    for i in range(n):
        last = np.where(visible[i], t[i], last)
        since[i] = t[i] - last
    nxt = np.full(k, np.inf)
    until = np.zeros((n, k))
    for i in range(n - 1, -1, -1):
        nxt = np.where(visible[i], t[i], nxt)
        until[i] = nxt - t[i]
    held = ~visible & (np.minimum(since, until) <= hold_s)
    state = np.where(visible, SMOOTHED, np.where(held, PREDICTED, MISSING)).astype(np.uint8)
    never = ~started
    out[:, never] = xy[:, never]
    return out, visible | held, state


def smooth_track(pts: list, xy: np.ndarray, visible: np.ndarray, cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rts_smooth over a track with the settings of cfg (a SmoothingConfig). pts: (N,) seconds, None where a frame has
    none (image folders: frame i is taken at i / 30 s); xy (N, K, 2); visible (N, K) bool."""
    t = np.array([p if p is not None else i / 30.0 for i, p in enumerate(pts)])
    return rts_smooth(t, xy, visible, cfg.accel_noise, cfg.meas_noise, cfg.hold_s)


def smooth_frames(frames: list, cfg) -> list:
    """KeypointFrames with positions, visibility and state replaced by the smoothed track's (smooth_track)."""
    import dataclasses

    if not frames:
        return frames
    xy = np.stack([kf.keypoints for kf in frames]).astype(np.float64)
    vis = np.stack([kf.visible for kf in frames])
    out, v, st = smooth_track([kf.pts for kf in frames], xy, vis, cfg)
    return [dataclasses.replace(kf, keypoints=out[i], visible=v[i], state=st[i]) for i, kf in enumerate(frames)]
