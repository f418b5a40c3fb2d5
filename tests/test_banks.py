import torch
import torch.nn.functional as F

from rtkp.model.banks import ClutterBank, KeypointBank


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_moving_average_update_formula():
    bank = KeypointBank(3, 8, momentum=0.9)
    first = _unit(3, 8, seed=1)
    bank.update(first, torch.arange(3))
    torch.testing.assert_close(bank.prototypes, first)  # initialised from the first batch
    feats = _unit(4, 8, seed=2)
    labels = torch.tensor([0, 0, 2, 2])
    bank.update(feats, labels)
    expect0 = F.normalize(0.9 * first[0] + 0.1 * feats[:2].mean(0), dim=0)
    expect2 = F.normalize(0.9 * first[2] + 0.1 * feats[2:].mean(0), dim=0)
    torch.testing.assert_close(bank.prototypes[0], expect0)
    torch.testing.assert_close(bank.prototypes[1], first[1])  # no sample, no change
    torch.testing.assert_close(bank.prototypes[2], expect2)
    assert bank.counts.tolist() == [3, 1, 3]


def test_cumulative_update_formula():
    bank = KeypointBank(1, 8, cumulative=True)
    a, b = _unit(2, 8, seed=3), _unit(3, 8, seed=4)
    bank.update(a, torch.zeros(2, dtype=torch.long))
    bank.update(b, torch.zeros(3, dtype=torch.long))
    theta_a = F.normalize(a.mean(0), dim=0)
    expect = F.normalize((2 * theta_a + b.sum(0)) / 5, dim=0)
    torch.testing.assert_close(bank.prototypes[0], expect)
    assert bank.counts.item() == 5


def test_clutter_fifo_order_and_size():
    bank = ClutterBank(5, 2)
    rows = torch.arange(16, dtype=torch.float32).view(8, 2)
    bank.push(rows[:3])
    assert bank.filled == 3
    torch.testing.assert_close(bank.contents(), rows[:3])
    bank.push(rows[3:7])  # wraps: oldest (row 0, 1) overwritten
    assert bank.filled == 5 and len(bank.contents()) == 5
    torch.testing.assert_close(bank.contents(), rows[2:7])
    bank.push(rows)  # more than the bank holds: keeps the newest 5
    torch.testing.assert_close(bank.contents(), rows[3:8])


def test_clutter_summary_is_unit_and_covers_clusters():
    centres = _unit(4, 16, seed=5)
    noise = 0.05 * torch.randn(400, 16, generator=torch.Generator().manual_seed(6))
    data = F.normalize(centres.repeat(100, 1) + noise, dim=1)
    bank = ClutterBank(400, 16)
    bank.push(data)
    summary = bank.summary(4)
    torch.testing.assert_close(summary.norm(dim=1), torch.ones(4))
    # every true cluster centre has a summary centre close to it
    assert (centres @ summary.T).amax(1).min() > 0.95
