"""The auxiliary heatmap term (`coke.heatmap_weight`): the baseline's regression on the unit features, training only."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import write_dlc_project

from rtkp.config import load_config
from rtkp.data.load import load_dataset
from rtkp.errors import ConfigError
from rtkp.model.banks import ClutterBank, KeypointBank
from rtkp.model.checkpoint import load_model
from rtkp.model.network import KeypointNet
from rtkp.train.batches import BatchMaker
from rtkp.train.loop import train
from rtkp.train.steps import auxiliary_heatmap_loss, coke_step

SMALL = ["model.input_size=[128, 96]", "augment.crop_size=[64, 64]", "augment.occluder=0.0"]


def _bump(cx: int, cy: int, size=(16, 16), sigma=1.5) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(float(size[0])), torch.arange(float(size[1])), indexing="ij")
    return torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))


def test_the_target_peaks_at_every_animal_and_hidden_keypoints_read_zero():
    # cell (x, y) of a stride-4 map is centred on input pixel (4x + 1.5, 4y + 1.5)
    kp = torch.tensor([[[[9.5, 9.5], [25.5, 9.5]], [[49.5, 41.5], [0.0, 0.0]]]])  # (1, 2 animals, 2 keypoints, 2)
    vis = torch.tensor([[[True, True], [True, False]]])
    right = torch.stack([torch.maximum(_bump(2, 2), _bump(12, 10)), _bump(6, 2)])[None]  # (1, K, h, w)
    assert auxiliary_heatmap_loss(right, kp, vis, 1.5).item() < 1e-6
    one_animal = right.clone()
    one_animal[0, 0] = _bump(2, 2)
    assert auxiliary_heatmap_loss(one_animal, kp, vis, 1.5).item() > 1.0
    at_hidden = right.clone()
    at_hidden[0, 1] = torch.maximum(_bump(6, 2), _bump(0, 0))  # the second animal's keypoint 1 is hidden
    assert auxiliary_heatmap_loss(at_hidden, kp, vis, 1.5).item() > 1.0


def test_the_step_adds_the_term_only_when_weighted_and_it_trains_the_features(tmp_path):
    data = load_dataset(write_dlc_project(tmp_path / "proj", n=4))

    def step(*sets):
        cfg = load_config(None, [*SMALL, "augment.empty_share=0.0", "augment.background_crop=0.0", *sets])
        batch = BatchMaker(data, cfg).draw(np.random.default_rng(0), 6)
        torch.manual_seed(0)
        net = KeypointNet("coke", 3, 16, 8, pretrained=False, aux_heatmap=cfg.coke.heatmap_weight > 0).eval()
        kp_bank, clutter_bank = KeypointBank(3, 16), ClutterBank(64, 16)
        kp_bank.prototypes = F.normalize(torch.randn(3, 16, generator=torch.Generator().manual_seed(1)), dim=1)
        kp_bank.counts[:] = 1
        loss, out, _ = coke_step(net, batch, np.random.default_rng(0), cfg, kp_bank, clutter_bank)
        loss.backward()
        return net, dict(out, total=loss.item())

    plain_net, plain = step("coke.heatmap_weight=0")
    net, weighted = step("coke.heatmap_weight=2.0")
    assert plain_net.aux_heatmap is None and "heatmap" not in plain and weighted["heatmap"] > 0
    same = {k: v for k, v in weighted.items() if k not in ("heatmap", "total")}
    assert same == {k: v for k, v in plain.items() if k != "total"}  # nothing else changes
    assert abs(weighted["total"] - plain["total"] - 2.0 * weighted["heatmap"]) < 1e-4
    assert net.aux_heatmap.weight.grad.abs().sum() > 0
    # the term reaches the features: the projection's gradient differs from the plain step's
    assert not torch.allclose(net.decoder.project.weight.grad, plain_net.decoder.project.weight.grad)


def test_the_model_folder_leaves_the_auxiliary_maps_out_and_the_checkpoint_keeps_them(tmp_path):
    data = load_dataset(write_dlc_project(tmp_path / "proj", n=4))
    cfg = load_config(None, [*SMALL, "train.steps=2", "coke.heatmap_weight=1.0", "augment.hard_every=1000"])
    out = tmp_path / "model"
    train(data, cfg, out, progress=False, keep_checkpoint=True)
    net, _, protos, _ = load_model(out)
    assert net.aux_heatmap is None and protos.shape == (3, cfg.model.feature_dim)
    from safetensors.torch import load_file

    assert not any("aux_heatmap" in k for k in load_file(str(out / "model.safetensors")))
    assert any(k.startswith("net.aux_heatmap.") for k in load_file(str(out / "checkpoint" / "state.safetensors")))


def test_the_term_needs_the_auxiliary_maps(tmp_path):
    data = load_dataset(write_dlc_project(tmp_path / "proj", n=4))
    cfg = load_config(None, [*SMALL, "coke.heatmap_weight=1.0"])
    batch = BatchMaker(data, cfg).draw(np.random.default_rng(0), 2)
    net = KeypointNet("coke", 3, 16, 8, pretrained=False)
    with pytest.raises(ConfigError, match="aux_heatmap"):
        coke_step(net, batch, np.random.default_rng(0), cfg, KeypointBank(3, 16), ClutterBank(64, 16))
