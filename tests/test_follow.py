"""rtkp.follow: the window the graph looks through on the CPU, and the rules that send a frame to the whole input."""

from pathlib import Path

import numpy as np
import pytest

from rtkp.data.sample import Dataset, Sample
from rtkp.follow import ALIGN_PX, EDGE_PX, REFRESH_FRAMES, Follower, Window, crop_size_for
from rtkp.train.recipe import follow_crop_size

INPUT = (640, 480)
CROP = (224, 224)


def rows(points, visible=None, evidence=0.5):
    """(K, 4) graph rows at these model-input points: score − clutter = evidence where visible, −1 elsewhere."""
    pts = np.asarray(points, np.float32)
    vis = np.ones(len(pts), bool) if visible is None else np.asarray(visible)
    out = np.zeros((len(pts), 4), np.float32)
    out[:, :2] = pts
    out[:, 2] = np.where(vis, evidence, -1.0)
    return out


def followed(points, index=1) -> tuple[Follower, Window]:
    """A Follower that saw these keypoints (whole input) and the window it picks for frame `index`."""
    f = Follower(INPUT, CROP, margin=0.0)
    f.update(rows(points), whole=True)
    return f, f.window(index)


def test_the_crop_size_rule():
    # the mouse: its largest keypoint box is 138 px, 40 px of context on each side, rounded up to 32: 224
    assert crop_size_for(np.array([[131.7, 137.8], [100, 90]]), INPUT) == (224, 224)
    assert crop_size_for(np.array([[100, 100]]), (320, 256)) == (192, 192)
    # animals that fill the frame, or a window over half the input's pixels: none
    assert crop_size_for(np.array([[300, 250]]), INPUT) == (384, 384)  # 48 % of the pixels: still pays
    assert crop_size_for(np.array([[320, 300]]), INPUT) is None  # 416²: 56 %
    assert crop_size_for(np.array([[250, 250]]), (320, 256)) is None
    assert crop_size_for(np.zeros((0, 2)), INPUT) is None


def test_training_takes_the_box_around_every_animal_of_a_frame():
    def sample(name, pts):
        return Sample(Path(name), np.asarray(pts, np.float32), np.ones(len(pts), bool), name)

    # two animals in one frame, 150 px apart: the window must hold both (box 190 px + 2 × 40 → 288)
    data = Dataset([sample("a.png", [[10, 10], [50, 40]]), sample("a.png", [[160, 20], [200, 60]])], ["p", "q"])
    assert follow_crop_size(data, [1.0, 1.0], INPUT) == (288, 288)
    # the same animals in two frames: each box alone (40 px + 80 → 128)
    data = Dataset([sample("a.png", [[10, 10], [50, 40]]), sample("b.png", [[160, 20], [200, 60]])], ["p", "q"])
    assert follow_crop_size(data, [1.0, 1.0], INPUT) == (128, 128)
    # the letterbox scale counts: the same boxes at twice the scale (80 px + 80 → 160)
    assert follow_crop_size(data, [2.0, 2.0], INPUT) == (160, 160)


def test_the_first_frame_and_a_lost_animal_look_at_the_whole_input():
    f = Follower(INPUT, CROP, margin=0.0)
    assert f.window(1) is None
    f.update(rows([[300, 200]], visible=[False]), whole=True)
    assert f.window(2) is None  # nothing visible: still lost


def test_the_window_is_centred_on_the_keypoints_and_aligned_to_the_coarsest_grid():
    f, w = followed([[300, 200], [340, 260], [320, 230]])
    assert (w.w, w.h) == CROP
    assert w.x0 % ALIGN_PX == 0 and w.y0 % ALIGN_PX == 0
    assert w.x0 + 40 < 300 and 340 < w.x0 + w.w - 40 and w.y0 + 40 < 200 and 260 < w.y0 + w.h - 40
    # at the input's border the window stays inside the input (and may end unaligned on its far edge)
    _, w = followed([[630, 470]])
    assert (w.x0, w.y0) == (INPUT[0] - CROP[0], INPUT[1] - CROP[1])
    _, w = followed([[5, 5]])
    assert (w.x0, w.y0) == (0, 0)


def test_every_refresh_frame_looks_at_the_whole_input():
    f, _ = followed([[320, 240]])
    assert f.window(REFRESH_FRAMES) is None and f.window(2 * REFRESH_FRAMES) is None
    assert f.window(REFRESH_FRAMES + 1) is not None
    assert f.warm_up_start(REFRESH_FRAMES + 10) == REFRESH_FRAMES and f.warm_up_start(REFRESH_FRAMES) == REFRESH_FRAMES


def test_keypoints_near_an_inner_border_send_the_frame_to_the_whole_input():
    f, w = followed([[320, 240], [330, 250]])
    inner = w.x0 + w.w - EDGE_PX // 2  # inside the window, within EDGE_PX of its right border (not the input's)
    assert f.accept(rows([[320, 240], [330, 250]]), w)
    assert not f.accept(rows([[320, 240], [inner, 250]]), w)
    assert not f.accept(rows([[320, 240], [330, 250]], visible=[False, False]), w)  # lost in the window
    # a border that is the input's own is no reason: nothing lies beyond it
    f, w = followed([[20, 20], [40, 30]])
    assert (w.x0, w.y0) == (0, 0)
    assert f.accept(rows([[3, 3], [40, 30]]), w)


def test_a_keypoint_that_vanishes_near_a_border_is_looked_for_in_the_whole_input_but_not_one_inside():
    f, w = followed([[320, 240], [330, 250]])
    near = w.x0 + w.w - EDGE_PX - 10  # was visible just inside the band a keypoint may cross in a frame
    f.update(rows([[320, 240], [near, 250]]), whole=False)
    assert not f.accept(rows([[320, 240], [near, 250]], visible=[True, False]), w)
    f, w = followed([[320, 240], [330, 250]])  # seen well inside the window, then hidden: covered, not gone
    assert f.accept(rows([[320, 240], [330, 250]], visible=[True, False]), w)


def test_several_animals_rows_and_their_centres_move_with_the_window():
    w = Window(64, 32, 224, 224)
    multi = np.zeros((2, 3, 6), np.float32)
    multi[..., :2] = [10, 20]
    multi[..., 4:] = [30, 40]
    moved = w.to_input(multi)
    assert np.all(moved[..., :2] == [74, 52]) and np.all(moved[..., 4:] == [94, 72])
    image = np.arange(480 * 640 * 3, dtype=np.uint32).reshape(480, 640, 3)
    assert np.array_equal(w.cut(image), image[32:256, 64:288])
    f = Follower(INPUT, CROP, margin=np.array([0.0, 0.0]))
    multi[..., 2] = [[0.5, -1, -1], [0.5, -1, -1]]  # one visible peak per keypoint
    multi[0, 0, :2], multi[1, 0, :2] = [300, 200], [340, 260]
    f.update(multi, whole=True)
    w = f.window(1)
    assert w is not None and w.x0 < 300 and 340 < w.x0 + w.w
    assert f.accept(multi, w)


def test_a_change_of_keypoints_looks_at_the_whole_input_next():
    f, _ = followed([[320, 240]])
    f.change_keypoints(np.zeros(2))
    assert f.window(5) is None


@pytest.mark.parametrize("index", [0, 1])
def test_window_cut_is_a_view(index):
    image = np.zeros((480, 640, 3), np.uint8)
    w = Window(32 * index, 0, 224, 224)
    w.cut(image)[:] = 7
    assert image[:224, 32 * index : 32 * index + 224].min() == 7 and image.sum() == 7 * 224 * 224 * 3
