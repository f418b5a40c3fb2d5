"""Several animals per frame: grouping peaks into animals, track ids across frames, --max-instances checks."""

from __future__ import annotations

import numpy as np
import pytest

from rtkp.errors import ConfigError
from rtkp.instances.grouping import group_peaks
from rtkp.instances.identity import IdentityTracker
from rtkp.instances.stage import check_max_instances
from rtkp.manifest import Manifest

SIZE = 60.0  # an animal's size in px
OFFSETS = np.array([[-20.0, 0.0], [0.0, 0.0], [20.0, 5.0]])  # 3 keypoints around an animal's centre


def peaks_for(centres, k=3, p=4, rng=None, drop=()):
    """(K, P, 6) graph rows for animals at `centres`: each keypoint's peak on each animal with a vote near its centre
    (score 0.9, clutter 0.2), then low-scoring noise peaks; `drop`: (animal, keypoint) pairs left out."""
    rng = rng or np.random.default_rng(0)
    rows = np.zeros((k, p, 6), np.float32)
    rows[..., 2], rows[..., 3] = 0.1, 0.3  # noise: evidence −0.2
    rows[..., :2] = rng.uniform(0, 300, (k, p, 2))
    rows[..., 4:6] = rng.uniform(0, 300, (k, p, 2))
    for j in range(k):
        slot = 0
        for a, c in enumerate(centres):
            if (a, j) in drop:
                continue
            xy = np.asarray(c) + OFFSETS[j]
            rows[j, slot] = [*xy, 0.9 - 0.01 * a, 0.2, *(np.asarray(c) + rng.normal(0, 2, 2))]
            slot += 1
    return rows


def test_two_animals_are_grouped_by_their_centre_votes():
    animals = group_peaks(peaks_for([(60, 60), (200, 90)]), np.zeros(3), SIZE, 4)
    assert len(animals) == 2
    found = sorted(animals, key=lambda a: a.centre[0])
    for animal, centre in zip(found, [(60, 60), (200, 90)]):
        assert animal.assigned.all()
        np.testing.assert_allclose(animal.rows[:, :2], np.asarray(centre) + OFFSETS, atol=1e-4)


def test_touching_animals_keep_their_own_keypoints():
    # centres 30 px apart (half an animal): keypoint 2 of the left animal lies 10 px from keypoint 0 of the right
    # one; only the votes tell them apart
    animals = sorted(group_peaks(peaks_for([(100, 100), (130, 100)]), np.zeros(3), SIZE, 2), key=lambda a: a.centre[0])
    assert len(animals) == 2
    np.testing.assert_allclose(animals[0].rows[:, :2], np.array([100, 100]) + OFFSETS, atol=1e-4)
    np.testing.assert_allclose(animals[1].rows[:, :2], np.array([130, 100]) + OFFSETS, atol=1e-4)


def test_max_instances_keeps_the_best_supported_animals():
    rows = peaks_for([(60, 60), (200, 90)], drop=[(1, 2)])  # the second animal shows 2 of 3 keypoints
    animals = group_peaks(rows, np.zeros(3), SIZE, 1)
    assert len(animals) == 1 and np.allclose(animals[0].centre, (60, 60), atol=3)


def test_a_hidden_keypoint_is_not_taken_from_another_animal():
    rows = peaks_for([(60, 60), (200, 90)], drop=[(0, 1)])  # keypoint 1 of animal 0 not found at all
    animals = sorted(group_peaks(rows, np.zeros(3), SIZE, 4), key=lambda a: a.centre[0])
    assert len(animals) == 2
    assert not animals[0].assigned[1] or animals[0].rows[1, 2] < 0.2  # never animal 1's keypoint 1
    assert np.linalg.norm(animals[0].rows[1, :2] - (200, 90)) > SIZE / 2
    assert animals[1].assigned.all()


def test_no_animal_without_enough_visible_votes():
    rows = peaks_for([(60, 60)])
    assert group_peaks(rows, np.full(3, 0.8), SIZE, 4) == []  # margin above every evidence: nothing visible


def test_track_ids_hold_through_a_crossing():
    tracker = IdentityTracker(2, SIZE)
    kp = lambda c: np.asarray(c, float) + OFFSETS
    vis = np.ones(3, bool)
    seen = []
    for i in range(30):  # two animals cross, moving 10 px per frame towards each other
        a, b = (40 + 10 * i, 100), (330 - 10 * i, 112)
        order = [a, b] if i % 2 else [b, a]  # the order the grouping reports them in changes
        ids = tracker.assign(i / 25, [kp(order[0]), kp(order[1])], [vis, vis])
        seen.append(dict(zip([tuple(order[0]), tuple(order[1])], ids))[a])
    assert set(seen) == {seen[0]}  # the animal moving right kept its id throughout


