"""Training that goes on: a finished run kept with --keep-checkpoint is extended by a larger train.steps, and terms
switched on later in the budget (coke.hidden_from) appear in the loss only from there."""

import json

import numpy as np
import pytest
import torch
from conftest import SMALL_TRAIN, write_dlc_project
from safetensors.torch import load_file

from rtkp.cli import main
from rtkp.config import load_config
from rtkp.data.load import load_dataset
from rtkp.model.banks import ClutterBank, KeypointBank
from rtkp.model.network import KeypointNet
from rtkp.train.batches import BatchMaker
from rtkp.train.steps import coke_step


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


def test_the_hidden_keypoint_term_waits_for_a_clutter_group(tmp_path):
    """hidden_from 0: on the first step the keypoint bank can be initialised from the batch while the clutter bank is
    still empty; the term must not read −log 0 (an infinite loss that turns the weights to NaN)."""
    data = load_dataset(write_dlc_project(tmp_path / "proj", n=4))
    sets = ["model.input_size=[128, 96]", "augment.crop_size=[64, 64]", "augment.occluder=0.0"]
    cfg = load_config(None, [*sets, "coke.hidden_weight=1", "coke.hidden_from=0", "augment.empty_share=0.0"])
    batch = BatchMaker(data, cfg).draw(np.random.default_rng(0), 6)
    batch.visible[0, 0] = False  # one hidden keypoint
    net = KeypointNet("coke", 3, 16, 8, pretrained=False, aux_heatmap=True).eval()
    kp_bank, clutter_bank = KeypointBank(3, 16), ClutterBank(64, 16)
    loss, stats, after = coke_step(net, batch, np.random.default_rng(0), cfg, kp_bank, clutter_bank, 0.0)
    assert kp_bank.initialised.all() and clutter_bank.filled == 0
    assert torch.isfinite(loss) and "hidden" not in stats
    after()  # the clutter group exists from the next step on, and so does the term
    loss, stats, _ = coke_step(net, batch, np.random.default_rng(1), cfg, kp_bank, clutter_bank, 0.0)
    assert torch.isfinite(loss) and stats["hidden"] > 0


def test_a_checkpoint_of_another_network_is_one_line(common, tmp_path, capsys):
    """A run stopped before the auxiliary heatmap term existed (or with it off) cannot resume with it on: the
    networks differ; the user gets one line naming the fix, not a PyTorch traceback."""
    out = tmp_path / "m"
    off = ["--set", "coke.heatmap_weight=0", "--set", "train.steps=3", "--stop-after", "1"]
    assert main(["train", "--out", str(out), *off, *common]) == 0
    assert (out / "checkpoint" / "state.json").is_file()
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--set", "train.steps=3", *common]) != 0
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--no-resume" in errors[0] and "Traceback" not in err
