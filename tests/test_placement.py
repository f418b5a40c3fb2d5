"""Where a taught keypoint is found (rtkp.model.generic.placement_penalty): its reach, rings and side, per animal,
and what teaching reads for them on several animals (each shot's own animal, the steady keypoints, the pose template
kept by name in saved folders)."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import make_tiny_model

from rtkp.backends import read_model_info
from rtkp.graphs import prototypes as layout
from rtkp.instances.stage import InstanceStage
from rtkp.model import generic
from rtkp.smoothing import SmoothingConfig
from rtkp.teach.keypoint_set import KeypointSet, Taught
from rtkp.teach.saved import save_keypoint_set
from rtkp.teach.shots import anchor_offsets

SIZE = (128, 96)
D = 32  # the tiny model's feature width


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("model") / "model", SIZE)


def within_reach(sim, *placement):
    """The maps a taught row's peak is chosen on: sim less its placement penalty (the graph's rule)."""
    return sim - generic.placement_penalty(sim, *placement)


def test_a_taught_row_keeps_its_distances_to_the_trained_keypoints():
    """within_reach with rings: the taught row's best cell at the wrong distance from its anchor (a mirror twin,
    the anchor itself) loses to a weaker one at the right distance; an anchor not found changes nothing."""
    sim = torch.full((1, 2, 20, 20), -0.5)
    sim[0, 0, 5, 5] = 0.9  # row 0, trained: its peak (anchor) at cell (5, 5)
    sim[0, 1, 5, 6] = 0.8  # row 1, taught: its best cell is right beside the anchor ...
    sim[0, 1, 5, 10] = 0.6  # ... the weaker one 5 cells (20 px) from it, where the shots put it
    trained, no_reach = torch.tensor([True, False]), torch.zeros(2)
    rings = torch.zeros(2, 13)
    rings[1, :3] = torch.tensor([0.0, 20.0, 6.0])  # anchored on row 0, 20 ± 6 px; no axis: scale 1
    out = within_reach(sim, trained, no_reach, 4, 1, rings)
    assert int(out[0, 1].argmax()) == 5 * 20 + 10 and torch.equal(out[0, 0], sim[0, 0])
    assert float(out[0, 1, 5, 6]) == pytest.approx(0.8 - generic.OFF_RING)
    assert int(within_reach(sim, trained, no_reach, 4, 1, torch.zeros(2, 13))[0, 1].argmax()) == 5 * 20 + 6
    weak = sim.clone()
    weak[0, 0, 5, 5] = 0.4  # the anchor is not found: nothing changes where the row peaks
    assert int(within_reach(weak, trained, no_reach, 4, 1, rings)[0, 1].argmax()) == 5 * 20 + 6
    # nor when its peak looks like clutter (a covered or absent keypoint's peak): evidence below ANCHOR_EVIDENCE
    feats = torch.nn.functional.normalize(torch.randn(1, 8, 20, 20, generator=torch.Generator().manual_seed(0)), dim=1)
    at_peak = feats[0, :, 5, 5]
    covered = within_reach(sim, trained, no_reach, 4, 1, rings, feats, at_peak[None])  # clutter score 1
    assert int(covered[0, 1].argmax()) == 5 * 20 + 6
    shown = within_reach(sim, trained, no_reach, 4, 1, rings, feats, -at_peak[None])  # clutter score −1
    assert int(shown[0, 1].argmax()) == 5 * 20 + 10
    # several animals: a ring is kept when some animal's anchor is at the distance
    two = sim.clone()
    two[0, 0, 15, 15] = 0.85  # a second animal's anchor
    two[0, 1, 15, 16] = 0.7  # beside it: off the ring for both animals
    out = within_reach(two, trained, no_reach, 4, 2, rings)
    assert float(out[0, 1, 5, 10]) == pytest.approx(0.6) and float(out[0, 1, 15, 16]) == pytest.approx(0.2)


def test_rings_scale_with_the_animal():
    """The rings' distances scale with the distance between the row's two scale keypoints now against the shots';
    the tolerance grows by the ring's distance times a cell over that distance (how well the scale is known)."""
    sim = torch.full((1, 3, 30, 30), -0.5)
    sim[0, 0, 5, 5] = 0.9  # anchors: rows 0 and 1, 16 cells (64 px) apart now; 32 px apart in the shots
    sim[0, 1, 5, 21] = 0.9
    sim[0, 2, 5, 8] = 0.8  # taught row 2: 3 cells (12 px) from row 0, what the shots showed at their scale ...
    sim[0, 2, 11, 5] = 0.6  # ... 6 cells (24 px) from it, twice that: where the shots put it at this scale
    trained = torch.tensor([True, True, False])
    rings = torch.zeros(3, 13)
    rings[2, :3] = torch.tensor([0.0, 12.0, 3.0])  # 12 ± 3 px from row 0 in the shots
    rings[2, 9:] = torch.tensor([0.0, 1.0, 32.0, 0.0])  # rows 0 and 1 were 32 px apart in the shots; no side
    out = within_reach(sim, trained, torch.zeros(3), 4, 1, rings)
    # scale 2: 24 ± (3 + 12 × 4/32) × 2 = 24 ± 9 px: the far cell (24 px) in, the near one (12 px) out
    assert int(out[0, 2].argmax()) == 11 * 30 + 5 and float(out[0, 2, 5, 8]) == pytest.approx(0.8 - generic.OFF_RING)
    rings[2, 11] = 64.0  # at the shots' scale: the nearer cell is at the ring
    assert int(within_reach(sim, trained, torch.zeros(3), 4, 1, rings)[0, 2].argmax()) == 5 * 30 + 8


