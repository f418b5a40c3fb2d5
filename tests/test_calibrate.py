"""The visibility margin rule: balanced accuracy, unless the labels say a keypoint is mostly absent."""

import numpy as np

from rtkp.train.calibrate import best_threshold, hidden_weights


def test_a_mostly_absent_keypoint_weighs_its_hidden_side_by_how_often_it_is_absent():
    labels = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]], bool)  # (frames, keypoints)
    np.testing.assert_allclose(hidden_weights(labels), [0.5, 0.5, 0.75])


def test_the_weighted_threshold_lets_fewer_hidden_keypoints_through():
    # six visible keypoints (evidence 0.3..0.9) and twenty hidden ones, two of which score above the weakest visible
    visible = np.array([0.3, 0.5, 0.6, 0.7, 0.8, 0.9])
    hidden = np.concatenate([np.linspace(0.0, 0.2, 18), [0.35, 0.4]])
    ev = np.concatenate([visible, hidden])
    lab = np.concatenate([np.ones(len(visible), bool), np.zeros(len(hidden), bool)])
    balanced, weighted = best_threshold(ev, lab), best_threshold(ev, lab, hidden_weight=0.9)
    assert 0.2 < balanced < 0.3  # keeps every visible one, lets two hidden ones through
    assert 0.4 < weighted < 0.5  # no hidden one through, one visible one lost
    assert ((hidden > weighted).sum(), (visible <= weighted).sum()) == (0, 1)
    assert best_threshold(ev, lab, hidden_weight=0.5) == balanced
