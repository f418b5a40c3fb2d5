"""The coordinate term (`coke.coordinate_weight`): the position the graph reads around a label, against the label."""

import numpy as np
import torch
import torch.nn.functional as F
from conftest import write_dlc_project

from rtkp.config import load_config
from rtkp.data.load import load_dataset
from rtkp.model.banks import ClutterBank, KeypointBank
from rtkp.model.loss import coordinate_loss
from rtkp.model.network import KeypointNet
from rtkp.model.peaks import softargmax_peaks
from rtkp.train.batches import BatchMaker
from rtkp.train.steps import coke_step

D, H, W, T = 6, 12, 12, 0.07
PROTO = F.normalize(torch.randn(1, D, generator=torch.Generator().manual_seed(0)), dim=1)
OTHER = F.normalize(torch.randn(1, D, generator=torch.Generator().manual_seed(1)), dim=1)
LABEL = torch.tensor([[[6.3 * 4 + 1.5, 4.0 * 4 + 1.5]]])  # input pixels of cell (6.3, 4.0)


def _features_peaking_at(cx, cy, sigma=1.0):
    ys, xs = torch.meshgrid(torch.arange(float(H)), torch.arange(float(W)), indexing="ij")
    a = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
    return F.normalize(PROTO[0].view(D, 1, 1) * a + OTHER[0].view(D, 1, 1) * (1 - a), dim=0)[None]


def test_the_term_is_the_distance_from_the_decoded_position_to_the_label():
    vis = torch.ones(1, 1, dtype=torch.bool)
    feats = _features_peaking_at(7.3, 4.0)  # one cell to the right of the label
    decoded, _ = softargmax_peaks(torch.einsum("bdhw,kd->bkhw", feats, PROTO), T)
    off = coordinate_loss(feats, PROTO, LABEL, vis, 4, T)
    assert abs(off.item() - float(torch.dist(decoded[0, 0], torch.tensor([6.3, 4.0])))) < 0.05
    assert off.item() > 0.5
    assert coordinate_loss(_features_peaking_at(6.3, 4.0), PROTO, LABEL, vis, 4, T) < off / 3
    assert coordinate_loss(feats, PROTO, LABEL, ~vis, 4, T).item() == 0.0  # hidden keypoints add nothing
    # several animals: each visible animal's window is read (the second one here sits on its peak)
    two = torch.cat([LABEL[:, None], torch.tensor([[[[7.3 * 4 + 1.5, 4.0 * 4 + 1.5]]]])], 1)  # (1, 2, 1, 2)
    both = coordinate_loss(feats, PROTO, two, torch.ones(1, 2, 1, dtype=torch.bool), 4, T)
    assert 0.3 * off < both < 0.7 * off


def test_its_gradient_moves_the_decoded_position_onto_the_label():
    raw = _features_peaking_at(7.3, 4.5).clone().requires_grad_(True)
    opt = torch.optim.Adam([raw], lr=0.02)
    vis = torch.ones(1, 1, dtype=torch.bool)
    first = coordinate_loss(F.normalize(raw, dim=1), PROTO, LABEL, vis, 4, T).item()
    for _ in range(150):
        opt.zero_grad()
        last = coordinate_loss(F.normalize(raw, dim=1), PROTO, LABEL, vis, 4, T)
        last.backward()
        opt.step()
    assert first > 1.0 and last.item() < 0.05
    # the graph's own reading (the window around the best cell, which need not be the label's) follows
    decoded, _ = softargmax_peaks(torch.einsum("bdhw,kd->bkhw", F.normalize(raw, dim=1), PROTO), T)
    assert torch.dist(decoded[0, 0], torch.tensor([6.3, 4.0])) < 0.25


def test_the_step_adds_the_term_only_when_weighted(tmp_path):
    data = load_dataset(write_dlc_project(tmp_path / "proj", n=4))
    small = ["model.input_size=[128, 96]", "augment.crop_size=[64, 64]", "augment.occluder=0.0"]

    def stats(*sets):
        cfg = load_config(None, [*small, "augment.empty_share=0.0", "augment.background_crop=0.0", *sets])
        batch = BatchMaker(data, cfg).draw(np.random.default_rng(0), 6)
        torch.manual_seed(0)
        net = KeypointNet("coke", 3, 16, 8, pretrained=False, aux_heatmap=True).eval()
        kp_bank, clutter_bank = KeypointBank(3, 16), ClutterBank(64, 16)
        kp_bank.prototypes = F.normalize(torch.randn(3, 16), dim=1)
        kp_bank.counts[:] = 1
        with torch.no_grad():
            _, out, _ = coke_step(net, batch, np.random.default_rng(0), cfg, kp_bank, clutter_bank)
        return out

    plain = stats()
    weighted = stats("coke.coordinate_weight=2.0")
    assert "coord" not in plain and weighted["coord"] > 0
    assert {k: v for k, v in weighted.items() if k != "coord"} == plain  # nothing else changes