def test_a_taught_row_stays_within_its_reach_of_a_trained_keypoint():
    """within_reach: the taught row's best cell far from every anchor loses to a weaker one near an anchor."""
    sim = torch.full((1, 2, 20, 20), -0.5)
    sim[0, 0, 5, 5] = 0.9  # row 0, trained: its peak (anchor) at cell (5, 5)
    sim[0, 1, 15, 15] = 0.8  # row 1, taught: its best cell is far from the anchor ...
    sim[0, 1, 6, 7] = 0.6  # ... a weaker one is near it
    trained, reach = torch.tensor([True, False]), torch.tensor([0.0, 12.0])  # 12 px = 3 cells at stride 4
    out = within_reach(sim, trained, reach, 4)
    assert int(out[0, 1].argmax()) == 6 * 20 + 7 and torch.equal(out[0, 0], sim[0, 0])
    assert int(within_reach(sim, trained, torch.zeros(2), 4)[0, 1].argmax()) == 15 * 20 + 15  # no reach
    weak = sim.clone()
    weak[0, 0, 5, 5] = 0.4  # no anchor reaches ANCHOR_SCORE: nothing changes where the row peaks
    assert int(within_reach(weak, trained, reach, 4)[0, 1].argmax()) == 15 * 20 + 15


def test_a_taught_row_keeps_to_its_side_of_the_axis():
    """A mirror twin: two cells as far from both axis keypoints, on either side of the line between them; the side
    from the shots decides, per animal (the line of the animal whose first axis keypoint is nearest)."""
    sim = torch.full((1, 3, 30, 30), -0.5)
    sim[0, 0, 5, 5] = 0.9  # animal 1's axis: row 0 at (y 5, x 5) -> row 1 at (5, 15), along +x
    sim[0, 1, 5, 15] = 0.9
    sim[0, 2, 2, 10] = 0.8  # taught row 2: the twin above the line (y < 5) scores higher ...
    sim[0, 2, 8, 10] = 0.6  # ... than the cell below it
    trained = torch.tensor([True, True, False])
    rings = torch.zeros(3, 13)
    rings[2, 9:] = torch.tensor([0.0, 1.0, 40.0, 1.0])  # side +1: (b − a) × (p − a) > 0, below a line along +x
    best = lambda r, peaks=1, m=sim: int(within_reach(m, trained, torch.zeros(3), 4, peaks, r)[0, 2].argmax())  # noqa: E731
    assert best(rings) == 8 * 30 + 10
    rings[2, 12] = -1.0
    assert best(rings) == 2 * 30 + 10
    rings[2, 12] = 0.0  # no side: the better cell
    assert best(rings) == 2 * 30 + 10
    # two animals: animal 2's axis at y 20; cell (17, 10) is below animal 1's line but above animal 2's, its own
    two = sim.clone()
    two[0, 0, 20, 5], two[0, 1, 20, 15] = 0.85, 0.85
    two[0, 2, 2, 10], two[0, 2, 8, 10] = -0.5, -0.5
    two[0, 2, 17, 10], two[0, 2, 23, 10] = 0.8, 0.6
    rings[2, 12] = 1.0
    assert best(rings, 2, two) == 23 * 30 + 10


