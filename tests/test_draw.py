"""The overlay: one animal drawn as always (a colour per keypoint), several animals in one colour per track with a
"#<track>" label, checked on the drawn pixels."""

import numpy as np

from rtkp.messages import Instance, KeypointFrame, missing_keypoints
from rtkp.sinks.draw import SKELETON_COLOUR, TRACK_PALETTE, draw_keypoints, track_colour

NAMES = ["nose", "left_ear", "right_ear"]
SKELETON = [(0, 1), (0, 2)]
KEYPOINT_COLOURS = TRACK_PALETTE  # one animal: keypoint k in palette colour k, as before tracks existed


def instance(track: int, points, visible=(True, True, True), state=(0, 0, 0)) -> Instance:
    return Instance(
        track,
        0.9,
        np.asarray(points, np.float32),
        np.full(3, 0.9, np.float32),
        np.asarray(visible, bool),
        np.asarray(state, np.uint8),
    )


def frame_of(*instances: Instance) -> KeypointFrame:
    """A multi-instance frame as the contract builds it: frame-level arrays are the first instance's."""
    first = instances[0] if instances else None
    arrays = (first.keypoints, first.scores, first.visible, first.state) if first is not None else missing_keypoints(3)
    return KeypointFrame(0, None, 0, (320, 240), *arrays, instances=tuple(instances))


def colour_at(image: np.ndarray, x: float, y: float) -> tuple[int, ...]:
    return tuple(int(v) for v in image[int(round(y)), int(round(x))])


def near(image: np.ndarray, x: float, y: float, colour, tolerance: int = 40) -> bool:
    """Whether a pixel within one of (x, y) has `colour` (each channel within `tolerance`: lines are anti-aliased)."""
    patch = image[int(round(y)) - 1 : int(round(y)) + 2, int(round(x)) - 1 : int(round(x)) + 2].astype(int)
    return bool((np.abs(patch - np.asarray(colour)) <= tolerance).all(-1).any())


def pixels_of(image: np.ndarray, colour, box, tolerance: int = 40) -> int:
    """How many pixels inside box (x0, y0, x1, y1) have `colour` (each channel within `tolerance`)."""
    x0, y0, x1, y1 = box
    return int((np.abs(image[y0:y1, x0:x1].astype(int) - np.asarray(colour)) <= tolerance).all(-1).sum())


BLACK = np.zeros((240, 320, 3), np.uint8)


def test_one_animal_is_drawn_with_a_colour_per_keypoint_and_a_white_skeleton():
    pts = np.array([[100, 120], [140, 120], [100, 160]], np.float32)  # skeleton lines along the axes
    kf = KeypointFrame(0, None, 0, (320, 240), pts, np.ones(3, np.float32), np.ones(3, bool), np.zeros(3, np.uint8))
    out = draw_keypoints(BLACK, kf, NAMES, SKELETON)
    for k, (x, y) in enumerate(pts):
        assert colour_at(out, x, y) == KEYPOINT_COLOURS[k]
    assert near(out, 120, 120, SKELETON_COLOUR)  # the middle of the nose-left_ear line
    assert pixels_of(out, KEYPOINT_COLOURS[0], (80, 80, 120, 105)) == 0  # no "#0" label above it
    assert (BLACK == 0).all()  # the input is not drawn on


def test_auto_mode_draws_a_single_instance_frame_exactly_as_forced_single_mode():
    pts = np.array([[60, 60], [200, 90], [250, 200]], np.float32)
    kf = KeypointFrame(0, None, 0, (320, 240), pts, np.ones(3, np.float32), np.ones(3, bool), np.zeros(3, np.uint8))
    auto = draw_keypoints(BLACK, kf, NAMES, SKELETON, "hud")
    assert np.array_equal(auto, draw_keypoints(BLACK, kf, NAMES, SKELETON, "hud", by_track=False))
    forced = draw_keypoints(BLACK, kf, NAMES, SKELETON, by_track=True)  # a multi-instance model's lone track 0
    assert all(colour_at(forced, x, y) == track_colour(0) for x, y in pts)


def test_several_animals_each_in_its_track_colour_with_a_label_above_it():
    a = instance(2, [[60, 150], [90, 150], [60, 180]])
    b = instance(5, [[220, 150], [250, 150], [220, 180]])
    out = draw_keypoints(BLACK, frame_of(a, b), NAMES, SKELETON)
    assert track_colour(2) != track_colour(5)
    for inst in (a, b):
        colour = track_colour(inst.track)
        for x, y in inst.keypoints:
            assert colour_at(out, x, y) == colour
        # the skeleton in the track's colour too: the middle of the nose-left_ear line
        mid = inst.keypoints[[0, 1]].mean(0)
        assert near(out, *mid, colour) and not near(out, *mid, SKELETON_COLOUR)
        # "#<track>" above the animal: pixels of its colour in the band above its keypoints, none of the other's
        x0 = int(inst.keypoints[:, 0].min())
        band = (x0, 120, x0 + 40, 147)
        other = track_colour(b.track if inst is a else a.track)
        assert pixels_of(out, colour, band) > 5 and pixels_of(out, other, band) == 0


def test_the_label_follows_the_track_id_not_the_order():
    """Track colours are fixed per id: track 1 is drawn in its colour whether or not track 0 is in the frame."""
    one = instance(1, [[160, 120], [190, 100], [190, 140]])
    alone = draw_keypoints(BLACK, frame_of(one), NAMES, SKELETON)
    with_other = draw_keypoints(BLACK, frame_of(instance(0, [[40, 40], [60, 30], [60, 50]]), one), NAMES, SKELETON)
    assert colour_at(alone, 160, 120) == colour_at(with_other, 160, 120) == track_colour(1)
    assert colour_at(with_other, 40, 40) == track_colour(0)


def test_hidden_keypoints_and_animals_are_not_drawn_and_predicted_ones_are_hollow():
    from rtkp.smoothing import PREDICTED

    a = instance(0, [[60, 120], [90, 100], [90, 140]], visible=(True, False, True), state=(0, 3, PREDICTED))
    gone = instance(1, [[220, 120], [250, 100], [250, 140]], visible=(False, False, False), state=(3, 3, 3))
    # at 640 px a ring is 2 px wide around a 4 px radius; no skeleton line ends in the predicted keypoint
    out = draw_keypoints(np.zeros((480, 640, 3), np.uint8), frame_of(a, gone), NAMES, [(0, 1)])
    assert colour_at(out, 60, 120) == track_colour(0)
    assert colour_at(out, 90, 100) == (0, 0, 0)  # hidden: not drawn, nor the skeleton to it
    assert colour_at(out, 90, 140) == (0, 0, 0)  # predicted: a ring, the centre left as it was
    assert pixels_of(out, track_colour(0), (84, 134, 97, 147)) > 5  # ... and the ring around it
    assert not out[:, 180:].any()  # the animal with nothing visible leaves no mark, no label


def test_a_frame_without_animals_draws_only_the_hud():
    empty = frame_of()
    assert empty.instances == ()
    out = draw_keypoints(BLACK, empty, NAMES, SKELETON, hud="0 animals")
    assert out[40:].max() == 0 and out[:40].max() > 0


def test_a_label_at_the_top_edge_stays_in_the_picture():
    a = instance(3, [[5, 2], [20, 4], [20, 8]])
    b = instance(4, [[200, 200], [220, 190], [220, 210]])
    out = draw_keypoints(BLACK, frame_of(a, b), NAMES, SKELETON)
    assert pixels_of(out, track_colour(3), (0, 0, 60, 30)) > 10
