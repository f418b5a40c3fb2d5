import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rtkp.model.peaks import coke_keypoints, grid_to_pixels, heatmap_keypoints, refine_peaks, softargmax_peaks


@pytest.mark.parametrize("x0, y0", [(7.3, 4.8), (10.0, 10.0), (3.62, 12.41), (15.49, 2.51)])
def test_refinement_recovers_a_planted_quadratic_peak(x0, y0):
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(20.0), indexing="ij")
    sim = 0.9 - 0.05 * ((xs - x0) ** 2 + (ys - y0) ** 2)
    pos, peak = refine_peaks(sim.view(1, 1, 16, 20))
    assert np.hypot(float(pos[0, 0, 0]) - x0, float(pos[0, 0, 1]) - y0) < 0.1
    assert peak.item() == pytest.approx(sim.max().item())


def test_heatmap_refinement_recovers_a_gaussian_peak_in_log_domain():
    x0, y0 = 9.27, 6.66
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(20.0), indexing="ij")
    heat = torch.exp(-((xs - x0) ** 2 + (ys - y0) ** 2) / (2 * 1.5**2))
    out = heatmap_keypoints(heat.view(1, 1, 16, 20), stride=4)
    expect = grid_to_pixels(torch.tensor([x0, y0]), 4)
    assert torch.dist(out[0, 0, :2], expect) < 0.4  # 0.1 cell = 0.4 px at stride 4
    assert out[0, 0, 3] == 0


def test_coke_keypoints_finds_each_prototype_and_reports_clutter_evidence():
    d, h, w = 8, 12, 14
    protos = F.normalize(torch.randn(2, d, generator=torch.Generator().manual_seed(0)), dim=1)
    clutter = F.normalize(torch.randn(3, d, generator=torch.Generator().manual_seed(1)), dim=1)
    feats = clutter[0].view(d, 1, 1).expand(d, h, w).clone()
    feats[:, 3, 5] = protos[0]
    feats[:, 9, 11] = protos[1]
    out, sim = coke_keypoints(feats.unsqueeze(0), protos, clutter, stride=4)
    assert sim.shape == (1, 2, h, w)
    torch.testing.assert_close(out[0, 0, :2], grid_to_pixels(torch.tensor([5.0, 3.0]), 4), atol=2.0, rtol=0)
    torch.testing.assert_close(out[0, 1, :2], grid_to_pixels(torch.tensor([11.0, 9.0]), 4), atol=2.0, rtol=0)
    torch.testing.assert_close(out[0, :, 2], torch.ones(2))
    expected_clutter = (protos @ clutter.T).amax(1)
    torch.testing.assert_close(out[0, :, 3], expected_clutter)


@pytest.mark.parametrize("x0, y0", [(7.3, 4.8), (10.0, 10.0), (3.62, 12.41), (1.2, 0.7)])
def test_softargmax_reads_back_the_label_of_the_peak_the_localisation_loss_trains(x0, y0):
    # the loss's target: softmax(sim / T) is a Gaussian of sigma 1 cell at the label, i.e. sim = -d²/2 · T + c
    t = 0.07
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(20.0), indexing="ij")
    sim = 0.95 - t * ((xs - x0) ** 2 + (ys - y0) ** 2) / 2
    pos, peak = softargmax_peaks(sim.view(1, 1, 16, 20), t)
    # a window of ±2 cells truncates the tails: bias < 0.1 cell inside the map (larger where the map's edge cuts it)
    assert np.hypot(float(pos[0, 0, 0]) - x0, float(pos[0, 0, 1]) - y0) < (0.1 if min(x0, y0) > 2 else 0.3)
    assert peak.item() == pytest.approx(sim.max().item())


def test_softargmax_is_not_pulled_to_a_distant_second_peak():
    t = 0.07
    sim = torch.full((1, 1, 12, 12), -0.5)
    sim[0, 0, 5, 5] = 0.9
    sim[0, 0, 5, 6] = 0.9 - t * 0.5  # a shoulder: the position moves towards it, by less than half a cell
    sim[0, 0, 0, 11] = 0.89  # far away: outside the window
    pos, _ = softargmax_peaks(sim, t)
    assert 5.0 < pos[0, 0, 0].item() < 5.5 and pos[0, 0, 1].item() == pytest.approx(5.0)


def test_a_penalty_chooses_the_peak_but_does_not_pull_its_position():
    """The placement penalty (taught keypoints' rings) picks the cell; the window reads the similarity itself, so a
    ring's edge beside the peak does not move it, and the score is the penalised one."""
    t = 0.07
    sim = torch.full((1, 1, 12, 12), -0.5)
    sim[0, 0, 2, 2] = 0.95  # the best cell, penalised away
    sim[0, 0, 5, 5] = 0.9
    sim[0, 0, 5, 6] = 0.9 - t * 0.5  # its shoulder, just beyond the ring's edge
    penalty = torch.zeros_like(sim)
    penalty[0, 0, :, 6:] = 0.5
    penalty[0, 0, 2, 2] = 0.5
    pos, score = softargmax_peaks(sim, t, penalty=penalty)
    plain, _ = softargmax_peaks(sim[..., 3:, 3:], t)  # the same peak, unpenalised, without the better cell
    assert pos[0, 0, 1].item() == pytest.approx(5.0) and 5.0 < pos[0, 0, 0].item() < 5.5
    assert pos[0, 0, 0].item() == pytest.approx(plain[0, 0, 0].item() + 3)
    assert score.item() == pytest.approx(0.9)
    pos, score = softargmax_peaks(sim - penalty, t)  # what penalising the map itself would do: pulled inwards
    assert pos[0, 0, 0].item() < 5.01


def test_the_graph_refines_by_softargmax_only_for_models_trained_for_it():
    d, h, w = 4, 10, 10
    protos = F.normalize(torch.randn(1, d, generator=torch.Generator().manual_seed(0)), dim=1)
    clutter = -protos
    ys, xs = torch.meshgrid(torch.arange(float(h)), torch.arange(float(w)), indexing="ij")
    weight = torch.exp(-((xs - 4.3) ** 2 + (ys - 6.0) ** 2) / 2)  # a blend: similarity falls off around (4.3, 6)
    feats = F.normalize(protos[0].view(d, 1, 1) * weight + clutter[0].view(d, 1, 1) * 0.3, dim=0)
    quad, _ = coke_keypoints(feats[None], protos, clutter, 4)
    soft, _ = coke_keypoints(feats[None], protos, clutter, 4, softargmax_temperature=0.07)
    assert not torch.allclose(quad[0, 0, :2], soft[0, 0, :2])
    assert quad[0, 0, 2] == soft[0, 0, 2]  # the score is the peak cell's similarity either way
