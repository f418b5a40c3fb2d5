"""Mirrored crops: a batch says which crops were flipped, and with `coke.localise_flipped: false` they leave the
localisation term (the sub-cell position, where a labelling convention's handedness lives) and nothing else."""

import numpy as np
import pytest
import torch
from conftest import write_dlc_project

from rtkp.config import load_config
from rtkp.data.load import load_dataset
from rtkp.model.banks import ClutterBank, KeypointBank
from rtkp.model.network import KeypointNet
from rtkp.train.batches import BatchMaker
from rtkp.train.steps import coke_step

SMALL = ["model.input_size=[128, 96]", "augment.crop_size=[64, 64]", "augment.occluder=0.0", "augment.empty_share=0.0"]


def _batch(tmp_path, flip: float, *sets):
    data = load_dataset(write_dlc_project(tmp_path / f"proj{flip}", n=4))
    cfg = load_config(None, [*SMALL, f"augment.flip={flip}", "augment.background_crop=0.0", *sets])
    return cfg, BatchMaker(data, cfg).draw(np.random.default_rng(0), 6)


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_a_batch_says_which_crops_were_mirrored(tmp_path, flip):
    _, batch = _batch(tmp_path, flip)
    assert batch.flipped.dtype == torch.bool and batch.flipped.shape == (6,)
    assert bool(batch.flipped.all()) == (flip == 1.0) and bool(batch.flipped.any()) == (flip == 1.0)


def _step(cfg, batch):
    torch.manual_seed(0)
    net = KeypointNet("coke", 3, 16, 8, pretrained=False, aux_heatmap=True).eval()
    kp_bank, clutter_bank = KeypointBank(3, 16), ClutterBank(64, 16)
    kp_bank.prototypes = torch.nn.functional.normalize(torch.randn(3, 16), dim=1)
    kp_bank.counts[:] = 1  # initialised: the localisation term runs
    with torch.no_grad():
        _, stats, _ = coke_step(net, batch, np.random.default_rng(0), cfg, kp_bank, clutter_bank)
    return stats


def test_mirrored_crops_leave_the_localisation_term_only(tmp_path):
    cfg, mirrored = _batch(tmp_path, 1.0, "coke.localise_flipped=false")
    assert mirrored.visible.any()
    kept = _step(cfg, mirrored)
    assert kept["loc"] == 0.0  # every crop mirrored: nothing left for the term
    cfg_all, _ = _batch(tmp_path / "all", 1.0)  # the default: mirrored crops count
    counted = _step(cfg_all, mirrored)
    assert counted["loc"] > 0.5
    # everything else the step computes is the same either way
    assert {k: v for k, v in kept.items() if k != "loc"} == {k: v for k, v in counted.items() if k != "loc"}
    # unmirrored crops still train it with the option off
    cfg_plain, plain = _batch(tmp_path / "plain", 0.0, "coke.localise_flipped=false")
    assert _step(cfg_plain, plain)["loc"] > 0.5
