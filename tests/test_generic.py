"""Generic features for taught keypoints (rtkp.model.generic, rtkp.graphs.prototypes): the graph's generic variant
matches a row's generic part against frozen ImageNet taps, leaves trained rows as they were, and every backend
switches to it while a row in use has a generic part, and back when none has."""

import hashlib
import json
import sys
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from conftest import make_tiny_model, render_scene
from fake_tensorrt import make_fake_tensorrt

from rtkp.backends import read_model_info
from rtkp.backends.onnxruntime import OnnxRuntimeBackend
from rtkp.backends.tensorrt import TensorRTBackend
from rtkp.backends.torch import TorchBackend
from rtkp.graphs import prototypes as layout
from rtkp.graphs.exports_index import GENERIC_VERSION
from rtkp.graphs.tensorrt import EngineKey
from rtkp.model import generic
from rtkp.teach.features import compose, keypoint_rows, shares
from rtkp.teach.keypoint_set import KeypointSet, Taught
from rtkp.teach.saved import read_taught, save_keypoint_set
from rtkp.teach.shots import ShotReader, teach, teach_keypoint

SIZE = (128, 96)
D = 32  # the tiny model's feature width


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("model") / "model", SIZE)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    return np.stack([render_scene(rng, SIZE)[0] for _ in range(3)])


def test_the_row_layout_is_the_branch_s():
    assert layout.GENERIC_CHANNELS == generic.GENERIC_CHANNELS and layout.ANCHOR_SCORE == generic.ANCHOR_SCORE
    assert layout.ANCHOR_EVIDENCE == generic.ANCHOR_EVIDENCE
    assert layout.GENERIC_DIM == sum(generic.GENERIC_CHANNELS) == 448
    assert layout.reach_index(D) == D + 448 and layout.ring_columns(D) == slice(D + 449, D + 462)
    assert layout.graph_width(D, True) == D + 448 + 1 + 13 and layout.graph_width(D, False) == D
    parts = layout.row_parts(D)
    assert [(p.start, p.stop) for p in parts] == [(0, 32), (32, 64), (64, 160), (160, 480)]
    assert abs(shares(D + layout.GENERIC_DIM, D).sum() - 1) < 1e-12 and list(shares(D, D)) == [1.0]


