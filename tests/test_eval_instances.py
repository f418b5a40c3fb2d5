"""evaluate_instances on hand-made predictions against hand-made labels: two flies walking across a frame."""

from pathlib import Path

import numpy as np
import pytest

from rtkp.data.sample import Sample
from rtkp.eval.instances import PredictedInstance, as_predicted, evaluate_instances
from rtkp.eval.matching import match_frame
from rtkp.messages import Instance

pytest.importorskip("motmetrics")
pytest.importorskip("pycocotools")

FRAMES = 20
SHAPE = np.array([[0, 0], [20, 0], [40, 0], [20, 10]], np.float32)  # a fly 40 px long: gate 20 px, PCK@0.1 4 px


def fly(frame: int, which: int) -> np.ndarray:
    """(4, 2) the labelled keypoints of fly `which` (0, 1) in `frame`: far apart, each walking its own way."""
    start = np.array([[10, 10], [10, 200]], np.float32)[which]
    return SHAPE + start + np.float32(3 * frame)


def labels(frames: int = FRAMES, tracks=("female", "male")) -> list[list[Sample]]:
    out = []
    for f in range(frames):
        out.append(
            [
                Sample(Path("clip.mp4"), fly(f, w), np.ones(4, bool), f"clip.mp4#{f:06d}", frame=f, track=t)
                for w, t in enumerate(tracks)
            ]
        )
    return out


def perfect(frames: int = FRAMES) -> list[list[PredictedInstance]]:
    return [[PredictedInstance(fly(f, w), np.ones(4, bool), w, 0.9) for w in (0, 1)] for f in range(frames)]


def test_perfect_predictions_score_perfectly():
    report = evaluate_instances(perfect(), labels(), ["head", "thorax", "abdomen", "wing"])
    assert report["frames"] == FRAMES and report["labelled_instances"] == report["found"] == 2 * FRAMES
    assert report["missed"] == report["extra"] == 0 and report["all_found_share"] == 1.0
    assert report["pck"] == {"0.05": 1.0, "0.1": 1.0} and report["rmse_px"] == 0.0
    assert set(report["per_track"]) == {"female", "male"}
    assert all(t["pck"]["0.1"] == 1.0 and t["found"] == FRAMES for t in report["per_track"].values())
    assert report["per_keypoint"]["wing"]["pck"]["0.1"] == 1.0
    assert report["oks"]["map"] == pytest.approx(1.0)
    tracking = report["tracking"]
    assert tracking["idf1"] == 1.0 and tracking["id_switches"] == 0 and tracking["mota"] == 1.0


def test_keypoint_errors_count_against_the_fly_size():
    predicted = perfect()
    # frame 0, fly 0: one keypoint 3 px off (right at 0.1 x 40 px, wrong at 0.05), one 5 px off (wrong at both)
    moved = fly(0, 0).copy()
    moved[1, 0] += 3
    moved[2, 1] += 5
    predicted[0][0] = PredictedInstance(moved, np.ones(4, bool), 0, 0.9)
    report = evaluate_instances(predicted, labels())
    n = 8 * FRAMES
    assert report["pck"]["0.1"] == pytest.approx((n - 1) / n) and report["pck"]["0.05"] == pytest.approx((n - 2) / n)
    assert report["per_track"]["female"]["pck"]["0.1"] == pytest.approx((4 * FRAMES - 1) / (4 * FRAMES))
    assert report["per_track"]["male"]["pck"]["0.1"] == 1.0
    assert report["rmse_px"] == pytest.approx(np.sqrt((9 + 25) / n))
    assert report["oks"]["map"] < 1.0


