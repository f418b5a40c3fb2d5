"""`--smooth offline` (forward Kalman + RTS backward pass) keeps the promises smoothing makes: what the model reported
hidden stays hidden, a visible keypoint moves at most `max_deviation_px`, and unusable time steps neither collapse
nor throw the track.

Synthetic KeypointFrame sequences through rtkp.export.offline_smoothing.smooth_frames, and one real `rtkp export`."""

import csv
import json

import numpy as np
import pytest
from conftest import make_tiny_model, render_scene

from rtkp.cli import main
from rtkp.config import SmoothingConfig
from rtkp.export.formats import coco_line, csv_line
from rtkp.export.offline_smoothing import smooth_frames
from rtkp.messages import Instance, KeypointFrame, missing_keypoints
from rtkp.smoothing import MISSING, PREDICTED, SMOOTHED

NAMES = ["a", "b"]


def frames(xy, visible, pts=None, name=None):
    """KeypointFrames of a track: xy (N, K, 2), visible (N, K); pts (N,) seconds or None (i / 25 s)."""
    xy, visible = np.asarray(xy, np.float32), np.asarray(visible, bool)
    n, k = visible.shape
    pts = [i / 25 for i in range(n)] if pts is None else pts
    return [
        KeypointFrame(
            i,
            pts[i],
            0,
            (640, 480),
            xy[i],
            np.full(k, 0.9, np.float32),
            visible[i],
            np.where(visible[i], 0, 3).astype(np.uint8),
            name=None if name is None else f"{name}{i:03d}.png",
        )
        for i in range(n)
    ]


def moving(n=60, speed=2.0):
    """Two keypoints moving right at `speed` px per frame, 40 px apart."""
    x = 100 + speed * np.arange(n)
    return np.stack([np.stack([x, np.full(n, 200.0)], 1), np.stack([x + 40, np.full(n, 240.0)], 1)], 1)


def track(out):
    return np.stack([kf.keypoints for kf in out])


def test_a_keypoint_reported_hidden_stays_hidden_in_every_format():
    vis = np.ones((60, 2), bool)
    vis[20:24, 1] = False  # hidden for 4 frames (0.16 s): within hold_s of a sighting on both sides
    vis[40:, 1] = False  # and from frame 40 to the end (beyond hold_s there)
    raw = frames(moving(), vis)
    out = smooth_frames(raw, SmoothingConfig())
    visible = np.stack([kf.visible for kf in out])
    state = np.stack([kf.state for kf in out])
    np.testing.assert_array_equal(visible, vis)
    assert (state[vis] == SMOOTHED).all()
    assert (state[20:24, 1] == PREDICTED).all() and (state[50:, 1] == MISSING).all()
    # inside the short gap x, y are the interpolation; far from any sighting, the measurement as the model gave it
    np.testing.assert_allclose(track(out)[20:24, 1], moving()[20:24, 1], atol=1.0)
    np.testing.assert_array_equal(track(out)[50:, 1], track(raw)[50:, 1])
    # what the writers make of it: exactly what they write for the unsmoothed frames (likelihood 0, COCO v = 0)
    for a, b in zip(raw, out):
        like_raw = csv_line(a, NAMES).strip().split(",")[3::3]
        like_out = csv_line(b, NAMES).strip().split(",")[3::3]
        assert [float(v) == 0 for v in like_out] == [float(v) == 0 for v in like_raw]
        v_raw = json.loads(coco_line(a, 1, NAMES, "x").split("\t")[1])["keypoints"][2::3]
        v_out = json.loads(coco_line(b, 1, NAMES, "x").split("\t")[1])["keypoints"][2::3]
        assert v_out == v_raw


