import numpy as np
import pytest

from rtkp.config import AugmentConfig
from rtkp.data.augment import augment_sample, resolve_flip_pairs
from rtkp.data.occlude import LEVELS, covered, object_box, occluder_mask


def test_flip_pairs_auto_and_explicit():
    names = ["snout", "leftear", "rightear", "tailbase"]
    assert resolve_flip_pairs(names, "auto") == [(1, 2)]
    assert resolve_flip_pairs(["l_hand", "r_hand", "head"], "auto") == [(0, 1)]
    assert resolve_flip_pairs(names, [["snout", "tailbase"]]) == [(0, 3)]


def _dots_image(kps, size=(200, 150)):
    image = np.full((size[1], size[0], 3), 20, np.uint8)
    for k, (x, y) in enumerate(kps):
        image[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2, k] = 255
    return image


@pytest.mark.parametrize("seed", range(6))
def test_crop_moves_keypoints_with_the_pixels(seed):
    kps = np.array([[80, 60], [120, 70], [100, 100]], np.float32)
    image = _dots_image(kps)
    cfg = AugmentConfig(
        crop_size=(96, 96),
        brightness=0,
        contrast=0,
        blur=0,
        noise=0,
        occluder=0,
        background_crop=0,
        translation=0.1,
        flip=0,
    )
    crop, out, vis = augment_sample(np.random.default_rng(seed), image, kps, np.ones(3, bool), cfg, [])
    assert vis.any()
    for k in np.flatnonzero(vis):
        # keypoint k was painted in colour channel k: its brightest spot must sit where the label went
        contrast = crop[..., k].astype(float) - crop.mean(-1)
        y, x = np.unravel_index(np.argmax(contrast), crop.shape[:2])
        assert np.hypot(x - out[k, 0], y - out[k, 1]) < 1.5


def test_flip_swaps_left_and_right():
    kps = np.array([[80, 60], [120, 60]], np.float32)
    image = _dots_image(kps)
    cfg = AugmentConfig(
        crop_size=(96, 96),
        scale=(1, 1),
        rotation=0,
        translation=0,
        flip=1.0,
        brightness=0,
        contrast=0,
        blur=0,
        noise=0,
        occluder=0,
        background_crop=0,
    )
    crop, out, vis = augment_sample(np.random.default_rng(0), image, kps, np.ones(2, bool), cfg, [(0, 1)])
    assert vis.all()
    # after a mirror the keypoint called "left" (index 0) is the one painted in channel 1, and it stays on the left
    assert out[0, 0] < out[1, 0]
    y, x = np.unravel_index(np.argmax(crop[..., 1].astype(int) - crop[..., 0]), crop.shape[:2])
    assert np.hypot(x - out[0, 0], y - out[0, 1]) < 2


@pytest.mark.parametrize("level", ["L1", "L2", "L3"])
def test_occluder_coverage_falls_inside_each_level(level):
    lo, hi = LEVELS[level]
    kps = np.array([[100, 100], [220, 130], [150, 180]], np.float32)
    box = object_box(kps, np.ones(3, bool))
    x0, y0, x1, y1 = box
    ix0, iy0 = int(np.floor(x0 + 0.5)), int(np.floor(y0 + 0.5))
    ix1, iy1 = int(np.floor(x1 + 0.5)) + 1, int(np.floor(y1 + 0.5)) + 1
    for seed in range(20):
        mask = occluder_mask(np.random.default_rng(seed), (300, 320), box, (lo, hi))
        frac = mask[iy0:iy1, ix0:ix1].mean()
        assert lo <= frac <= hi, (seed, frac)


def test_covered_reads_the_mask():
    mask = np.zeros((10, 10), bool)
    mask[2:4, 5:7] = True
    assert covered(mask, np.array([[5.2, 2.7], [1, 1], [50, 50]])).tolist() == [True, False, False]
