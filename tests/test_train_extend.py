"""Training that goes on: a finished run kept with --keep-checkpoint is extended by a larger train.steps, and terms
switched on later in the budget (coke.hidden_from) appear in the loss only from there."""

import json

import pytest
from conftest import SMALL_TRAIN
from safetensors.torch import load_file

from rtkp.cli import main


@pytest.fixture
def common(dlc_project):
    return ["--data", str(dlc_project), "--no-eval", *SMALL_TRAIN, "--quiet"]


def test_a_kept_checkpoint_extends_a_finished_run(common, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["train", "--out", str(out), "--set", "train.steps=3", "--keep-checkpoint", *common]) == 0
    first = json.loads((out / "manifest.json").read_text())
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert first["training"]["steps"] == 3 and state["step"] == 3
    before = load_file(str(out / "model.safetensors"))
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--set", "train.steps=5", *common]) == 0
    assert "resuming from step 3 of 5" in capsys.readouterr().out
    extended = json.loads((out / "manifest.json").read_text())
    assert extended["training"]["steps"] == 5 and extended["training"]["resumed_from_step"] == 3
    assert not (out / "checkpoint").exists()  # not kept this time
    after = load_file(str(out / "model.safetensors"))
    assert any((before[k].float() - after[k].float()).abs().max() > 0 for k in before if k.startswith("net."))


def test_without_the_flag_a_finished_run_leaves_no_checkpoint(common, tmp_path):
    out = tmp_path / "m"
    assert main(["train", "--out", str(out), "--set", "train.steps=2", *common]) == 0
    assert (out / "manifest.json").exists() and not (out / "checkpoint").exists()


@pytest.mark.parametrize("start, expect", [(0.5, True), (1.0, False)])
def test_the_hidden_keypoint_term_starts_where_the_schedule_says(common, tmp_path, start, expect):
    out = tmp_path / "m"
    sets = ["--set", "coke.hidden_weight=2", "--set", f"coke.hidden_from={start}", "--set", "augment.occluder=1.0"]
    # four steps: the last one (the manifest's final_loss) runs at 3/4 of the budget
    assert main(["train", "--out", str(out), "--set", "train.steps=4", *sets, *common]) == 0
    final = json.loads((out / "manifest.json").read_text())["training"]["final_loss"]
    assert ("hidden" in final) is expect