@pytest.mark.parametrize("bound", [8.0, 3.0])
def test_a_visible_keypoint_never_moves_more_than_the_bound(bound):
    xy = moving()
    xy[30:, 0, 0] += 60  # keypoint a jumps 60 px at frame 30: a smoother cuts the corner on both sides of it
    rng = np.random.default_rng(0)
    xy += rng.normal(0, 1.5, xy.shape)
    vis = np.ones((60, 2), bool)
    vis[10:14, 1] = False
    out = track(smooth_frames(frames(xy, vis), SmoothingConfig(max_deviation_px=bound)))
    moved = np.linalg.norm(out - xy, axis=-1)
    assert moved[vis].max() <= bound + 1e-3
    assert moved[29:31, 0].max() == pytest.approx(bound, abs=1e-3)  # the bound is what held it


def test_unrelated_images_without_pts_move_points_at_most_the_bound():
    """An image folder: no PTS, and frames that need not be related (points jump tens of px from one to the next)."""
    rng = np.random.default_rng(1)
    xy = rng.uniform(50, 400, (30, 2, 2))
    vis = np.ones((30, 2), bool)
    out = track(smooth_frames(frames(xy, vis, [None] * 30, name="img"), SmoothingConfig()))
    assert np.linalg.norm(out - xy, axis=-1).max() <= 8.0 + 1e-3


def test_all_zero_timestamps_are_smoothed_by_frame_index():
    xy = moving()
    vis = np.ones((60, 2), bool)
    zero = track(smooth_frames(frames(xy, vis, [0.0] * 60), SmoothingConfig()))
    # not collapsed: the track still moves 118 px, and it is the track of frames 1/30 s apart (the nominal step)
    assert np.ptp(zero[:, 0, 0]) > 100
    nominal = track(smooth_frames(frames(xy, vis, [i / 30 for i in range(60)]), SmoothingConfig()))
    np.testing.assert_allclose(zero, nominal, atol=1e-4)
    # and no PTS at all (an image folder) is the same
    none = track(smooth_frames(frames(xy, vis, [None] * 60), SmoothingConfig()))
    np.testing.assert_allclose(none, nominal, atol=1e-4)


def test_a_repeated_or_backward_pts_costs_one_nominal_step():
    xy = moving(speed=6.0)
    vis = np.ones((60, 2), bool)
    good = [i / 25 for i in range(60)]
    bad = list(good)
    bad[20] = bad[19]  # a repeated timestamp
    bad[40] = bad[39] - 0.5  # one thrown backwards
    a = track(smooth_frames(frames(xy, vis, good), SmoothingConfig(max_deviation_px=100)))
    b = track(smooth_frames(frames(xy, vis, bad), SmoothingConfig(max_deviation_px=100)))
    # the frame with the bad timestamp is put one median step (1/25 s) after the one before: the same track
    np.testing.assert_allclose(b, a, atol=1e-3)


def test_several_animals_are_smoothed_per_track_never_across_tracks():
    """Two animals crossing (track 0 rightwards, track 1 leftwards, keypoints 2 px apart at frame 30), track 1 gone
    for frames 20..29, frames 25..27 without any animal: each track comes out as if smoothed alone, at its own
    frames' times (a gap keeps its length), and the frame's arrays follow its first instance."""
    n, cfg = 60, SmoothingConfig(max_deviation_px=100)
    a, b = moving(n, 3.0), moving(n, -3.0)[:, ::-1] + [[[178, 1]]]  # b: right to left, a's keypoints 2 px off its
    rng = np.random.default_rng(2)
    a, b = a + rng.normal(0, 1.0, a.shape), b + rng.normal(0, 1.0, b.shape)
    vis = np.ones((n, 2), bool)
    pts = [i / 25 for i in range(n)]

    def inst(track, xy):
        return Instance(
            track, 0.9, xy.astype(np.float32), np.full(2, 0.9, np.float32), np.ones(2, bool), np.zeros(2, np.uint8)
        )

    both = []
    for i in range(n):
        insts = [inst(0, a[i])] * (i not in (25, 26, 27)) + [inst(1, b[i])] * (not 20 <= i < 30)
        arrays = (
            (insts[0].keypoints, insts[0].scores, insts[0].visible, insts[0].state) if insts else missing_keypoints(2)
        )
        both.append(KeypointFrame(i, pts[i], 0, (640, 480), *arrays, instances=tuple(insts)))
    out = smooth_frames(both, cfg)
    for tid, xy in ((0, a), (1, b)):
        present = [i for i in range(n) if any(x.track == tid for x in both[i].instances)]
        alone = smooth_frames(frames(xy[present], vis[present], [pts[i] for i in present]), cfg)
        track_of = {i: kf.keypoints for i, kf in zip(present, alone)}
        for kf in out:
            got = [x.keypoints for x in kf.instances if x.track == tid]
            assert len(got) == (kf.index in track_of)
            if got:
                np.testing.assert_array_equal(got[0], track_of[kf.index])
    assert np.abs(track(out)[:20] - a[:20]).max() > 0.01  # the smoother did move points
    assert [len(kf.instances) for kf in out[24:29]] == [1, 0, 0, 0, 1]
    for kf in out:
        np.testing.assert_array_equal(kf.keypoints, kf.instances[0].keypoints if kf.instances else np.zeros((2, 2)))


