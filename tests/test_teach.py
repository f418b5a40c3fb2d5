"""Teaching keypoints from shots: feature sampling, views, prototypes and margins; a keypoint left out of the shipped
target model and taught again; dataset subsets; and leaving a keypoint out through the command line."""

import json

import numpy as np
import pytest
from conftest import render_scene, write_dlc_project
from shots_helpers import D, taught_shots, unit_rows

from rtkp.errors import DataError
from rtkp.teach.features import keypoint_rows, sample_features, unit
from rtkp.teach.keypoint_set import KeypointSet, Taught
from rtkp.teach.shots import VIEWS, ShotReader, shot_views, teach
from rtkp.visibility import evidence


def test_bilinear_sampling_matches_training_and_the_cell_centres():
    import torch

    from rtkp.model.loss import sample_features as torch_sample

    rng = np.random.default_rng(2)
    feats = unit(rng.normal(size=(2, D, 6, 7)), axis=1).astype(np.float32)
    pts = np.array([[10.3, 7.9], [0.0, 23.4]], np.float32)
    ours = sample_features(feats, pts, 4)
    ref = torch_sample(torch.from_numpy(feats), torch.from_numpy(pts)[:, None], 4)[:, 0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    # a point on a cell centre reads that cell exactly
    np.testing.assert_allclose(
        sample_features(feats[:1], np.array([[4 * 3 + 1.5, 4 * 2 + 1.5]]), 4)[0], feats[0, :, 2, 3]
    )


def test_views_keep_the_clicked_point_in_place():
    rng = np.random.default_rng(3)
    image, kps = render_scene(rng)
    views, pts = shot_views(image, kps[0])
    assert views.shape == (len(VIEWS), 96, 128, 3) and (pts == kps[0]).all()
    x, y = np.round(kps[0]).astype(int)
    # the red disc under the point stays under it in every view
    assert all(v[y, x, 0] > 200 and v[y, x, 1] < 100 for v in views)


def test_margin_sits_between_the_keypoint_and_its_look_alikes_within_bounds():
    rng = np.random.default_rng(4)
    clutter = unit_rows(rng, 6)
    taught = taught_shots(rng, shots=3, views=5, spread=0.05)
    lesson = teach(taught, clutter)
    e, h = lesson.visible, lesson.lookalike
    assert np.isclose(np.linalg.norm(lesson.prototype), 1.0, atol=1e-5)
    assert e / 2 - 1e-6 <= lesson.margin <= 0.75 * e + 1e-6 and lesson.warning is None and h < e
    assert np.isclose(lesson.margin, min(max((e + h) / 2, e / 2), 0.75 * e), atol=1e-5)
    # a look-alike that scores like the keypoint itself: warned about, and the margin stays below its own evidence
    twin = Taught(taught.views, np.repeat(taught.views[:, :1], 4, axis=1))
    lesson = teach(twin, clutter)
    assert lesson.warning and "look-alike" in lesson.warning and lesson.margin <= 0.75 * lesson.visible + 1e-6
    # held-out evidence: one shot alone is judged on its other views, never on itself (which would read 1.0)
    one = Taught(taught.views[:1], taught.lookalikes[:1])
    assert teach(one, clutter).visible < float(
        evidence(keypoint_rows(taught.views[0, 0], teach(one, clutter).prototype, clutter))
    )


@pytest.fixture(scope="module")
def target_model(tmp_path_factory):
    """A copy of the shipped demo-target model (a trained CoKe model: 12 keypoints, 320x256)."""
    import shutil

    from rtkp.cli import DEFAULT_MODEL

    assert (DEFAULT_MODEL / "manifest.json").is_file(), f"{DEFAULT_MODEL}: the shipped model is in git; restore it"
    folder = tmp_path_factory.mktemp("target") / "model"
    shutil.copytree(DEFAULT_MODEL, folder, ignore=shutil.ignore_patterns("onnx", "trt", "exports.json"))
    return folder


def test_a_keypoint_left_out_and_taught_from_three_frames_is_found_on_new_ones(target_model):
    """Through the trained target model: drop one keypoint's prototype, teach it again from three synthetic frames
    (the labels as clicks), and it is found on six other frames, in the graph's own output row."""
    from rtkp.backends import read_model_info
    from rtkp.backends.onnxruntime import OnnxRuntimeBackend
    from rtkp.demo.synth import render_sample
    from rtkp.demo.target import render_target
    from rtkp.geometry import Letterbox
    from rtkp.teach.shots import teach_keypoint

    info = read_model_info(target_model)
    backend = OnnxRuntimeBackend(info, threads=2)
    kset = KeypointSet.from_model(info.manifest, info.prototypes, info.clutter)
    name = "c2_green_black"
    k = kset.names.index(name)
    kset.remove(name)
    target, rng = render_target(4.0), np.random.default_rng(8)
    frames = []
    while len(frames) < 9:
        image, kps, vis, _ = render_sample(rng, target)
        if vis[k]:
            box = Letterbox.fit(image.shape[1::-1], info.input_size)
            frames.append((box.apply(image), box.to_model(kps[k])))
    shots, tests = frames[:3], frames[3:]
    index, lesson = teach_keypoint(
        kset, ShotReader(backend, 4), name, [f[0] for f in shots], np.stack([f[1] for f in shots])
    )
    assert index == 11 and kset.shots() == {name: 3} and lesson.visible > 0
    backend.set_prototypes(kset.prototypes, kset.clutter)
    rows = backend.infer(np.stack([f[0] for f in tests]))
    assert rows.shape == (6, 12, 4)
    errors = np.linalg.norm(rows[:, 11, :2] - np.stack([f[1] for f in tests]), axis=1)
    assert np.median(errors) < 4.0 and (errors < 8.0).sum() >= 5, errors  # model-input px (320x256)
    assert (rows[:, 11, 2] - rows[:, 11, 3] > lesson.margin).sum() >= 5  # and reported visible there


def test_select_keypoints_keeps_frames_and_renumbers_the_skeleton(tmp_path):
    from rtkp.data.load import load_dataset

    project = write_dlc_project(tmp_path / "p", n=4, names=["a", "b", "c"])
    (project / "config.yaml").write_text((project / "config.yaml").read_text() + "skeleton: [[a, b], [b, c]]\n")
    data = load_dataset(project)
    sub = data.select_keypoints(["c", "b"])
    assert sub.keypoint_names == ["c", "b"] and len(sub) == len(data) and sub.skeleton == [(1, 0)]
    np.testing.assert_array_equal(sub.samples[1].keypoints, data.samples[1].keypoints[[2, 1]])
    assert not sub.samples[0].visible[0] and sub.samples[0].visible[1]  # frame 0 has c unlabelled
    # one keypoint is measured against the whole object (PCK's size), also on a frame where it is unlabelled
    from rtkp.train.evaluate import object_size

    whole = data.samples[1].keypoints[data.samples[1].visible]
    alone = data.select_keypoints(["c"])
    np.testing.assert_array_equal(alone.samples[1].object_points(), whole)
    assert object_size(alone.samples[1].object_points()) == object_size(whole) > 1
    assert len(alone.samples[0].object_points()) == 2 and not alone.samples[0].visible.any()
    assert object_size(np.zeros((0, 2))) == 1.0
    with pytest.raises(DataError, match="no keypoint 'z'"):
        data.select_keypoints(["a", "z"])
    with pytest.raises(DataError, match="once"):
        data.select_keypoints(["a", "a"])


def test_leave_one_keypoint_out_through_the_command_line(dlc_project, tmp_path, capsys):
    """train --keypoints on two of three keypoints, add the third from two labelled frames, eval it alone."""
    from rtkp.cli import main

    names = [f"labeled-data/clip/img{i:03d}.png" for i in range(12)]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": names[:9], "test": names[9:]}))
    from conftest import SMALL_TRAIN

    small = [*SMALL_TRAIN, "--set", "train.steps=3", "--quiet"]
    common = ["--data", str(dlc_project), "--split", str(split)]
    two = tmp_path / "two"
    assert main(["train", *common, "--out", str(two), "--keypoints", "nose,right_eye", *small]) == 0
    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["keypoint_names"] == ["nose", "right_eye"] and manifest["training"]["keypoints"] == [
        "nose",
        "right_eye",
    ]
    assert list(manifest["evaluation"]["per_keypoint"]) == ["nose", "right_eye"]
    assert main(["train", *common, "--out", str(tmp_path / "bad"), "--keypoints", "nose,tail", *small]) == 3
    assert "no keypoint 'tail'" in capsys.readouterr().err
    three = tmp_path / "three"
    add = ["keypoints", "add", "left_eye", "--model", str(two), *common, "--shots", "2", "--out", str(three)]
    assert main([*add, "--backend", "onnxruntime", "--threads", "1"]) == 0
    manifest = json.loads((three / "manifest.json").read_text())
    assert manifest["keypoint_names"] == ["nose", "right_eye", "left_eye"]
    assert manifest["added_keypoints"][0]["name"] == "left_eye" and manifest["added_keypoints"][0]["shots"] == 2
    assert manifest["derived_from"]["added_from_data"]["frames"] == names[:2]  # the first two with left_eye
    out = tmp_path / "eval.json"
    assert (
        main(
            ["eval", "--model", str(three), *common, "--keypoints", "left_eye", "--backend", "onnxruntime"]
            + ["--json", str(out), "--quiet"]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["keypoints"] == ["left_eye"] and list(report["per_keypoint"]) == ["left_eye"]
    # the full data against the taught model: matched by name, whatever the order
    assert (
        main(["eval", "--model", str(three), *common, "--backend", "onnxruntime", "--json", str(out), "--quiet"]) == 0
    )
    assert json.loads(out.read_text())["keypoints"] == ["nose", "left_eye", "right_eye"]
