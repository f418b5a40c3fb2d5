"""tools/model_report.py on small hand-made cases: the mouse mask, the distance test, the false-visible counting and
the JSONL records that `rtkp export` writes. No model, no video: fast."""

import importlib.util

import cv2
import numpy as np
import pytest
from conftest import REPO

from rtkp.export.formats import jsonl_line
from rtkp.messages import KeypointFrame

_spec = importlib.util.spec_from_file_location("model_report", REPO / "tools" / "model_report.py")
mr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mr)


def _arena(h=240, w=320, seed=0):
    """A bright, unevenly lit floor (H, W, 3) uint8, and the same floor with sensor noise as the 'median'."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    floor = 200 + 35 * np.exp(-((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (2 * 90.0**2))
    background = np.repeat(floor[..., None], 3, -1).astype(np.uint8)
    frame = np.clip(background + rng.normal(0, 3, background.shape), 0, 255).astype(np.uint8)
    return background, frame


def _scene():
    """A frame with a dark mouse (body, ears, grey tail), its large grey reflection 6 px away and a far speck."""
    background, frame = _arena()
    mouse = np.zeros(frame.shape[:2], np.uint8)
    cv2.ellipse(mouse, (150, 140), (40, 18), 0, 0, 360, 1, -1)  # body
    cv2.circle(mouse, (112, 124), 6, 1, -1)  # ears at the head end
    cv2.circle(mouse, (112, 156), 6, 1, -1)
    tail = np.zeros_like(mouse)
    cv2.line(tail, (189, 140), (260, 170), 1, 3)
    frame[mouse > 0] = 45
    frame[(tail > 0) & (mouse == 0)] = 130  # the tail is grey, far lighter than the body
    reflection = np.zeros_like(mouse)
    cv2.ellipse(reflection, (150, 99), (38, 12), 0, 0, 360, 1, -1)  # 6 px above the ears
    frame[reflection > 0] = 120
    frame[20:24, 20:24] = 90  # a dropping far from the mouse
    return background, frame, (mouse | tail) > 0, reflection > 0


def test_mouse_mask_is_the_mouse_and_nothing_else():
    background, frame, mouse, reflection = _scene()
    mask = mr.mouse_mask(frame, background)
    assert (mask & mouse).sum() >= 0.95 * mouse.sum()  # body, ears and tail
    assert not (mask & reflection).any()
    assert not mask[15:30, 15:30].any()
    assert (mask & ~mouse).sum() <= 0.02 * mouse.sum()  # the opening's rounding aside, nothing else
    # a piece of tail cut off by a gap stays with the mouse
    frame[140:160, 210:214] = background[140:160, 210:214]
    mask = mr.mouse_mask(frame, background)
    assert not mask[140:160, 210:214].any() and mask[166, 250]


def test_mouse_mask_of_the_background_itself_is_empty():
    background, frame = _arena()
    assert not mr.mouse_mask(frame, background).any()


def test_far_from_mask_measures_to_the_nearest_mouse_pixel():
    mask = np.zeros((100, 120), bool)
    mask[40:60, 50:70] = True
    xy = np.array([[55, 50], [69 + 14, 50], [69 + 17, 50], [50, 40 - 16], [-20, 50], [75, 120]], np.float32)
    assert mr.far_from_mask(mask, xy, 15).tolist() == [False, False, True, True, True, True]
    assert mr.far_from_mask(np.zeros((100, 120), bool), xy[:2], 15).tolist() == [True, True]


def _record(i, xy, visible):
    kf = KeypointFrame(
        i, i / 30, 0, (320, 240), np.array(xy, np.float32), np.full(2, 0.5, np.float32), np.array(visible, bool),
        np.zeros(2, np.uint8),
    )  # fmt: skip
    return jsonl_line(kf, ["snout", "tailbase"])


def test_false_visible_counting_on_exported_records(tmp_path):
    path = tmp_path / "clip.jsonl"
    lines = [
        _record(0, [[10, 10], [101, 49]], [True, True]),
        _record(1, [[12, 9], [200, 200]], [True, False]),
        _record(2, [[300, 230], [99, 51]], [True, True]),
        _record(3, [[0, 0], [0, 0]], [False, False]),
    ]
    path.write_text("".join(lines))
    names, index, xy, visible = mr.read_records(path)
    assert names == ["snout", "tailbase"] and index.tolist() == [0, 1, 2, 3]
    assert xy.shape == (4, 2, 2) and visible.sum() == 5
    far = np.array([[True, False], [True, True], [False, False], [True, True]])  # hidden ones never count
    fig = mr.false_visible_figures(names, xy, visible, far)
    assert fig["visible"] == pytest.approx(5 / 8)
    assert fig["false_visible"] == pytest.approx(2 / 5) and fig["false_visible_count"] == 2
    assert fig["top_false_locations"] == [{"xy": [0, 0], "count": 1}, {"xy": [20, 0], "count": 1}]
    snout = fig["per_keypoint"]["snout"]
    assert (snout["visible"], snout["false_visible"]) == (0.75, pytest.approx(2 / 3))
    assert fig["per_keypoint"]["tailbase"]["false_visible"] == 0.0
    assert fig["per_keypoint"]["tailbase"]["top_false_locations"] == []


def test_occlusion_levels_drop_in_points():
    def level(pck, acc):
        return {"coverage": [0, 0], "images": 4, "pck": {"0.1": pck}, "visibility_accuracy_covered": acc,
                "visible_rate_uncovered": 0.9, "covered": 3, "uncovered": 5}  # fmt: skip

    levels = {"L0": level(0.9, None), "L1": level(0.85, 0.5), "L2": level(0.6, 0.7), "L3": level(0.3, 0.8)}
    out = mr.occlusion_levels(levels)
    assert [round(out[lv]["drop_points"], 6) for lv in mr.LEVEL_NAMES] == [0, 5, 30, 60]
    assert out["L2"]["covered_hidden"] == 0.7 and out["L0"]["covered_hidden"] is None


def test_noisy_backgrounds_are_seeded_and_have_the_asked_noise():
    background = np.full((60, 80, 3), 128, np.uint8)
    a, b = mr.noisy_backgrounds(background, 4.0, 3), mr.noisy_backgrounds(background, 4.0, 3)
    assert all((x == y).all() for x, y in zip(a, b)) and not (a[0] == a[1]).all()
    assert np.std(a[0].astype(float) - 128) == pytest.approx(4.0, rel=0.1)
