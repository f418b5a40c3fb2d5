"""Prototypes from whole frames (`coke.final_prototypes: frames`, an ablation): the mean of the final network's
features at the training labels of whole frames instead of the training bank's moving average; and
tools/frame_prototypes.py, which gives them to a model trained with the bank's."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, SMALL_TRAIN, write_dlc_project
from safetensors.torch import load_file

from rtkp.cli import main
from rtkp.config import load_config
from rtkp.data.load import load_dataset
from rtkp.geometry import Letterbox
from rtkp.model.checkpoint import load_model
from rtkp.model.network import KeypointNet
from rtkp.train.batches import BatchMaker
from rtkp.train.prototypes import frame_prototypes

TOOL = REPO / "tools" / "frame_prototypes.py"


def _by_hand(net, data, size) -> np.ndarray:
    """(K, D) the normalised mean feature at each keypoint's labels, read at the nearest cell of each frame."""
    sums = None
    for s in data.samples:
        image = s.load_image()
        box = Letterbox.fit(image.shape[1::-1], size)
        with torch.no_grad():
            feats = net(torch.from_numpy(box.apply(image))[None])[0].numpy()  # (D, h, w)
        sums = np.zeros((len(s.visible), feats.shape[0])) if sums is None else sums
        cells = np.rint((box.to_model(np.nan_to_num(np.asarray(s.keypoints, float))) + 0.5) / 4 - 0.5).astype(int)
        for k in np.flatnonzero(s.visible):
            sums[k] += feats[:, cells[k, 1], cells[k, 0]]
    return sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)


def test_each_prototype_is_the_mean_feature_at_its_labels_and_an_unlabelled_keypoint_keeps_its_bank_row(tmp_path):
    data = load_dataset(write_dlc_project(tmp_path / "proj", n=5))
    for s in data.samples:  # the last keypoint labelled nowhere
        s.visible[-1] = False
    cfg = load_config(None, ["model.input_size=[128, 96]", "augment.crop_size=[64, 64]"])
    torch.manual_seed(0)
    net = KeypointNet("coke", 3, 16, 8, pretrained=False).eval()
    bank = F.normalize(torch.randn(3, 16), dim=1)
    protos = frame_prototypes(net, BatchMaker(data, cfg), (128, 96), bank)
    assert protos.shape == (3, 16) and torch.allclose(protos.norm(dim=1), torch.ones(3))
    assert torch.equal(protos[2], bank[2])
    # the labels fall on cell centres or near them: the bilinear read agrees with the nearest cell's closely
    hand = _by_hand(net, data, (128, 96))
    assert (protos[:2].numpy() * hand[:2]).sum(1).min() > 0.99
    assert (protos[:2] * bank[:2]).sum(1).abs().max() < 0.9  # not the bank's


def _train(tmp_path, *sets):
    project = write_dlc_project(tmp_path / "proj")
    names = [f"labeled-data/clip/img{i:03d}.png" for i in range(12)]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": names[:9], "test": names[9:]}))
    out = tmp_path / "model"
    args = ["train", "--data", str(project), "--split", str(split), "--out", str(out), "--no-eval", "--quiet"]
    assert main([*args, *SMALL_TRAIN, "--set", "train.steps=6", *sets]) == 0
    return project, split, out


def _shipped_against_frames(project, split, out):
    """(shipped prototypes, the whole-frame mean from the saved network) of a model folder."""
    net, manifest, protos, _ = load_model(out)
    cfg = load_config(None, ["model.input_size=[128, 96]", "augment.crop_size=[64, 64]"])
    data = load_dataset(project).subset(json.loads(split.read_text())["train"], str(split))
    return protos, frame_prototypes(net, BatchMaker(data, cfg), (128, 96), protos)


def test_training_with_the_option_ships_the_whole_frame_prototypes(tmp_path):
    project, split, out = _train(tmp_path, "--set", "coke.final_prototypes=frames")
    shipped, frames = _shipped_against_frames(project, split, out)
    # the network is stored in fp16, so the mean recomputed from the saved weights differs in the last digits only
    assert (shipped * frames).sum(1).min() > 0.999
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["config"]["coke"]["final_prototypes"] == "frames"
    assert np.allclose(manifest["prototypes"], shipped.numpy(), atol=1e-6)


def test_the_bank_rule_and_the_tool_that_moves_such_a_model_to_whole_frame_prototypes(tmp_path):
    project, split, out = _train(tmp_path)  # the default: the bank's moving average, which is another vector
    shipped, frames = _shipped_against_frames(project, split, out)
    assert (shipped * frames).sum(1).min() < 0.99
    assert json.loads((out / "manifest.json").read_text())["training"]["config"]["coke"]["final_prototypes"] == "bank"
    before = load_file(str(out / "model.safetensors"))
    moved = tmp_path / "moved"
    done = subprocess.run(
        [sys.executable, str(TOOL), str(out), "--data", str(project), "--split", str(split), "--out", str(moved)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    after = load_file(str(moved / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("net."))  # weights untouched
    assert torch.allclose(after["prototypes"], frames, atol=1e-5)
    manifest = json.loads((moved / "manifest.json").read_text())
    assert manifest["training"]["config"]["coke"]["final_prototypes"] == "frames"
    assert "tools/frame_prototypes.py" in manifest["training"]["prototypes_command"]
    assert len(manifest["visibility_margins"]) == 3
    # the new folder runs: the user path evaluates it
    assert main(["eval", "--model", str(moved), "--data", str(project), "--split", str(split), "--quiet"]) == 0
    again = subprocess.run(
        [sys.executable, str(TOOL), str(out), "--data", str(project), "--split", str(split), "--out", str(moved)],
        capture_output=True,
        text=True,
    )
    assert again.returncode != 0 and "exists" in again.stderr and "Traceback" not in again.stderr
    missing = subprocess.run(
        [sys.executable, str(TOOL), str(tmp_path / "nowhere"), "--data", str(project)], capture_output=True, text=True
    )
    assert missing.returncode != 0 and "nowhere" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.parametrize("value", ["mean", ""])
def test_a_wrong_setting_is_one_clear_line(tmp_path, value, capsys):
    project = write_dlc_project(tmp_path / "proj", n=4)
    args = ["train", "--data", str(project), "--out", str(tmp_path / "m"), "--set", f"coke.final_prototypes={value}"]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "final_prototypes" in err and "bank, frames" in err and "Traceback" not in err
