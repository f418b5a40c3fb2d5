import numpy as np
import pytest

from rtkp.smoothing import (
    MISSING,
    PREDICTED,
    SMOOTHED,
    ConstantVelocityKalman,
    KeypointSmoother,
    OneEuro,
    SmoothingConfig,
)


def _track(n=300, fps=30.0, noise=1.5, seed=0):
    """A keypoint moving on a circle (radius 100 px, 0.25 Hz) measured with Gaussian noise."""
    t = np.arange(n) / fps
    truth = np.stack([320 + 100 * np.cos(2 * np.pi * 0.25 * t), 240 + 100 * np.sin(2 * np.pi * 0.25 * t)], 1)
    meas = truth + np.random.default_rng(seed).normal(0, noise, truth.shape)
    return t, truth, meas


def _jitter(xy):
    return float(np.linalg.norm(np.diff(xy, 2, axis=0), axis=1).mean())


@pytest.mark.parametrize("make", [OneEuro, ConstantVelocityKalman])
def test_filters_reduce_jitter_and_stay_close(make):
    t, truth, meas = _track()
    f = make()
    out = np.stack([f(m, ti) for m, ti in zip(meas, t)])
    assert _jitter(out[10:]) < 0.6 * _jitter(meas[10:])
    # the defaults trade a little lag on this fast motion (157 px/s) for much less jitter
    assert np.sqrt(((out[30:] - truth[30:]) ** 2).sum(1).mean()) < np.sqrt(((meas - truth) ** 2).sum(1).mean()) * 1.6


def test_one_euro_is_identity_on_a_constant_and_follows_a_step():
    f = OneEuro(1.0, 0.02)
    for i in range(5):
        out = f(np.array([10.0, 20.0]), i / 30)
    np.testing.assert_allclose(out, [10, 20])
    for i in range(5, 40):
        out = f(np.array([60.0, 20.0]), i / 30)
    assert abs(out[0] - 60) < 1.0


def test_kalman_prediction_extrapolates_velocity():
    k = ConstantVelocityKalman(100.0, 0.5)
    for i in range(60):
        k(np.array([100.0 * i / 30]), i / 30)  # 100 px/s
    assert k.predict(59 / 30 + 0.1)[0] == pytest.approx(100 * 59 / 30 + 10, abs=1.0)


def test_occlusion_hold_then_missing_then_reset():
    cfg = SmoothingConfig(filter="kalman", hold_s=0.2, reset_s=0.5, meas_noise=0.5)
    s = KeypointSmoother(2, cfg)
    vis = np.array([True, True])
    for i in range(30):  # keypoint 0 moves right at 60 px/s, keypoint 1 rests
        xy, v, st = s.update(i / 30, np.array([[2.0 * i, 0.0], [50.0, 50.0]]), vis)
    assert (st == SMOOTHED).all()
    hidden = np.array([False, True])
    xy, v, st = s.update(30 / 30, np.array([[0.0, 0.0], [50.0, 50.0]]), hidden)
    assert st[0] == PREDICTED and v[0] and xy[0, 0] == pytest.approx(60.0, abs=2.0)  # extrapolated, not the junk
    for i in range(31, 38):
        xy, v, st = s.update(i / 30, np.array([[0.0, 0.0], [50.0, 50.0]]), hidden)
    assert st[0] == MISSING and not v[0] and st[1] == SMOOTHED
    # back after a gap longer than reset_s: starts afresh at the measurement
    xy, v, st = s.update(60 / 30, np.array([[300.0, 10.0], [50.0, 50.0]]), vis)
    np.testing.assert_allclose(xy[0], [300, 10], atol=1e-6)


def test_visible_keypoints_never_move_more_than_the_bound():
    s = KeypointSmoother(1, SmoothingConfig(filter="one_euro", min_cutoff=0.01, beta=0.0, max_deviation_px=3.0))
    s.update(0.0, np.array([[0.0, 0.0]]), np.array([True]))
    xy, _, _ = s.update(1 / 30, np.array([[100.0, 0.0]]), np.array([True]))
    assert np.linalg.norm(xy[0] - [100, 0]) == pytest.approx(3.0, abs=1e-4)


def test_no_filter_passes_measurements_through():
    s = KeypointSmoother(2, SmoothingConfig(filter="none"))
    rng = np.random.default_rng(0)
    for i in range(10):  # a jumpy track: any filtering, holding or deviation bound would change it
        meas = rng.uniform(0, 500, (2, 2)).astype(np.float32)
        vis = np.array([True, i % 3 == 0])
        xy, v, st = s.update(i / 30, meas, vis)
        np.testing.assert_array_equal(xy, meas)
        np.testing.assert_array_equal(v, vis)
        assert st[0] != MISSING and (st[1] == MISSING) == (not vis[1])


def test_offline_rts_beats_causal_filters_and_bridges_gaps():
    from rtkp.export.offline_smoothing import rts_smooth

    t, truth, meas = _track(noise=1.5)
    vis = np.ones((len(t), 1), bool)
    vis[150:158] = False  # hidden for ~0.27 s
    out, v, st = rts_smooth(t, meas[:, None, :], vis, accel_noise=500.0, meas_noise=1.5, hold_s=0.2)
    k = ConstantVelocityKalman(500.0, 1.5)
    causal = np.stack([k(m, ti) for m, ti in zip(meas, t)])
    seen = vis[:, 0].copy()
    seen[:30] = False
    rmse = lambda a: np.sqrt(((a[seen] - truth[seen]) ** 2).sum(-1).mean())
    assert rmse(out[:, 0]) < 0.8 * rmse(causal)
    # inside the gap it interpolates close to the truth, and only the middle (beyond hold_s of both sides) is missing
    assert np.linalg.norm(out[150:158, 0] - truth[150:158], axis=1).max() < 6
    assert (st[150:158, 0] != MISSING).sum() >= 6
    assert _jitter(out[30:, 0]) < 0.5 * _jitter(meas[30:])
