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


# Time steps: SteadyClock, the one rule of both smoothers (a frame with no PTS, or one not after the previous frame's,
# is one nominal step after it: the median of the usable steps so far, or 1/30 s).


def test_steady_clock_places_unusable_times_one_nominal_step_on():
    from rtkp.export.offline_smoothing import steady_times
    from rtkp.smoothing import SteadyClock

    # a video: a repeated PTS, a backward one, none: each one median step (so far) after the frame before
    pts = [0.0, 0.1, 0.2, 0.2, 0.25, 0.5, float("nan"), 0.7, 0.8]
    clock = SteadyClock()
    got = [clock(p) for p in pts]
    want = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    np.testing.assert_allclose(got, want)
    # no usable step yet (an image folder, all-zero PTS): 1/30 s per frame
    clock = SteadyClock()
    np.testing.assert_allclose([clock(p) for p in [None, None, 0.0, 0.0]], [0, 1 / 30, 2 / 30, 3 / 30])
    np.testing.assert_allclose(steady_times(pts), want)  # the offline smoother's times are the same rule's


def _moving_point(n=90, speed=4.0):
    """One keypoint moving right at `speed` px per frame, the other at rest."""
    x = 100 + speed * np.arange(n)
    return np.stack([np.stack([x, np.full(n, 200.0)], 1), np.tile([[300.0, 100.0]], (n, 1))], 1)


def _run(cfg, times, xy):
    s = KeypointSmoother(xy.shape[1], cfg)
    return np.stack([s.update(t, m, np.ones(len(m), bool))[0] for t, m in zip(times, xy)])


@pytest.mark.parametrize("kind", ["one_euro", "kalman"])
def test_all_zero_or_no_pts_tracks_like_frame_index_timing(kind):
    cfg = SmoothingConfig(filter=kind)
    xy = _moving_point()
    by_index = _run(cfg, [i / 30 for i in range(len(xy))], xy)
    for times in ([0.0] * len(xy), [None] * len(xy)):
        out = _run(cfg, times, xy)
        np.testing.assert_allclose(out, by_index, atol=1e-4)
        # following the point, not trailing it by the whole bound (which all-zero PTS did: the filter stopped)
        assert np.linalg.norm(out[30:, 0] - xy[30:, 0], axis=1).max() < 0.5 * cfg.max_deviation_px


@pytest.mark.parametrize("kind", ["one_euro", "kalman"])
def test_a_repeated_or_backward_pts_does_not_jump(kind):
    cfg = SmoothingConfig(filter=kind, max_deviation_px=100.0)  # the bound must not be what keeps it close
    xy = _moving_point(speed=6.0)
    good = [i / 25 for i in range(len(xy))]
    bad = list(good)
    bad[20] = bad[19]  # a repeated timestamp
    bad[40] = bad[39] - 0.5  # one thrown backwards
    # the bad frame is put one median step (1/25 s) after the one before: the same track as with good timestamps
    np.testing.assert_allclose(_run(cfg, bad, xy), _run(cfg, good, xy), atol=1e-4)


def test_export_causal_of_an_image_folder_smooths_by_frame_index(tmp_path):
    """A real `rtkp export --smooth causal` of an image folder (no PTS): the live filter over the measurements of
    `--smooth none` at one nominal step (1/30 s) per image, never the moments the images happened to be read."""
    import json

    import cv2
    from conftest import make_tiny_model, render_scene

    from rtkp.cli import main

    folder = tmp_path / "images"
    folder.mkdir()
    scene = render_scene(np.random.default_rng(0), size=(256, 96))[0]
    for i in range(40):  # the scene slides left 3 px per image
        cv2.imwrite(str(folder / f"img{i:03d}.png"), cv2.cvtColor(scene[:, 3 * i : 3 * i + 128], cv2.COLOR_RGB2BGR))
    model = make_tiny_model(tmp_path / "model")
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["visibility_margin"] = -10.0  # every keypoint visible: the filter runs on all of them
    (model / "manifest.json").write_text(json.dumps(manifest))
    common = ["--model", str(model), "--backend", "onnxruntime", "--quiet", "--format", "jsonl"]
    common += ["--set", "run.threads=1", "--set", "run.batch=1"]

    def export(smooth):
        out = tmp_path / smooth
        assert main(["export", str(folder), "--out", str(out), "--smooth", smooth, *common]) == 0
        lines = (out / "images.jsonl").read_text().splitlines()
        recs = [json.loads(line) for line in lines]
        assert len(recs) == 40 and all(r["pts"] is None for r in recs)
        kp = [list(r["keypoints"].values()) for r in recs]
        return np.array([[k[:2] for k in f] for f in kp]), np.array([[k[3] for k in f] for f in kp], bool)

    plain, vis = export("none")
    causal, _ = export("causal")
    assert np.ptp(plain[..., 0], axis=0).max() > 20, "the keypoints should move across the images"
    assert vis.all()
    moved = np.linalg.norm(causal - plain, axis=-1)
    assert moved.max() <= SmoothingConfig().max_deviation_px + 1e-2
    s = KeypointSmoother(plain.shape[1], SmoothingConfig())
    want = np.stack([s.update(i / 30, m, v)[0] for i, (m, v) in enumerate(zip(plain, vis))])
    np.testing.assert_allclose(causal, want, atol=2e-2)
