"""Offline smoothing: a forward constant-velocity Kalman filter followed by a Rauch–Tung–Striebel backward pass.

It uses future frames, so it only exists for offline export; for a keypoint hidden for a while it interpolates between
the frames on either side instead of extrapolating.

What it promises, like the live smoother (rtkp.smoothing):
- a keypoint the model reported hidden stays hidden (`visible` False), so every format writes it as with `--smooth
  none` (CSV likelihood 0, COCO v = 0); its state says what its x, y are: PREDICTED within `hold_s` of a frame where it
  is visible (the interpolation between sightings), MISSING otherwise (the model's own x, y, untouched);
- a visible keypoint is never moved more than `max_deviation_px` from the model's measurement;
- time steps that cannot be used (no PTS, PTS equal to or before the previous frame's: all-zero timestamps, image
  folders) become one nominal frame step (steady_times: rtkp.smoothing.SteadyClock, the live smoother's rule), so
  that such frames are neither merged into one instant (which collapsed a whole track onto one point) nor thrown
  backwards.
"""

from __future__ import annotations

import numpy as np

from rtkp.export.instances import moved, with_instances
from rtkp.smoothing import MISSING, PREDICTED, SMOOTHED, SteadyClock


def steady_times(t) -> np.ndarray:
    """Frame times (s) the filter can use: (N,) with None or NaN where a frame has no time; rtkp.smoothing.SteadyClock
    run over the track, the rule the live smoother uses (a missing time, or one not after the previous frame's, becomes
    one nominal step: the median of the usable steps before it, or 1/30 s while there is none)."""
    clock = SteadyClock()
    return np.array([clock(v) for v in np.asarray(t, object).ravel()], np.float64)


def rts_smooth(
    t: np.ndarray,
    xy: np.ndarray,
    visible: np.ndarray,
    accel_noise: float = 500.0,
    meas_noise: float = 1.5,
    hold_s: float = 0.25,
    max_deviation_px: float = 8.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smooth a whole track.

    t: (N,) seconds (made usable by steady_times); xy: (N, K, 2) measurements; visible: (N, K) bool (hidden frames
    are not measurements). Returns (xy (N, K, 2), visible (N, K), state (N, K) uint8): `visible` as given; a visible
    keypoint is SMOOTHED, within `max_deviation_px` of its measurement; a hidden one is PREDICTED (x, y interpolated)
    when a frame where it is visible lies within `hold_s` before or after, and MISSING (x, y as measured) otherwise.
    """
    t = steady_times(t)
    xy = np.asarray(xy, np.float64)
    visible = np.asarray(visible, bool)
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
        dt = 0.0 if i == 0 else t[i] - t[i - 1]  # > 0 (steady_times)
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
        dt = t[i + 1] - t[i]
        f = np.array([[1, dt], [0, 1]])
        gain = p_f[i] @ f.T @ np.linalg.inv(p_p[i + 1])
        m_s[i] = m_f[i] + (gain @ (m_s[i + 1] - m_p[i + 1])[..., None])[..., 0]
        p_s[i] = p_f[i] + gain @ (p_s[i + 1] - p_p[i + 1]) @ np.swapaxes(gain, -1, -2)
    out = m_s[..., 0]
    # never move a visible keypoint further than the bound from what the model measured (as rtkp.smoothing does)
    delta = out - xy
    norm = np.linalg.norm(delta, axis=-1, keepdims=True)
    bounded = xy + delta * np.minimum(1.0, max_deviation_px / np.maximum(norm, 1e-9))
    out = np.where(visible[..., None], bounded, out)
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
    # hidden stays hidden (the formats write it as unsmoothed: CSV likelihood 0, COCO v=0); far from any sighting, the
    # smoother's extrapolation means nothing, so the measurement is kept
    out = np.where((state == MISSING)[..., None], xy, out)
    return out.astype(np.float32), visible.copy(), state


def smooth_track(pts: list, xy: np.ndarray, visible: np.ndarray, cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rts_smooth over a track with the settings of cfg (a SmoothingConfig). pts: (N,) seconds, None where a frame has
    none (image folders; steady_times gives such frames one nominal step each); xy (N, K, 2); visible (N, K) bool."""
    return rts_smooth(pts, xy, visible, cfg.accel_noise, cfg.meas_noise, cfg.hold_s, cfg.max_deviation_px)


def smooth_by_track(times: np.ndarray, rows: np.ndarray, tracks: np.ndarray, xy: np.ndarray, visible: np.ndarray, cfg):
    """smooth_track over each track on its own, never across tracks.

    times: (N,) frame times from steady_times (one per frame, so that a track's gaps keep their length); rows (M,):
    the frame of each instance; tracks (M,): its track id; xy (M, K, 2); visible (M, K). Returns (xy (M, K, 2)
    float32, visible (M, K), state (M, K) uint8), row for row.
    """
    times, rows, tracks = np.asarray(times, np.float64), np.asarray(rows, np.int64), np.asarray(tracks, np.int64)
    out_xy = np.zeros(np.shape(xy), np.float32)
    out_vis = np.asarray(visible, bool).copy()
    out_state = np.zeros(out_vis.shape, np.uint8)
    for track in np.unique(tracks):
        sel = np.flatnonzero(tracks == track)
        out_xy[sel], out_vis[sel], out_state[sel] = smooth_track(times[rows[sel]], xy[sel], out_vis[sel], cfg)
    return out_xy, out_vis, out_state


def smooth_frames(frames: list, cfg) -> list:
    """KeypointFrames with every instance's positions, visibility and state replaced by its smoothed track's
    (smooth_by_track); the frame-level arrays follow the first instance (rtkp.export.instances.with_instances)."""
    if not frames:
        return frames
    times = steady_times([kf.pts for kf in frames])
    found = [(i, inst) for i, kf in enumerate(frames) for inst in kf.instances]
    if not found:
        return frames
    rows = np.array([i for i, _ in found])
    tracks = np.array([inst.track for _, inst in found])
    xy = np.stack([inst.keypoints for _, inst in found]).astype(np.float64)
    vis = np.stack([inst.visible for _, inst in found])
    out, v, st = smooth_by_track(times, rows, tracks, xy, vis, cfg)
    smoothed: list[list] = [[] for _ in frames]
    for m, (i, inst) in enumerate(found):
        smoothed[i].append(moved(inst, out[m], v[m], st[m]))
    return [with_instances(kf, smoothed[i]) for i, kf in enumerate(frames)]
