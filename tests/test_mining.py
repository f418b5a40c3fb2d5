"""Hard negatives: the miner finds the background cell a model confuses, never a labelled keypoint, and crops then
visit it."""

import numpy as np
import torch
from conftest import write_dlc_project

from rtkp.config import load_config
from rtkp.data.load import load_dataset
from rtkp.train.batches import BatchMaker, clutter_points
from rtkp.train.mining import model_view


def _maker(tmp_path, *sets):
    data = load_dataset(write_dlc_project(tmp_path / "proj", n=4))
    cfg = load_config(None, ["model.input_size=[128, 96]", "augment.crop_size=[64, 64]", *sets])
    return BatchMaker(data, cfg)


def _score_maps_with_a_planted_spot(maker, spot_cell):
    """Maps that are hottest on every labelled keypoint (which the miner must mask) and next on `spot_cell`."""
    views = [model_view(im, s) for im, s in zip(maker.images, maker.scales)]

    def score_maps(image):
        i = next(j for j, (v, _) in enumerate(views) if v.shape == image.shape[1:] and np.array_equal(v, image[0]))
        h, w = image.shape[1] // 4, image.shape[2] // 4
        maps = torch.zeros(3, h, w)
        maps[1, spot_cell[1], spot_cell[0]] = 0.9
        for x, y in maker.keypoints[i][maker.visible[i]] * views[i][1]:
            maps[:, int(np.clip(y // 4, 0, h - 1)), int(np.clip(x // 4, 0, w - 1))] = 1.0
        return maps

    return score_maps


def test_the_miner_finds_a_planted_confusing_spot_and_never_a_labelled_keypoint(tmp_path):
    maker = _maker(tmp_path)
    spot_cell = (29, 3)
    maker.hard.refresh(_score_maps_with_a_planted_spot(maker, spot_cell), maker, np.random.default_rng(0), frames=4)
    for i in range(4):
        assert maker.hard.has(i)
        _, s = model_view(maker.images[i], maker.scales[i])
        expect = ((np.array(spot_cell) + 0.5) * 4 - 0.5 + 0.5) / s - 0.5  # the spot's cell centre in source pixels
        np.testing.assert_allclose(maker.hard.points[i][0], expect, atol=1e-3)
        kp = maker.keypoints[i][maker.visible[i]]
        assert np.linalg.norm(maker.hard.points[i][:, None] - kp[None], axis=2).min() > 4 / s.max()


def test_crops_are_centred_on_hard_negatives_and_sample_them_as_clutter(tmp_path):
    maker = _maker(tmp_path, "augment.hard_crop=1.0", "augment.occluder=0.0")
    maker.hard.refresh(_score_maps_with_a_planted_spot(maker, (29, 3)), maker, np.random.default_rng(0), frames=4)
    rng = np.random.default_rng(1)
    batch = maker.draw(rng, 8)
    assert not torch.isnan(batch.anchors).any()  # every crop was a hard crop
    np.testing.assert_allclose(batch.anchors.numpy(), np.full((8, 2), 31.5))  # the 64×64 crop's centre
    points = clutter_points(rng, batch, per_image=6, min_cells=0.0)
    # the anchor's cell (one of the two whose centres are 2 px from the crop's centre) comes first among the clutter
    assert (np.abs(points[:, 0].numpy() - 31.5) == 2).all()
    plain = _maker(tmp_path / "b", "augment.hard_crop=0.0").draw(np.random.default_rng(1), 8)
    assert torch.isnan(plain.anchors).all()


def test_a_hidden_keypoints_best_match_in_the_crop_becomes_a_negative_but_never_a_visible_keypoint():
    import torch.nn.functional as F

    from rtkp.train.batches import Batch
    from rtkp.train.steps import hidden_peaks

    d, h, w = 4, 10, 10
    protos = torch.eye(d)[:2]  # keypoint 0 and keypoint 1
    feats = F.normalize(torch.ones(1, d, h, w) * torch.tensor([0.0, 0.0, 1.0, 0.0]).view(1, d, 1, 1), dim=1)
    feats[0, :, 2, 2] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # keypoint 0's visible position (cell (2, 2))
    feats[0, :, 7, 8] = F.normalize(torch.tensor([0.9, 0.0, 0.3, 0.0]), dim=0)  # keypoint 0 look-alike elsewhere
    feats[0, :, 5, 5] = F.normalize(torch.tensor([0.0, 0.8, 0.6, 0.0]), dim=0)  # best match of hidden keypoint 1
    keypoints = torch.tensor([[[2 * 4 + 1.5, 2 * 4 + 1.5], [0.0, 0.0]]])
    batch = Batch(torch.zeros(1, h * 4, w * 4, 3, dtype=torch.uint8), keypoints, torch.tensor([[True, False]]))
    out = hidden_peaks(feats, protos, batch, min_cells=3.0)
    torch.testing.assert_close(out, feats[0, :, 5, 5][None])
    # with no keypoint visible nothing is masked: keypoint 0's best match anywhere (its own look) is the negative
    batch.visible[0, 0] = False
    out = hidden_peaks(feats, protos, batch, min_cells=3.0)
    assert len(out) == 2  # both keypoints hidden
    torch.testing.assert_close(out[0], feats[0, :, 2, 2])