def test_each_animal_scales_its_own_rings():
    """Several animals of different sizes: a cell's rings scale with the animal whose axis keypoint a is nearest it
    (not with the closest pair of a and b across animals)."""
    sim = torch.full((1, 3, 32, 32), -0.5)
    sim[0, 0, 5, 5], sim[0, 1, 5, 21] = 0.9, 0.9  # animal 1: a → b 16 cells, twice the shots' 8: scale 2
    sim[0, 0, 22, 5], sim[0, 1, 22, 13] = 0.85, 0.85  # animal 2: 8 cells: scale 1
    sim[0, 2, 5, 8], sim[0, 2, 5, 11] = 0.8, 0.6  # taught row near animal 1: 3 and 6 cells from its a
    sim[0, 2, 28, 5], sim[0, 2, 25, 5] = 0.8, 0.6  # near animal 2: 6 and 3 cells from its a
    trained = torch.tensor([True, True, False])
    rings = torch.zeros(3, 13)
    rings[2, :3] = torch.tensor([0.0, 12.0, 3.0])  # 12 ± 3 px (3 cells) from a in the shots
    rings[2, 9:] = torch.tensor([0.0, 1.0, 32.0, 0.0])  # a and b 32 px (8 cells) apart in the shots
    out = within_reach(sim, trained, torch.zeros(3), 4, 2, rings)[0, 2]
    assert float(out[5, 11]) == pytest.approx(0.6) and float(out[5, 8]) == pytest.approx(0.8 - generic.OFF_RING)
    assert float(out[25, 5]) == pytest.approx(0.6) and float(out[28, 5]) == pytest.approx(0.8 - generic.OFF_RING)


def test_an_animal_s_axis_pairs_its_keypoints_at_the_shots_distance():
    """Two animals side by side: animal 2's a is nearer animal 1's b than its own b. Its axis (and scale) pairs it
    with the b at the shots' distance, its own: the taught cell at the shots' distance from it keeps its score."""
    sim = torch.full((1, 3, 24, 24), -0.5)
    sim[0, 0, 5, 5], sim[0, 1, 5, 13] = 0.9, 0.9  # animal 1: a → b 8 cells, as in the shots
    sim[0, 0, 9, 14], sim[0, 1, 9, 22] = 0.85, 0.85  # animal 2: 8 cells too; its a is 4.1 cells from animal 1's b
    sim[0, 2, 12, 14] = 0.6  # the taught row 3 cells (12 px) from animal 2's a, where the shots put it
    trained = torch.tensor([True, True, False])
    rings = torch.zeros(3, 13)
    rings[2, :3] = torch.tensor([0.0, 12.0, 3.0])  # 12 ± 3 px from a in the shots
    rings[2, 9:] = torch.tensor([0.0, 1.0, 32.0, 0.0])  # a and b 32 px (8 cells) apart in the shots
    out = within_reach(sim, trained, torch.zeros(3), 4, 2, rings)[0, 2]
    assert float(out[12, 14]) == pytest.approx(0.6)  # paired with animal 1's b, its scale was 0.5: off its ring