def test_swapped_tracks_mid_way_are_switches_and_lower_idf1():
    predicted = perfect()
    for f in range(FRAMES // 2, FRAMES):  # the two flies exchange their ids half-way
        predicted[f] = [PredictedInstance(fly(f, w), np.ones(4, bool), 1 - w, 0.9) for w in (0, 1)]
    tracking = evaluate_instances(predicted, labels())["tracking"]
    # MOT counts one switch per labelled fly whose id changes: a swap of two flies is two, in one frame
    assert tracking["id_switches"] == 2 and tracking["switch_frames"] == 1
    assert tracking["idf1"] == pytest.approx(0.5) and tracking["mota"] < 1.0
    # one fly given a new id half-way (the tracker lost and restarted it): one switch
    predicted = perfect()
    for f in range(FRAMES // 2, FRAMES):
        predicted[f][1] = PredictedInstance(fly(f, 1), np.ones(4, bool), 7, 0.9)
    report = evaluate_instances(predicted, labels())
    assert report["tracking"]["id_switches"] == 1 and report["tracking"]["switch_frames"] == 1
    assert report["pck"]["0.1"] == 1.0  # identity does not enter PCK


def test_a_missing_fly_is_missed_and_all_its_keypoints_wrong():
    predicted = perfect()
    predicted[3] = predicted[3][:1]  # the male is not found in frame 3
    report = evaluate_instances(predicted, labels())
    assert report["missed"] == 1 and report["extra"] == 0 and report["found"] == 2 * FRAMES - 1
    assert report["frames_not_all_found"] == [3] and report["all_found_share"] == pytest.approx(1 - 1 / FRAMES)
    assert report["per_track"]["male"]["pck"]["0.1"] == pytest.approx(1 - 1 / FRAMES)
    assert report["per_track"]["male"]["found"] == FRAMES - 1 and report["per_track"]["female"]["pck"]["0.1"] == 1.0
    assert report["rmse_px"] == 0.0  # RMSE is over found flies only
    assert report["tracking"]["idf1"] < 1.0 and report["oks"]["map"] < 1.0


def test_an_extra_instance_is_counted_and_lowers_idf1_not_pck():
    predicted = perfect()
    ghost = PredictedInstance(SHAPE + np.float32([300, 300]), np.ones(4, bool), 5, 0.2)
    for f in range(5):
        predicted[f].append(ghost)
    report = evaluate_instances(predicted, labels())
    assert report["extra"] == 5 and report["missed"] == 0 and report["predicted_instances"] == 2 * FRAMES + 5
    assert report["pck"]["0.1"] == 1.0 and report["all_found_share"] == 1.0
    assert report["tracking"]["idf1"] < 1.0 and report["tracking"]["idp"] < 1.0 and report["tracking"]["idr"] == 1.0


def test_matching_is_one_to_one_and_gated_at_half_the_fly():
    truth = labels(1)[0]
    near = PredictedInstance(fly(0, 0) + 2, np.ones(4, bool), 0, 0.9)
    nearer = PredictedInstance(fly(0, 0) + 1, np.ones(4, bool), 1, 0.9)
    # two predictions on the female: the nearer one takes her, the other is extra (one prediction per fly)
    assert [(p, g) for p, g, _ in match_frame([near, nearer], truth)] == [(1, 0)]
    # the gate: 0.5 x 40 px = 20 px of mean distance
    inside = PredictedInstance(fly(0, 0) + np.float32([19.5, 0]), np.ones(4, bool), 0, 0.9)
    outside = PredictedInstance(fly(0, 0) + np.float32([20.5, 0]), np.ones(4, bool), 0, 0.9)
    assert len(match_frame([inside], truth)) == 1 and match_frame([outside], truth) == []
    # only keypoints labelled in both count: a far-off keypoint the model does not report does not matter
    xy = fly(0, 1).copy()
    xy[3] = [900, 900]
    hidden = np.array([True, True, True, False])
    assert match_frame([PredictedInstance(xy, hidden, 0, 0.9)], truth) == [(0, 1, 0.0)]
    assert match_frame([PredictedInstance(xy, np.zeros(4, bool), 0, 0.9)], truth) == []


def test_keypoint_frame_instances_are_taken_as_they_are():
    def instance(f, w):
        return Instance(w, 0.9, fly(f, w), np.full(4, 0.9, np.float32), np.ones(4, bool), np.zeros(4, np.uint8))

    predicted = [[instance(f, w) for w in (0, 1)] for f in range(FRAMES)]
    report = evaluate_instances(predicted, labels())
    assert report["pck"]["0.1"] == 1.0 and report["tracking"]["idf1"] == 1.0
    # a model with its keypoints in another order: as_predicted picks the labels' columns
    backwards = [[as_predicted(instance(f, w), [3, 2, 1, 0]) for w in (0, 1)] for f in range(FRAMES)]
    assert evaluate_instances(backwards, labels())["pck"]["0.1"] < 0.5
    again = [[as_predicted(p, [3, 2, 1, 0]) for p in f] for f in backwards]
    assert evaluate_instances(again, labels())["pck"]["0.1"] == 1.0 and again[0][1].track == 1


def test_untracked_labels_or_predictions_give_no_tracking_figures():
    report = evaluate_instances(perfect(), labels(tracks=(None, None)))
    assert report["tracking"] is None and set(report["per_track"]) == {"(untracked)"}
    assert report["per_track"]["(untracked)"]["instances"] == 2 * FRAMES and report["pck"]["0.1"] == 1.0
    untracked = [[PredictedInstance(p.keypoints, p.visible, None, p.score) for p in f] for f in perfect()]
    assert evaluate_instances(untracked, labels())["tracking"] is None
    with pytest.raises(ValueError, match="predicted has 3 frames, labelled 20"):
        evaluate_instances(perfect(3), labels())


def test_no_predictions_at_all():
    report = evaluate_instances([[] for _ in range(FRAMES)], labels())
    assert report["found"] == 0 and report["missed"] == 2 * FRAMES and report["all_found_share"] == 0.0
    assert report["pck"]["0.1"] == 0.0 and np.isnan(report["rmse_px"]) and report["oks"]["map"] == 0.0
    assert report["tracking"]["idf1"] == 0.0
