"""A multi-instance model end to end, small and real: `rtkp synth --targets 2` → `rtkp train` → ONNX Runtime and
PyTorch backends → the Tracker's instances → `rtkp run` / `rtkp eval`, and the one-line refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SMALL_TRAIN

from rtkp.cli import main

STEPS = ["--set", "train.steps=6", "--set", "augment.hard_crop=0"]


@pytest.fixture(scope="module")
def two_targets(two_target_model):
    """(COCO file with two targets per image, a split of it, the trained model folder): conftest's shared model."""
    return two_target_model


def test_training_on_several_animals_makes_a_multi_instance_model(two_targets):
    _, _, out = two_targets
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["max_instances"] == 4 and manifest["default_instances"] == 2
    assert manifest["instance_size"] > 0
    evaluation = manifest["evaluation"]  # scored per animal by rtkp.eval
    assert evaluation["labelled_instances"] == 6 and "oks" in evaluation and "per_track" in evaluation


def test_the_graph_reports_peaks_with_centres_on_every_backend(two_targets):
    from rtkp.backends import open_backend

    _, _, out = two_targets
    image = np.random.default_rng(0).integers(0, 255, (2, 96, 128, 3), np.uint8)
    rows = {}
    for name in ("onnxruntime", "torch"):
        backend = open_backend(str(out), name)
        rows[name] = backend.infer(image)
        backend.close()
    k = len(json.loads((out / "manifest.json").read_text())["keypoint_names"])
    assert rows["onnxruntime"].shape == (2, k, 4, 6)
    scores = rows["onnxruntime"][..., 2]
    assert (np.diff(scores, axis=2) <= 1e-6).all()  # best peak first
    np.testing.assert_allclose(rows["onnxruntime"], rows["torch"], atol=2e-3)


def test_a_shot_reads_the_centre_votes_on_every_backend(two_targets, monkeypatch):
    """Teaching's one graph run per shot (Backend.shot_maps) gives a multi-instance model's centre votes beside the
    generic features, the centre head's own (2, h, w) offsets, the same through every runtime (TensorRT through the
    test suite's fake module); its peaks too."""
    import sys

    import torch
    from fake_tensorrt import make_fake_tensorrt

    from rtkp.backends import read_model_info
    from rtkp.backends.onnxruntime import OnnxRuntimeBackend
    from rtkp.backends.tensorrt import TensorRTBackend
    from rtkp.backends.torch import TorchBackend
    from rtkp.graphs import prototypes as layout
    from rtkp.model.checkpoint import load_model

    _, _, out = two_targets
    image = np.random.default_rng(1).integers(0, 255, (2, 96, 128, 3), np.uint8)
    net = load_model(out)[0].eval()
    with torch.no_grad():
        feats, centres = net.with_centre(torch.from_numpy(image))
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("10.3.0"))
    info = read_model_info(out)
    rows = None
    backends = (OnnxRuntimeBackend(info, threads=1), TorchBackend(info), TensorRTBackend(info, False, device="cpu"))
    for backend in backends:
        # the keypoints too: TensorRT's output buffer holds each keypoint's P peaks (it once held (K, 4) rows)
        found = backend.infer(image)
        rows = found if rows is None else rows
        assert found.shape == (2, len(info.manifest.keypoint_names), 4, 6), backend.name
        np.testing.assert_allclose(found, rows, atol=2e-3, err_msg=backend.name)
        maps, votes = backend.shot_maps(image)
        d = feats.shape[1]
        assert maps.shape == (2, d + layout.GENERIC_DIM, 24, 32), backend.name
        np.testing.assert_allclose(maps[:, :d], feats.numpy(), atol=2e-3, err_msg=backend.name)
        np.testing.assert_allclose(votes, centres.numpy(), atol=2e-3, err_msg=backend.name)
        backend.close()


def test_the_tracker_reports_every_animal_in_track_order(two_targets):
    from rtkp.backends import open_backend
    from rtkp.data.load import load_dataset
    from rtkp.messages import Frame
    from rtkp.tracker import Tracker

    coco, _, out = two_targets
    data = load_dataset(coco)
    backend = open_backend(str(out), "onnxruntime")
    tracker = Tracker(backend, backend.info.manifest, max_instances=3)
    k = len(data.keypoint_names)
    for i, indices in enumerate(list(data.frames().values())[:6]):
        kf = tracker.process(Frame(i, i / 30, 0, data.samples[indices[0]].load_image()))
        tracks = [inst.track for inst in kf.instances]
        assert len(tracks) <= 3 and tracks == sorted(tracks) and len(set(tracks)) == len(tracks)
        for inst in kf.instances:
            assert inst.keypoints.shape == (k, 2) and inst.visible.shape == (k,) and inst.state.shape == (k,)
        if kf.instances:
            np.testing.assert_array_equal(kf.keypoints, kf.instances[0].keypoints)
        else:
            assert (kf.state == 3).all() and not kf.visible.any()
    backend.close()