def test_shots_measure_their_offsets_to_their_own_animal_s_keypoints():
    """anchor_offsets: with one peak per animal (the graph's P), the trained keypoint's peak nearest the click, not
    the best one (another animal's), and given the centre votes the peak whose vote meets the click's; with P = 1 the
    best; a peak below ANCHOR_SCORE is not found."""
    rng = np.random.default_rng(1)
    d, h, w = 8, 16, 16
    feats = rng.normal(size=(d, h, w))
    proto = np.zeros(d)
    proto[0] = 1.0
    feats[0] = -np.abs(feats[0])  # nowhere like the prototype ...
    feats[:, 2, 2] = proto  # ... but at another animal's keypoint (similarity 1) ...
    feats[:, 10, 10] = proto + 0.3 * np.eye(d)[1]  # ... and, a little less alike, at the clicked animal's
    feats /= np.linalg.norm(feats, axis=0, keepdims=True)
    click = np.array([9 * 4 + 1.5, 9 * 4 + 1.5])  # cell (9, 9)
    cell = lambda y, x: np.array([(x + 0.5) * 4 - 0.5, (y + 0.5) * 4 - 0.5]) - click  # noqa: E731
    np.testing.assert_allclose(anchor_offsets(feats, click, proto[None], 4, peaks=1)[0], cell(2, 2))
    np.testing.assert_allclose(anchor_offsets(feats, click, proto[None], 4, peaks=2)[0], cell(10, 10))
    assert np.isnan(anchor_offsets(feats, click, 0.45 * proto[None], 4, peaks=2)).all()  # similarity ≤ 0.45
    # with the centre head's votes: the peak of the animal the click votes for, even when another's is nearer (two
    # animals side by side: a wing tip nearer the other fly's abdomen than its own)
    centres = np.zeros((2, h, w))
    centre = np.array([3 * 4 + 1.5, 3 * 4 + 1.5])  # the far animal's centre
    centres[:, 2, 2] = centre - (cell(2, 2) + click)  # its keypoint's vote ...
    centres[:, 9, 9] = centre - click  # ... and the click's: the click is on the far animal
    np.testing.assert_allclose(anchor_offsets(feats, click, proto[None], 4, peaks=2, centres=centres)[0], cell(2, 2))
    centres[:, 9, 9] = cell(10, 10)  # the click votes for the near animal's centre, its keypoint's cell
    np.testing.assert_allclose(anchor_offsets(feats, click, proto[None], 4, peaks=2, centres=centres)[0], cell(10, 10))
    # one animal: the votes change nothing
    np.testing.assert_allclose(anchor_offsets(feats, click, proto[None], 4, peaks=1, centres=centres)[0], cell(2, 2))


def test_a_saved_set_keeps_the_pose_template_by_name(model_dir, tmp_path):
    """A folder saved with a taught keypoint keeps its pose template with its rows' names: the instance stage leaves
    it out (its rows are not the set's), the set still reads which trained keypoints hold still; a folder saved with
    the trained set keeps it as it was."""
    info = read_model_info(model_dir)
    names = list(info.manifest.keypoint_names)
    template = {"mean": [[0.0, 1.0], [0.0, 0.0], [0.0, -1.0]], "spread": [0.05, 0.3, 0.1], "midline": [0, 1, 2]}
    manifest = replace(info.manifest, pose_template=template, max_instances=2)
    kset = KeypointSet.from_model(manifest, info.prototypes, info.clutter)
    assert kset.spread == dict(zip(names, template["spread"])) and kset.reach_rows() == {names[0]: 0, names[2]: 2}
    same = read_model_info(save_keypoint_set(model_dir, manifest, kset, tmp_path / "same")).manifest
    assert same.pose_template == template and InstanceStage(same, 0.1, 2, SmoothingConfig()).body is not None
    row = np.zeros(layout.graph_width(D, True), np.float32)
    row[:D] = info.prototypes[0]
    width = D + layout.GENERIC_DIM
    kset.add("new", row, 0.1, Taught(row[None, None, :width], row[None, None, :width], "data"))
    saved = read_model_info(save_keypoint_set(model_dir, manifest, kset, tmp_path / "taught")).manifest
    assert saved.pose_template == dict(template, names=names)
    assert InstanceStage(saved, 0.1, 2, SmoothingConfig()).body is None
    back = KeypointSet.from_model(saved, np.zeros((4, D)), info.clutter)
    assert back.spread == kset.spread and back.reach_rows() == {names[0]: 0, names[2]: 2}
    # a renamed trained keypoint: the template's rows follow the rename; only renamed, the set keeps using it
    kset.remove("new")
    kset.rename(names[2], "renamed")
    renamed = read_model_info(save_keypoint_set(model_dir, manifest, kset, tmp_path / "renamed")).manifest
    assert renamed.pose_template == template and InstanceStage(renamed, 0.1, 2, SmoothingConfig()).body is not None
    again = KeypointSet.from_model(renamed, info.prototypes, info.clutter)
    assert again.reach_rows() == {names[0]: 0, "renamed": 2}