def test_matching_at_the_taps_resolution_equals_matching_the_upsampled_taps():
    torch.manual_seed(0)
    taps = [
        torch.nn.functional.normalize(torch.randn(2, c, 24 // s, 32 // s), dim=1)
        for c, s in zip((32, 96, 320), (2, 4, 8))
    ]
    protos = torch.randn(5, layout.GENERIC_DIM)
    fast = generic.generic_similarity(taps, protos, (24, 32))
    slow = torch.einsum("bghw,kg->bkhw", generic.generic_features(taps, (24, 32)), protos)
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)


def _backend(kind, info, monkeypatch):
    if kind == "onnxruntime":
        return OnnxRuntimeBackend(info, threads=1)
    if kind == "torch":
        return TorchBackend(info)
    trt = make_fake_tensorrt("10.3.0")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return TensorRTBackend(info, fp16=False, device="cpu")


@pytest.mark.parametrize("kind", ["onnxruntime", "torch", "tensorrt-10"])
def test_a_row_with_a_generic_part_runs_the_generic_graph_and_trained_rows_stay_as_they_were(
    model_dir, images, kind, monkeypatch
):
    info = read_model_info(model_dir)
    backend = _backend(kind, info, monkeypatch)
    before = backend.infer(images)
    assert backend.features(images).shape == (3, D, 24, 32)
    feats = backend.features(images, generic=True)
    width = D + layout.GENERIC_DIM
    assert feats.shape == (3, width, 24, 32)  # the features: trained and generic parts (a row adds its reach)
    np.testing.assert_allclose(np.linalg.norm(feats[:, :D], axis=1), 1.0, atol=1e-3)
    for part in layout.row_parts(D)[1:]:  # the taps are unit at their own resolution, upsampled bilinearly
        norms = np.linalg.norm(feats[:, part], axis=1)
        assert norms.max() < 1.0 + 1e-3 and np.median(norms) > 0.5
    # a row taught at one cell of frame 0: the generic parts of the feature there, a quarter of the trained part
    y, x = 10, 20
    row = layout.with_width(compose(feats[0, :, y, x].astype(np.float64), D)[None], layout.graph_width(D, True))[0]
    rows = np.concatenate([layout.with_width(info.prototypes, len(row)), row[None]])  # reach 0, no rings: anywhere
    backend.set_prototypes(rows, info.clutter)
    assert backend.generic
    out = backend.infer(images)
    assert out.shape == (3, 4, 4)
    np.testing.assert_allclose(out[:, :3], before, atol=1e-4)  # trained rows: as in the plain graph
    cell = np.array([(x + 0.5) * 4 - 0.5, (y + 0.5) * 4 - 0.5])
    assert np.linalg.norm(out[0, 3, :2] - cell) <= 6.0, (out[0, 3, :2], cell)  # found where it was taught
    # its score and clutter score are what teaching computes from the features at its peak (one rule, two places)
    mine = backend.features(images[:1])[0]  # the generic graph is in use: its features, trained and generic parts
    py, px = np.unravel_index(np.einsum("whx,w->hx", mine, row[:width]).argmax(), mine.shape[1:])
    taught = keypoint_rows(mine[:, py, px], row, info.clutter)
    np.testing.assert_allclose(out[0, 3, 2:], taught[2:], atol=2e-3)
    assert abs(taught[3] - shares(width, D)[0] * (feats[0, :D, py, px] @ info.clutter.T).max()) < 1e-3
    # a ring: an anchor (a trained row: the taught cell's own trained feature, similarity 1 there) and the taught row
    # kept 70 ± 6 px from it: its peak is found at that distance from wherever the anchor's peak is
    full = layout.graph_width(D, True)
    ringed = layout.with_width(row[None], full)[0]
    cols = layout.ring_columns(D)
    ringed[cols.start : cols.start + 3] = (4, 70.0, 6.0)  # anchored on row 4
    anchor = feats[0, :D, y, x] / np.linalg.norm(feats[0, :D, y, x])
    ring_rows = np.concatenate(
        [layout.with_width(info.prototypes, full), ringed[None], layout.with_width(anchor[None], full)]
    )
    backend.set_prototypes(ring_rows, info.clutter)
    out = backend.infer(images)
    assert out[0, 4, 2] >= layout.ANCHOR_SCORE  # the anchor is found (where the tiny model's features match best)
    assert 70 - 6 - 6 <= np.linalg.norm(out[0, 3, :2] - out[0, 4, :2]) <= 70 + 6 + 6  # a cell's play either side
    assert not 70 - 6 - 6 <= np.linalg.norm(cell - out[0, 4, :2]) <= 70 + 6 + 6  # where it was without the ring
    np.testing.assert_allclose(out[:, :3], before, atol=1e-4)
    if kind == "onnxruntime":
        index = json.loads((model_dir / "exports.json").read_text())["exports"]
        assert any(e["generic"] == GENERIC_VERSION and e["file"].endswith("_generic.onnx") for e in index)
        # tracking runs the generic graph without its features output (teaching's session has it): same keypoints
        assert [o.name for o in backend.session.get_outputs()] == ["keypoints"]
        full = backend._session(True, features=True)
        assert {o.name for o in full.get_outputs()} == {"keypoints", "features"}
        np.testing.assert_allclose(full.run(["keypoints"], backend._feeds(images))[0][:, : len(ring_rows)], out)
    if kind == "tensorrt-10":
        trt = sys.modules["tensorrt"]
        assert sum(c[0] == "build" for c in trt.calls) == 2  # the plain engine, then the generic one
        assert backend.variants.keys() == {False, True}
    # the generic row removed: back to the plain graph, the same rows as before
    backend.set_prototypes(rows[:3], info.clutter)
    assert not backend.generic
    np.testing.assert_allclose(backend.infer(images), before, atol=1e-4)


def test_plain_engines_keep_their_cache_digest():
    """The generic field is left out of a plain engine's digest, so engines cached before it are still found."""
    plain = EngineKey("ab", "gpu", "10.3.0", (128, 96), 8, "fp16")
    fields = {k: v for k, v in asdict(plain).items() if k != "generic"}  # the key as it was before the field
    assert plain.digest() == hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    assert replace(plain, generic=1).digest() != plain.digest()


def test_teaching_reads_the_generic_taps_and_the_set_widens_and_narrows(model_dir, images, tmp_path):
    info = read_model_info(model_dir)
    backend = OnnxRuntimeBackend(info, threads=1)
    kset = KeypointSet.from_model(info.manifest, info.prototypes, info.clutter)
    assert kset.prototypes.shape == (3, D)
    points = np.array([[50.0, 40.0], [52.0, 41.0]], np.float32)
    index, lesson = teach_keypoint(kset, ShotReader(backend, 4), "new", list(images[:2]), points)
    width = D + layout.GENERIC_DIM
    assert index == 3 and kset.prototypes.shape == (4, layout.graph_width(D, True))
    assert kset.taught["new"].views.shape[-1] == width
    np.testing.assert_array_equal(kset.prototypes[:3, D:], 0)  # trained rows: a zero generic part, reach and rings
    np.testing.assert_array_equal(kset.prototypes[:3, :D], info.prototypes)
    lengths = [np.linalg.norm(lesson.prototype[p]) for p in layout.row_parts(D)]
    np.testing.assert_allclose(lengths, shares(width, D), atol=1e-5)  # each part's share of the score
    # its reach: from the farthest click to the nearest trained keypoint found in its frame (NaN: none found)
    taught = kset.taught["new"]
    assert taught.anchors.shape == (2, 3, 2) and taught.anchor_names == tuple(info.manifest.keypoint_names)
    nearest = taught.nearest_anchor()
    expected = 1.5 * np.nanmax(nearest) + 16 if np.isfinite(nearest).any() else 0.0
    assert lesson.prototype[layout.reach_index(D)] == pytest.approx(expected, abs=0.01)
    assert lesson.reach == pytest.approx(expected, abs=0.01)
    # saved and read back: the offsets and the names they belong to (so that more shots can join them)
    out = save_keypoint_set(model_dir, info.manifest, kset, tmp_path / "saved")
    back = read_taught(out, read_model_info(out).manifest)["new"]
    np.testing.assert_array_equal(back.anchors, taught.anchors)
    assert back.anchor_names == taught.anchor_names
    kset.remove("new")
    assert kset.prototypes.shape == (3, D)  # nothing generic left: the plain graph serves the set


def test_rings_come_from_the_nearest_trained_keypoints_in_the_shots(model_dir):
    """teach: the three trained keypoints nearest on average among those found in at least half of the shots, each
    at its mean distance, tolerance 0.25 × it + 1 cell + half the shots' spread; a removed anchor drops its ring and
    the rows after it are renumbered; a rename keeps the anchor."""
    rng = np.random.default_rng(0)
    d, width = D, D + layout.GENERIC_DIM
    views = np.stack([compose(rng.normal(size=(10, width)), d) for _ in range(3)]).astype(np.float32)  # (3, 10, W)
    names = ("snout", "tail", "ear", "paw", "eye")
    nan = np.nan
    table = np.array(
        [
            [10.0, 40.0, 20.0, 5.0, nan],  # paw nearest, but found in 1 of 3 shots only: no ring
            [12.0, 44.0, 22.0, nan, 30.0],
            [14.0, 42.0, 24.0, nan, nan],  # eye found in 1 of 3: no ring
        ],
        np.float32,
    )
    offsets = np.stack([table, np.zeros_like(table)], 2)  # every anchor along +x of the click ...
    offsets[:, 2] = np.stack([np.zeros(3), -table[:, 2]], 1)  # ... but the ear, along −y
    taught = Taught(views, views[:, :4], "data", offsets, names)
    clutter = compose(rng.normal(size=(8, d)), d).astype(np.float32)
    rows = {"snout": 0, "tail": 1, "ear": 2, "paw": 3, "eye": 4}
    lesson = teach(taught, clutter, 4, rows)
    rings = lesson.prototype[layout.ring_columns(d)]
    rings, axis = rings[:-4].reshape(3, 3), rings[-4:]
    # the axis: the ring anchors farthest apart in the shots, ear (row 2) and tail (row 1); the click lies on the
    # +1 side of the line ear → tail: (tail − ear) × (click − ear) = t·e > 0 in image coordinates
    np.testing.assert_allclose(axis, [2, 1, np.hypot(table[:, 1], table[:, 2]).mean(), 1], rtol=1e-6)
    np.testing.assert_allclose(rings[:, 0], [0, 2, 1])  # snout 12, ear 22, tail 42 px on average
    np.testing.assert_allclose(rings[:, 1], [12, 22, 42], rtol=1e-6)
    np.testing.assert_allclose(rings[:, 2], [0.25 * 12 + 4 + 2, 0.25 * 22 + 4 + 2, 0.25 * 42 + 4 + 2], rtol=1e-6)
    assert [r[0] for r in lesson.rings] == ["snout", "ear", "tail"] and lesson.side == ("ear", "tail", 1)
    assert lesson.placement()["side"] == {"from": "ear", "to": "tail", "sign": 1}
    assert lesson.reach == pytest.approx(1.5 * 14 + 16)  # the farthest shot's nearest anchor: 14 px
    assert not teach(taught, clutter, 4, {"tail": 1}).prototype[layout.ring_columns(d)][3:].any()  # one ring only
    # the set keeps the rings' rows right when a trained keypoint leaves it
    kset = KeypointSet(list(names), np.eye(5, d, dtype=np.float32), np.zeros(5), clutter, 8)
    kset.add("new", lesson.prototype, lesson.margin, taught)
    kset.remove("snout")  # anchored ring 0: dropped; ear (2 -> 1) and tail (1 -> 0) move up, in the scale too
    rings = kset.prototypes[-1, layout.ring_columns(d)]
    np.testing.assert_allclose(rings[:-4].reshape(3, 3), [[0, 0, 0], [1, 22, 11.5], [0, 42, 16.5]], rtol=1e-6)
    np.testing.assert_allclose(rings[-4:-2], [1, 0])
    kset.remove("tail")  # the axis's keypoint: no scale, no side any more
    assert not kset.prototypes[-1, layout.ring_columns(d)][-4:].any()
    # a multi-instance model's set anchors its reach and rings on every trained keypoint, or with a pose template on
    # its steady ones (spread about the mean pose at most the median)
    several = KeypointSet(list(names), np.eye(5, d, dtype=np.float32), np.zeros(5), clutter, 8, several=True)
    assert several.ring_rows() == several.anchor_rows() == several.reach_rows() == rows
    spread = {"snout": 0.3, "tail": 0.1, "ear": 0.3, "paw": 0.25, "eye": 0.05}  # snout, ear and paw move about
    steady = KeypointSet(
        list(names), np.eye(5, d, dtype=np.float32), np.zeros(5), clutter, 8, several=True, spread=spread
    )
    assert steady.ring_rows() == steady.reach_rows() == {"tail": 1, "paw": 3, "eye": 4}
    lesson = teach(taught, clutter, 4, steady.ring_rows(), steady.reach_rows())
    assert lesson.reach == pytest.approx(1.5 * 42 + 16)  # the farthest shot's nearest steady anchor: the tail, 42 px
    assert [r[0] for r in lesson.rings] == ["tail"]  # the only steady anchor found in the shots (snout, ear moved)
    assert kset.reach_rows() == kset.ring_rows() == kset.anchor_rows()  # one animal: every trained keypoint
    manifest = read_model_info(model_dir).manifest
    assert KeypointSet.from_model(replace(manifest, max_instances=2), np.eye(3, d), clutter).several
    assert not KeypointSet.from_model(manifest, np.eye(3, d), clutter).several
    kset.rename("ear", "left ear")
    assert kset.taught["new"].anchor_names == ("snout", "tail", "left ear", "paw", "eye")
    assert [r[0] for r in teach(kset.taught["new"], clutter, 4, kset.anchor_rows()).rings] == ["left ear"]
