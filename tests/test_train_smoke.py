"""A few real training steps on a generated DeepLabCut project, through the command line."""

import json

import pytest
from conftest import SMALL_TRAIN
from safetensors.torch import load_file

from rtkp.cli import main

SMALL = [*SMALL_TRAIN, "--quiet"]


@pytest.fixture
def split(dlc_project, tmp_path):
    names = [f"labeled-data/clip/img{i:03d}.png" for i in range(12)]
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": names[:9], "test": names[9:]}))
    return path


@pytest.mark.parametrize("head", ["coke", "heatmap"])
def test_train_then_eval(dlc_project, split, tmp_path, head):
    out = tmp_path / head
    rc = main(
        [
            "train",
            "--data",
            str(dlc_project),
            "--split",
            str(split),
            "--out",
            str(out),
            "--head",
            head,
            "--set",
            "train.steps=6",
            *SMALL,
        ]
    )
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["head"] == head and manifest["keypoint_names"] == ["nose", "left_eye", "right_eye"]
    assert manifest["flip_pairs"] == [["left_eye", "right_eye"]]
    assert manifest["training"]["samples"] == 9 and "evaluation" in manifest
    assert not (out / "checkpoint").exists()
    weights = load_file(str(out / "model.safetensors"))
    assert all(v.dtype.itemsize <= 2 for k, v in weights.items() if k.startswith("net.") and v.is_floating_point())
    if head == "coke":
        assert len(manifest["prototypes"]) == 3 and weights["clutter_summary"].shape[1] == 128
    report_path = tmp_path / "report.json"
    rc = main(
        [
            "eval",
            "--model",
            str(out),
            "--data",
            str(dlc_project),
            "--split",
            str(split),
            "--occlusion",
            "--json",
            str(report_path),
            "--plot",
            str(tmp_path / "plot.png"),
            "--quiet",
        ]
    )
    assert rc == 0
    report = json.loads(report_path.read_text())
    assert {"rmse_px", "pck", "per_keypoint", "occlusion"} <= set(report)
    assert {"0.05", "0.1"} <= set(report["pck"]) and set(report["occlusion"]) == {"L0", "L1", "L2", "L3"}
    assert report["images"] == 3 and (tmp_path / "plot.png").stat().st_size > 1000


def test_interrupted_training_resumes_to_the_same_model(dlc_project, split, tmp_path):
    common = [
        "--data",
        str(dlc_project),
        "--split",
        str(split),
        "--no-eval",
        "--set",
        "train.steps=4",
        "--set",
        "train.checkpoint_every=2",
        *SMALL,
        # hard negatives mined at step 1, before the interruption: the resumed run must continue with the same ones
        "--set",
        "train.warmup_steps=1",
        "--set",
        "augment.hard_crop=1.0",
    ]
    assert main(["train", "--out", str(tmp_path / "whole"), *common]) == 0
    assert main(["train", "--out", str(tmp_path / "parts"), "--stop-after", "2", *common]) == 0
    state = json.loads((tmp_path / "parts" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2 and not (tmp_path / "parts" / "manifest.json").exists()
    assert any(state["hard_negatives"])
    assert main(["train", "--out", str(tmp_path / "parts"), *common]) == 0
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(tmp_path / "parts" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k].float() - b[k].float()).abs().max() <= 1e-3, k


def test_changed_recipe_refuses_to_resume(dlc_project, split, tmp_path, capsys):
    common = ["--data", str(dlc_project), "--out", str(tmp_path / "m"), "--set", "train.steps=4", *SMALL]
    assert main(["train", "--stop-after", "1", *common]) == 0
    assert main(["train", "--set", "train.lr=0.5", *common]) == 2
    assert "another config" in capsys.readouterr().err


def test_too_few_frames_warns_before_training_starts(dlc_project, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "m"
    cmd = [sys.executable, "-u", "-m", "rtkp", "train", "--data", str(dlc_project), "--out", str(out)]
    run = subprocess.run(
        [*cmd, "--stop-after", "1", *SMALL], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout
    lines = run.stdout.splitlines()
    warnings = [i for i, line in enumerate(lines) if "warning" in line]
    assert len(warnings) == 1, run.stdout
    assert "the recipe expects about 50+ labelled frames; got 12" in lines[warnings[0]]
    start = next(i for i, line in enumerate(lines) if line.startswith("training "))
    assert warnings[0] < start
    # a warning, not an error: training went ahead
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 1


def test_enough_frames_train_without_the_warning(tmp_path, capsys):
    from conftest import write_dlc_project

    from rtkp.data.load import load_dataset
    from rtkp.train.recipe import RECIPE_MIN_FRAMES, few_frames_warning

    project = write_dlc_project(tmp_path / "p", n=RECIPE_MIN_FRAMES)
    args = ["train", "--data", str(project), "--out", str(tmp_path / "m"), "--stop-after", "1", *SMALL]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "training " in captured.out and "warning" not in captured.err + captured.out
    data = load_dataset(project)
    fewer = data.subset([s.name for s in data.samples[1:]], "test")
    assert f"got {RECIPE_MIN_FRAMES - 1}" in few_frames_warning(fewer)
