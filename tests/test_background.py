"""The empty scene from training frames: used when the object moves, refused when it stays put."""

import numpy as np

from rtkp.data.background import MIN_FRAMES, empty_background


def _frames(n, moving: bool):
    rng = np.random.default_rng(0)
    scene = rng.integers(150, 200, (60, 80, 3)).astype(np.uint8)
    images, keypoints, visible = [], [], []
    for i in range(n):
        image = scene.copy()
        x, y = (10 + 5 * i % 60, 30) if moving else (40, 30)
        image[y - 4 : y + 5, x - 4 : x + 5] = 10  # a dark object with one keypoint at its centre
        images.append(image)
        keypoints.append(np.array([[x, y]], np.float32))
        visible.append(np.array([True]))
    return scene, images, keypoints, visible


def test_a_moving_object_leaves_the_scene_as_the_median():
    scene, images, keypoints, visible = _frames(12, moving=True)
    median, why = empty_background(images, keypoints, visible)
    assert why is None and np.abs(median.astype(int) - scene).max() <= 1


def test_an_object_that_stays_put_is_not_mistaken_for_an_empty_scene():
    _, images, keypoints, visible = _frames(12, moving=False)
    median, why = empty_background(images, keypoints, visible)
    assert median is None and "stays in view" in why


def test_too_few_frames_give_no_empty_scene():
    _, images, keypoints, visible = _frames(MIN_FRAMES - 1, moving=True)
    assert empty_background(images, keypoints, visible)[0] is None
