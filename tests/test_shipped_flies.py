"""The shipped two-fly model (engines/sleap_flies_coke): it loads, keeps the .slp's node names, and finds both flies.

A regression guard on frames the model trained on (its held-out figures are docs/MODEL.md's validation run)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO, SHARED_DATA

from rtkp.manifest import read_manifest

MODEL = str(REPO / "engines" / "sleap_flies_coke")
CLIP = SHARED_DATA / "sleap_flies_clip" / "clip_train.slp"


def test_the_fly_model_is_a_multi_instance_model():
    manifest = read_manifest(MODEL)
    assert manifest.multi_instance and manifest.max_instances == 4 and manifest.default_instances == 2
    assert len(manifest.keypoint_names) == 13 and manifest.pose_template["lateral_pairs"]


def test_a_saved_set_of_other_keypoints_does_not_group_with_the_pose_template_of_the_trained_ones(tmp_path):
    """The pose template's rows are the trained keypoints': a folder saved with keypoints added or removed keeps it
    with its rows' names (taught keypoints' rings read its spread) and the grouping leaves it out, as it does a
    template of other rows saved without names, so grouping never mixes the two (it crashed)."""
    from rtkp.cli import main
    from rtkp.instances.stage import InstanceStage
    from rtkp.smoothing import SmoothingConfig

    out = tmp_path / "without_wingL"
    assert main(["keypoints", "remove", "wingL", "--model", MODEL, "--out", str(out)]) == 0
    saved = read_manifest(out)
    trained = read_manifest(MODEL)
    assert len(saved.keypoint_names) == 12
    assert saved.pose_template == dict(trained.pose_template, names=list(trained.keypoint_names))
    assert InstanceStage(saved, 0.0, 2, SmoothingConfig()).body is None
    older = saved.updated(pose_template=trained.pose_template)
    assert InstanceStage(older, 0.0, 2, SmoothingConfig()).body is None
    assert InstanceStage(read_manifest(MODEL), 0.0, 2, SmoothingConfig()).body is not None


@pytest.mark.skipif(not CLIP.is_file(), reason="../shared/data not present")
def test_the_fly_model_finds_both_flies_and_keeps_the_node_names():
    import sleap_io as sio

    from rtkp.backends import open_backend
    from rtkp.data.load import load_dataset
    from rtkp.eval.matching import box_side
    from rtkp.messages import Frame
    from rtkp.tracker import Tracker

    labels = sio.load_slp(str(CLIP))
    assert list(read_manifest(MODEL).keypoint_names) == list(labels.skeletons[0].node_names)
    data = load_dataset(CLIP)
    frames = data.frames()
    backend = open_backend(MODEL, "onnxruntime")
    tracker = Tracker(backend, backend.info.manifest)
    hits = total = 0
    for f in (600, 601, 602):
        samples = [data.samples[i] for i in frames[(CLIP.parent / "clip_train.mp4", f)]]
        kf = tracker.process(Frame(f, f / 25, 0, samples[0].load_image()))
        assert [i.track for i in kf.instances] == [0, 1]
        for s in samples:
            side = box_side(s.keypoints, s.visible)
            best = min(kf.instances, key=lambda i: np.linalg.norm(i.keypoints - s.keypoints, axis=1)[s.visible].mean())
            err = np.linalg.norm(best.keypoints - s.keypoints, axis=1)[s.visible]
            hits += int((err <= 0.1 * side).sum())
            total += int(s.visible.sum())
    backend.close()
    assert hits / total >= 0.8
