import json

import cv2
import numpy as np
import pytest
from conftest import write_dlc_project

from rtkp.cli import main
from rtkp.config import AugmentConfig
from rtkp.data.augment import augment_sample
from rtkp.data.occlude import (
    LEVELS,
    covered,
    load_photos,
    object_box,
    occluder_mask,
    paste_occluders,
    texture,
)
from rtkp.data.sides import resolve_flip_pairs
from rtkp.errors import ConfigError, DataError


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
    r = augment_sample(np.random.default_rng(seed), image, kps, np.ones(3, bool), cfg, [])
    crop, out, vis = r.crop, r.keypoints, r.visible
    assert vis.any()
    for k in np.flatnonzero(vis):
        # keypoint k was painted in colour channel k: its brightest spot must sit where the label went
        contrast = crop[..., k].astype(float) - crop.mean(-1)
        y, x = np.unravel_index(np.argmax(contrast), crop.shape[:2])
        assert np.hypot(x - out[k, 0], y - out[k, 1]) < 1.5


def test_the_occluders_cover_what_augment_occluder_cover_says():
    kps = np.array([[60, 50], [140, 50], [60, 100], [140, 100], [100, 75]], np.float32)
    image = np.full((150, 200, 3), 90, np.uint8)

    def hidden_share(cover) -> float:
        cfg = AugmentConfig(
            crop_size=(192, 160),
            translation=0,
            rotation=0,
            scale=(1, 1),
            flip=0,
            occluder=1.0,
            occluder_cover=cover,
            background_crop=0,
        )
        draws = [augment_sample(np.random.default_rng(i), image, kps, np.ones(5, bool), cfg, []) for i in range(30)]
        return 1 - np.mean([d.visible.mean() for d in draws])

    assert hidden_share((0.0, 0.0)) == 0.0  # no occluder at all
    light, heavy = hidden_share((0.05, 0.15)), hidden_share((0.85, 0.95))
    assert light < 0.3 and heavy > 0.7, (light, heavy)
    with pytest.raises(ConfigError, match="occluder_cover"):
        from rtkp.config import load_config

        load_config(None, ["augment.occluder_cover=[0.8, 0.2]"])


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
    r = augment_sample(np.random.default_rng(0), image, kps, np.ones(2, bool), cfg, [(0, 1)])
    crop, out, vis = r.crop, r.keypoints, r.visible
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


def _gradient_image(h=120, w=160):
    yy, xx = np.mgrid[:h, :w]
    return np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], -1).astype(np.uint8)


_KPS = np.array([[40, 30], [120, 50], [80, 100]], np.float32)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("level", ["L1", "L3"])
def test_synthetic_occluders_are_drawn_as_before(seed, level):
    image, box = _gradient_image(), object_box(_KPS, np.ones(3, bool))
    out, mask = paste_occluders(np.random.default_rng(seed), image, box, LEVELS[level])
    # the path before photos existed, written out: the mask's draws, then one texture from the same generator
    rng = np.random.default_rng(seed)
    old_mask = occluder_mask(rng, image.shape[:2], box, LEVELS[level])
    old = image.copy()
    old[old_mask] = texture(rng, *image.shape[:2])[old_mask]
    assert (mask == old_mask).all() and (out == old).all()


# (seed, level) -> (covered pixels, sum of all output values), measured with the code before `photos` was added
PINNED = {(0, "L1"): (4693, 8339872), (1, "L3"): (7951, 7333229), (3, "L1"): (1908, 7778351)}


@pytest.mark.parametrize("key", sorted(PINNED))
def test_synthetic_occluders_reproduce_recorded_seeds(key):
    seed, level = key
    out, mask = paste_occluders(
        np.random.default_rng(seed), _gradient_image(), object_box(_KPS, np.ones(3, bool)), LEVELS[level]
    )
    assert (int(mask.sum()), int(out.astype(np.int64).sum())) == PINNED[key]


