import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rtkp.model.peaks import coke_keypoints, grid_to_pixels, heatmap_keypoints, refine_peaks


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
