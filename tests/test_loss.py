import torch
import torch.nn.functional as F

from rtkp.model.banks import ClutterBank, KeypointBank
from rtkp.model.loss import coke_loss, gaussian_targets, localisation_loss, sample_features


def test_loss_falls_and_prototypes_separate_on_a_toy_problem():
    """Features produced by a small learnable map from noisy, overlapping inputs: CoKe training must separate them."""
    torch.manual_seed(0)
    k, d, n_in = 4, 16, 8
    centres = torch.randn(k + 1, n_in) * 0.3  # k keypoint classes + one clutter class, initially close together
    encoder = torch.nn.Linear(n_in, d)
    opt = torch.optim.Adam(encoder.parameters(), lr=0.05)
    kp_bank, clutter_bank = KeypointBank(k, d, momentum=0.9), ClutterBank(64, d)
    losses = []
    for _ in range(150):
        labels = torch.arange(k).repeat(8)
        kp_in = centres[labels] + 0.1 * torch.randn(len(labels), n_in)
        cl_in = centres[k] + 0.1 * torch.randn(16, n_in)
        f = F.normalize(encoder(kp_in), dim=1)
        c = F.normalize(encoder(cl_in), dim=1)
        if not kp_bank.initialised.all():
            kp_bank.update(f, labels)
        mask = torch.zeros(len(labels), k, dtype=torch.bool)
        loss, _ = coke_loss(f, labels, mask, c, kp_bank.prototypes, clutter_bank.contents())
        opt.zero_grad()
        loss.backward()
        opt.step()
        kp_bank.update(f, labels)
        clutter_bank.push(c)
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[5:15]) / 10
    sims = kp_bank.prototypes @ kp_bank.prototypes.T
    off_diag = sims[~torch.eye(k, dtype=torch.bool)]
    assert off_diag.max() < 0.5
    clutter_to_protos = clutter_bank.contents() @ kp_bank.prototypes.T
    assert clutter_to_protos.max() < 0.5


def test_neighbour_mask_removes_a_negative():
    f = F.normalize(torch.tensor([[1.0, 0.2, 0.0]]), dim=1)
    protos = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.3, 0.0]]), dim=1)
    bank = torch.zeros(0, 3)
    plain, _ = coke_loss(f, torch.tensor([0]), torch.zeros(1, 2, dtype=torch.bool), bank, protos, bank)
    masked, _ = coke_loss(f, torch.tensor([0]), torch.tensor([[False, True]]), bank, protos, bank)
    assert masked.item() < 1e-6 < plain.item()


def test_sample_features_matches_cell_centres():
    feats = F.normalize(torch.randn(1, 4, 5, 6), dim=1)
    # cell (i=2, j=3) of a stride-4 map is centred on pixel (3·4 + 1.5, 2·4 + 1.5)
    out = sample_features(feats, torch.tensor([[[13.5, 9.5]]]), stride=4)
    torch.testing.assert_close(out[0, 0], feats[0, :, 2, 3])


def test_gaussian_targets_peak_at_keypoints():
    t = gaussian_targets(torch.tensor([[[13.5, 9.5], [0.0, 0.0]]]), torch.tensor([[True, False]]), (5, 6), 4, 1.0)
    assert t[0, 0, 2, 3] == 1 and t[0, 0].argmax() == 2 * 6 + 3
    assert t[0, 1].abs().sum() == 0


def test_localisation_loss_is_lowest_for_a_gaussian_peak_at_the_label_and_ignores_hidden_keypoints():
    d, h, w, t = 6, 12, 12, 0.07
    proto = F.normalize(torch.randn(1, d, generator=torch.Generator().manual_seed(0)), dim=1)
    other = F.normalize(torch.randn(1, d, generator=torch.Generator().manual_seed(1)), dim=1)
    label = torch.tensor([[[6.3 * 4 + 1.5, 4.0 * 4 + 1.5]]])  # input pixels of cell (6.3, 4.0)

    def features_peaking_at(cx, cy, sigma):
        ys, xs = torch.meshgrid(torch.arange(float(h)), torch.arange(float(w)), indexing="ij")
        a = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
        return F.normalize(proto[0].view(d, 1, 1) * a + other[0].view(d, 1, 1) * (1 - a), dim=0)[None]

    vis = torch.ones(1, 1, dtype=torch.bool)
    at_label = localisation_loss(features_peaking_at(6.3, 4.0, 1.5), proto, label, vis, 4, t, 1.0)
    shifted = localisation_loss(features_peaking_at(8.3, 4.0, 1.5), proto, label, vis, 4, t, 1.0)
    flat = localisation_loss(features_peaking_at(6.3, 4.0, 4.0), proto, label, vis, 4, t, 1.0)
    assert at_label < shifted and at_label < flat
    hidden = localisation_loss(features_peaking_at(8.3, 4.0, 1.5), proto, label, ~vis, 4, t, 1.0)
    assert hidden.item() == 0.0


def test_without_clutter_pull_background_is_only_pushed_away_from_prototypes():
    eye = torch.eye(4)
    prototypes, bank = eye[:2], eye[2:]  # prototypes along e1, e2; the clutter bank along e3, e4
    no_kp = torch.zeros(0, 4)

    def gradient(pull: bool) -> torch.Tensor:
        background = F.normalize(torch.tensor([[1.0, 0.0, 1.0, 0.0]]), dim=1).requires_grad_(True)
        loss, _ = coke_loss(
            no_kp, torch.zeros(0, dtype=torch.long), torch.zeros(0, 2, dtype=torch.bool), background, prototypes,
            bank, clutter_loss_weight=1.0, clutter_pull=pull,
        )  # fmt: skip
        loss.backward()
        return background.grad[0]

    pulled, pushed = gradient(True), gradient(False)
    assert pulled[2] < -1e-3  # descent moves it towards the bank entry e3
    assert pushed[2:].abs().max() < 1e-9  # no pull towards the bank: only the prototype directions
    assert pushed[0] > 1e-3 and pulled[0] > 1e-3  # both push it away from prototype e1