def _write(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


PHOTO_COLOURS = [(200, 30, 90), (10, 220, 140)]


@pytest.fixture
def photo_dir(tmp_path):
    folder = tmp_path / "photos"
    # one photo far smaller than the image (tiled by padding), one larger; lossless PNG keeps the colours exact
    _write(folder / "b" / "small.png", np.full((7, 5, 3), PHOTO_COLOURS[1], np.uint8))
    _write(folder / "a.PNG", np.full((300, 400, 3), PHOTO_COLOURS[0], np.uint8))
    (folder / "notes.json").write_text("{}")
    return folder


def test_load_photos_reads_rgb_recursively_in_sorted_order(photo_dir):
    photos = load_photos(photo_dir)
    assert [p.shape for p in photos] == [(300, 400, 3), (7, 5, 3)]
    assert [tuple(int(v) for v in p[0, 0]) for p in photos] == PHOTO_COLOURS
    assert all(p.dtype == np.uint8 for p in photos)


@pytest.mark.parametrize("make", [lambda d: d.mkdir(), lambda d: None])
def test_load_photos_of_an_empty_or_missing_folder_is_a_data_error(tmp_path, make):
    folder = tmp_path / "empty"
    make(folder)
    (tmp_path / "elsewhere.jpg").write_bytes(b"")  # outside the folder: must not be found
    with pytest.raises(DataError) as err:
        load_photos(folder)
    assert str(folder) in str(err.value) and "\n" not in str(err.value)


def test_photo_fill_comes_from_the_photos(photo_dir):
    photos, image = load_photos(photo_dir), np.full((120, 160, 3), 7, np.uint8)
    box = object_box(_KPS, np.ones(3, bool))
    seen = set()
    for seed in range(12):
        out, mask = paste_occluders(np.random.default_rng(seed), image, box, LEVELS["L2"], photos)
        # the shapes are those of the synthetic draw with the same seed: only the fill changes
        _, synthetic_mask = paste_occluders(np.random.default_rng(seed), image, box, LEVELS["L2"])
        assert (mask == synthetic_mask).all() and mask.any()
        assert (out[~mask] == 7).all()
        colours = {tuple(int(v) for v in c) for c in np.unique(out[mask], axis=0)}
        assert len(colours) == 1 and colours <= set(PHOTO_COLOURS), colours  # one flat photo, nothing synthetic
        seen |= colours
    assert seen == set(PHOTO_COLOURS)  # both photos get picked


def test_photo_fill_is_a_rescaled_crop(tmp_path):
    # a photo whose red channel is its column and green its row: a crop rescaled by s has slopes of 1/s
    yy, xx = np.mgrid[:200, :250]
    _write(tmp_path / "p" / "ramp.png", np.stack([xx, yy, np.zeros_like(xx)], -1).clip(0, 255).astype(np.uint8))
    photos = load_photos(tmp_path / "p")
    image = np.zeros((64, 64, 3), np.uint8)
    scales = []
    for seed in range(20):
        out, mask = paste_occluders(np.random.default_rng(seed), image, np.array([0, 0, 63, 63]), (0.6, 0.8), photos)
        ys, xs = np.nonzero(mask)
        slope = np.polyfit(xs, out[ys, xs, 0].astype(float), 1)[0]
        assert np.polyfit(ys, out[ys, xs, 1].astype(float), 1)[0] == pytest.approx(slope, rel=0.1)
        scales.append(1 / slope)
    assert 0.45 < min(scales) < 0.8 and 1.4 < max(scales) < 2.1, scales


def test_eval_occluders_option_reaches_the_report(tiny_model, tmp_path, photo_dir):
    project = write_dlc_project(tmp_path / "proj", n=4)
    base = ["eval", "--model", str(tiny_model), "--data", str(project), "--quiet", "--occlusion"]
    assert main([*base, "--json", str(tmp_path / "syn.json")]) == 0
    assert main([*base, "--occluders", str(photo_dir), "--json", str(tmp_path / "photo.json")]) == 0
    syn, photo = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("syn", "photo"))
    assert (syn["occluders"], photo["occluders"]) == ("synthetic", f"photos:{photo_dir}")
    for level in ("L1", "L2", "L3"):
        # same seeds, so the same shapes cover the same keypoints; the different pixels move the predictions
        assert syn["occlusion"][level]["covered"] == photo["occlusion"][level]["covered"]
    assert any(syn["occlusion"][lv]["rmse_px"] != photo["occlusion"][lv]["rmse_px"] for lv in ("L1", "L2", "L3"))
    assert main(["eval", "--model", str(tiny_model), "--data", str(project), "--occluders", str(photo_dir)]) == (
        ConfigError.exit_code
    )