def test_an_animal_that_returns_gets_its_id_back():
    tracker = IdentityTracker(2, SIZE)
    kp = lambda c: np.asarray(c, float) + OFFSETS
    vis = np.ones(3, bool)
    first = tracker.assign(0.0, [kp((50, 50)), kp((250, 250))], [vis, vis])
    tracker.assign(0.04, [kp((50, 52))], [vis])  # the second leaves the view
    back = tracker.assign(2.0, [kp((52, 52)), kp((400, 30))], [vis, vis])  # and comes back elsewhere
    assert back == first


def test_a_larger_pool_gives_a_newcomer_a_new_id():
    tracker = IdentityTracker(3, SIZE)
    kp = lambda c: np.asarray(c, float) + OFFSETS
    vis = np.ones(3, bool)
    assert tracker.assign(0.0, [kp((50, 50)), kp((250, 250))], [vis, vis]) == [0, 1]
    assert tracker.assign(0.04, [kp((50, 50)), kp((250, 250)), kp((400, 30))], [vis, vis, vis]) == [0, 1, 2]


def _manifest(**kw) -> Manifest:
    return Manifest("coke", ("a", "b"), (64, 64), 8, 8, "mobilenet_v2", **kw)


def test_max_instances_checks():
    single, multi = _manifest(), _manifest(max_instances=4, default_instances=2, instance_size=50.0)
    assert check_max_instances(single, None) == 1 and check_max_instances(multi, None) == 2
    assert check_max_instances(multi, 3) == 3
    with pytest.raises(ConfigError, match="whole number >= 1"):
        check_max_instances(multi, 0)
    with pytest.raises(ConfigError, match="finds one animal per frame"):
        check_max_instances(single, 2)
    with pytest.raises(ConfigError, match="at most 4 animals"):
        check_max_instances(multi, 5)


def _rotated_animals(n=30, seed=0):
    """n labelled animals: a 5-keypoint body (head, tail, a left/right pair, a midline point), turned and moved."""
    rng = np.random.default_rng(seed)
    base = np.array([[0.0, -30], [0, 30], [-12, 0], [12, 0], [0, 0]])  # head, tail, left, right, middle
    shapes = []
    for _ in range(n):
        a = rng.uniform(0, 2 * np.pi)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        shapes.append((base + rng.normal(0, 1, base.shape)) @ rot.T + rng.uniform(100, 300, 2))
    return shapes, [np.ones(5, bool)] * n


def test_the_pose_prior_learns_which_side_each_of_a_pair_is_on():
    from rtkp.instances.pose import pose_prior

    shapes, visible = _rotated_animals()
    prior = pose_prior(shapes, visible, [(2, 3)])
    assert prior["midline"] == [0, 1, 4] and len(prior["lateral_pairs"]) == 1
    assert pose_prior(shapes[:5], visible[:5], [(2, 3)]) is None  # too few animals


def test_a_pair_never_takes_the_same_place_twice():
    from rtkp.instances.pose import BodyFrame, pose_prior

    shapes, visible = _rotated_animals()
    body = BodyFrame(pose_prior(shapes, visible, [(2, 3)]))
    animal = shapes[0]
    centre = (animal.min(0) + animal.max(0)) / 2
    peaks = np.zeros((5, 2, 6), np.float32)
    peaks[..., 2], peaks[..., 3] = -0.5, 0.3
    for j in range(5):
        peaks[j, 0] = [*animal[j], 0.9, 0.1, *centre]
    # the "left" prototype's best peak sits on the right keypoint, its true place is its second peak
    peaks[2, 0] = [*animal[3], 0.95, 0.1, *centre]
    peaks[2, 1] = [*animal[2], 0.6, 0.1, *centre]
    plain = group_peaks(peaks, np.zeros(5), SIZE, 1)[0]
    assert np.allclose(plain.rows[2, :2], animal[3])  # without the body frame both sides sit on the right
    fixed = group_peaks(peaks, np.zeros(5), SIZE, 1, body)[0]
    np.testing.assert_allclose(fixed.rows[2, :2], animal[2], atol=1e-4)
    np.testing.assert_allclose(fixed.rows[3, :2], animal[3], atol=1e-4)


def test_track_ids_survive_a_change_of_keypoints():
    from rtkp.geometry import Letterbox
    from rtkp.instances.stage import InstanceStage
    from rtkp.smoothing import SmoothingConfig

    manifest = Manifest(
        "coke",
        ("a", "b", "c"),
        (400, 300),
        8,
        8,
        "mobilenet_v2",
        max_instances=4,
        default_instances=2,
        instance_size=SIZE,
    )
    stage = InstanceStage(manifest, np.zeros(3), 2, SmoothingConfig(filter="none"))
    box = Letterbox.fit((400, 300), (400, 300))
    first = stage(peaks_for([(60, 60), (250, 150)]), box, 0.0, 0.0)
    by_place = {round(float(i.keypoints[1, 0])): i.track for i in first}
    stage.change_keypoints(np.zeros(3), [2, 1, 0])  # the same keypoints, another order
    later = stage(peaks_for([(250, 152), (62, 60)]), box, 0.04, 0.0)
    assert {round(float(i.keypoints[1, 0])): i.track for i in later} == {250: by_place[250], 62: by_place[60]}
