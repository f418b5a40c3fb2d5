"""The self-supervised equivariance term: warps, point correspondence, the loss, and a training run that uses it."""

import json

import numpy as np
import torch
import torch.nn.functional as F
from conftest import SMALL_TRAIN

from rtkp.cli import main
from rtkp.model.equivariance import apply_warps, equivariance_loss, grid_points, random_warps, warp_images


def test_a_point_lands_where_the_warp_says():
    rng = np.random.default_rng(3)
    images = torch.zeros(4, 64, 96, 3)
    images[:, 30, 41] = 255  # one bright pixel at (x=41, y=30)
    warps = random_warps(rng, 4, (96, 64), rotation=40, scale=(0.8, 1.25), shift=0.1)
    expected = apply_warps(torch.tensor([[[41.0, 30.0]]]).expand(4, 1, 2), warps)[:, 0]
    warped = warp_images(images, warps)[..., 0]
    for i in range(4):
        ys, xs = torch.nonzero(warped[i] > 0, as_tuple=True)
        weights = warped[i][ys, xs]
        centre = torch.stack([(xs * weights).sum(), (ys * weights).sum()]) / weights.sum()
        assert torch.dist(centre, expected[i]) < 0.6, (i, centre, expected[i])


def test_warps_vary_and_stay_within_their_ranges():
    rng = np.random.default_rng(0)
    warps = random_warps(rng, 200, (160, 160), rotation=30, scale=(0.8, 1.25), shift=0.1)
    m = warps[:, :, :2]
    scales = torch.sqrt(torch.det(m))
    angles = torch.rad2deg(torch.atan2(m[:, 1, 0], m[:, 0, 0]))
    assert 0.79 < scales.min() < 0.85 and 1.2 < scales.max() < 1.26
    assert -30.1 < angles.min() < -25 and 25 < angles.max() < 30.1


def test_the_loss_rewards_features_that_follow_the_scene():
    rng = np.random.default_rng(1)
    d, h, w = 32, 16, 16
    points = grid_points(rng, 2, (64, 64), 4)
    features = F.normalize(torch.randn(2, d, h, w), dim=1)
    same = equivariance_loss(features, features, points, points, stride=4, temperature=0.07)
    other = F.normalize(torch.randn(2, d, h, w), dim=1)
    unrelated = equivariance_loss(features, other, points, points, stride=4, temperature=0.07)
    assert same < 0.05 and unrelated > 1.0
    # points whose image leaves the warped view are left out rather than matched to the border
    outside = points.clone()
    outside[:, 8:] += 200
    assert equivariance_loss(features, features, points, outside, stride=4, temperature=0.07) < 0.05


def test_training_with_the_term_reports_it(dlc_project, tmp_path):
    names = [f"labeled-data/clip/img{i:03d}.png" for i in range(12)]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": names[:9], "test": names[9:]}))
    out = tmp_path / "eq"
    args = ["train", "--data", str(dlc_project), "--split", str(split), "--out", str(out), "--quiet", "--no-eval"]
    args += ["--set", "train.steps=3", "--set", "coke.equivariance_weight=1.0", *SMALL_TRAIN]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["final_loss"]["eq"] > 0
    assert manifest["training"]["config"]["coke"]["equivariance_weight"] == 1.0