def test_max_instances_is_checked_in_one_line(two_targets, tiny_model, capsys):
    coco, split, out = two_targets
    source = "lavfi:testsrc2=size=128x96:rate=30"
    assert main(["run", "--source", source, "--model", str(out), "--headless", "--max-instances", "5"]) == 2
    assert main(["run", "--source", source, "--model", str(tiny_model), "--headless", "--max-instances", "2"]) == 2
    assert main(["run", "--source", source, "--model", str(out), "--headless", "--max-instances", "0"]) == 2
    err = capsys.readouterr().err
    assert "at most 4 animals" in err and "finds one animal per frame" in err and "whole number >= 1" in err
    assert "Traceback" not in err


def test_a_single_instance_model_refuses_frames_with_several_animals(two_targets, tiny_model, capsys):
    coco, split, _ = two_targets
    rc = main(["eval", "--model", str(tiny_model), "--data", str(coco), "--split", str(split), "--quiet"])
    assert rc == 3 and "more than one instance" in capsys.readouterr().err


def test_a_multi_instance_report_names_the_keypoints_it_leaves_out(two_targets, tmp_path, capsys):
    coco, split, out = two_targets
    names = json.loads((out / "manifest.json").read_text())["keypoint_names"]
    report = tmp_path / "report.json"
    args = ["eval", "--model", str(out), "--data", str(coco), "--split", str(split), "--quiet", "--json", str(report)]
    assert main([*args, "--keypoints", names[0]]) == 0
    assert json.loads(report.read_text())["not_scored"] == {"model_only": names[1:], "data_only": []}
    assert f"not scored: {', '.join(names[1:])} (the model's" in capsys.readouterr().out


def test_max_instances_one_refuses_several_animals(two_targets, tmp_path, capsys):
    coco, split, _ = two_targets
    extra = ["--set", "model.max_instances=1"]
    args = ["train", "--data", str(coco), "--out", str(tmp_path / "m"), *SMALL_TRAIN, *STEPS, *extra, "--quiet"]
    assert main(args) == 3
    assert "more than one instance" in capsys.readouterr().err


def test_a_taught_keypoint_joins_every_animal(two_targets):
    """Teaching on a multi-instance model: the new keypoint gets peaks with centre votes like the trained ones, and
    every animal reported from then on carries it (K + 1 keypoints each)."""
    from rtkp.backends import open_backend
    from rtkp.data.load import load_dataset
    from rtkp.geometry import Letterbox
    from rtkp.messages import Frame
    from rtkp.teach.keypoint_set import KeypointSet
    from rtkp.teach.shots import ShotReader, teach_keypoint
    from rtkp.tracker import Tracker

    coco, _, out = two_targets
    data = load_dataset(coco)
    backend = open_backend(str(out), "onnxruntime")
    info = backend.info
    kset = KeypointSet.from_model(info.manifest, info.prototypes, info.clutter)
    before = list(kset.names)
    sample = data.samples[0]
    image = sample.load_image()
    box = Letterbox.fit((image.shape[1], image.shape[0]), info.input_size)
    point = box.to_model(sample.keypoints[sample.visible][0])[None]
    teach_keypoint(kset, ShotReader(backend, info.manifest.stride), "taught", [box.apply(image)], point)
    tracker = Tracker(backend, info.manifest, max_instances=2)
    previous = [before.index(n) if n in before else -1 for n in kset.names]
    tracker.change_keypoints(kset.prototypes, kset.clutter, list(kset.names), kset.margins.copy(), previous)
    rows = backend.infer(box.apply(image)[None])
    assert rows.shape[1:] == (len(before) + 1, 4, 6)
    for i, indices in enumerate(list(data.frames().values())[:3]):
        kf = tracker.process(Frame(i, i / 30, 0, data.samples[indices[0]].load_image()))
        assert kf.keypoints.shape == (len(before) + 1, 2)
        assert all(inst.keypoints.shape == (len(before) + 1, 2) for inst in kf.instances)
    backend.close()


def test_a_live_run_streams_every_animal(two_targets):
    """`rtkp run` with a multi-instance model: its `.meta` says so, and `rtkp subscribe --json` prints each frame's
    animals (zero or more: a 6-step model on a test pattern; what matters is that the stream carries them)."""
    from conftest import subscribe_to_live_run

    _, _, out = two_targets
    run, sub = subscribe_to_live_run(out, 10, 30, "--max-instances", "3")
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in sub.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 10
    for record in lines:
        assert isinstance(record["instances"], list) and len(record["instances"]) <= 3
        tracks = [i["track"] for i in record["instances"]]
        assert tracks == sorted(tracks)
        assert all(set(i["keypoints"]) == set(record["keypoints"]) for i in record["instances"])