def _write_blinking_video(path, n=30):
    """Blocks of 5 textured frames and 5 dark ones: a random-weight model's scores differ between the two."""
    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        for i in range(n):
            image = render_scene(rng)[0] if (i // 5) % 2 == 0 else np.full((96, 128, 3), 20, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_export_offline_writes_hidden_keypoints_as_unsmoothed(tmp_path):
    video = _write_blinking_video(tmp_path / "clip.mp4")
    common = ["--backend", "onnxruntime", "--quiet", "--set", "run.threads=1", "--set", "run.batch=1"]
    common += ["--format", "coco,jsonl,csv", "--set", "smoothing.hold_s=10"]  # every hidden keypoint gets "held"

    def export(model, smooth):
        out = tmp_path / f"{model.name}-{smooth}"
        assert main(["export", str(video), "--out", str(out), "--model", str(model), "--smooth", smooth, *common]) == 0
        return out

    # the heatmap head's evidence is its score: a margin between a keypoint's lowest and highest score hides it in some
    # frames and not in others
    probe = export(make_tiny_model(tmp_path / "probe", head="heatmap"), "none")
    scores = [json.loads(line)["keypoints"]["left_eye"][2] for line in (probe / "clip.jsonl").read_text().splitlines()]
    model = make_tiny_model(tmp_path / "model", head="heatmap")
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["visibility_margin"] = (min(scores) + max(scores)) / 2
    (model / "manifest.json").write_text(json.dumps(manifest))
    plain, smoothed = export(model, "none"), export(model, "offline")

    def csv_rows(folder):  # DeepLabCut's layout: scorer / bodyparts / coords, then one row per frame
        rows = list(csv.reader(open(folder / "clip.csv")))
        parts, coords = rows[1][1:], rows[2][1:]
        return [{(p, c): float(v) for p, c, v in zip(parts, coords, row[1:])} for row in rows[3:]]

    def coco(folder):
        return [a["keypoints"] for a in json.loads((folder / "clip.coco.json").read_text())["annotations"]]

    hidden = [
        [not v[3] for v in json.loads(line)["keypoints"].values()]
        for line in (plain / "clip.jsonl").read_text().splitlines()
    ]
    assert 0 < sum(h[1] for h in hidden) < len(hidden), "the margin should hide left_eye in some frames only"
    names = ["nose", "left_eye", "right_eye"]
    for frame, (h, a, b, ca, cb) in enumerate(
        zip(hidden, csv_rows(plain), csv_rows(smoothed), coco(plain), coco(smoothed))
    ):
        for k, name in enumerate(names):
            if h[k]:
                assert b[(name, "likelihood")] == 0 == a[(name, "likelihood")], (frame, name)
                assert cb[3 * k + 2] == 0 == ca[3 * k + 2], (frame, name)
            else:
                assert b[(name, "likelihood")] == a[(name, "likelihood")] > 0, (frame, name)
                assert cb[3 * k + 2] == 2, (frame, name)
                moved = np.hypot(b[(name, "x")] - a[(name, "x")], b[(name, "y")] - a[(name, "y")])
                assert moved <= 8.0 + 2e-3, (frame, name)
