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
from rtkp.teach.keypoint_set import KeypointSet
from rtkp.teach.shots import ShotReader, teach_keypoint

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
    assert layout.GENERIC_DIM == sum(generic.GENERIC_CHANNELS) == 448
    assert layout.graph_width(D, True) == D + 448 + 1 and layout.reach_index(D) == D + 448
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
    row = np.append(compose(feats[0, :, y, x].astype(np.float64), D), 0.0).astype(np.float32)  # reach 0: anywhere
    rows = np.concatenate([layout.with_width(info.prototypes, width + 1), row[None]])
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
    if kind == "onnxruntime":
        index = json.loads((model_dir / "exports.json").read_text())["exports"]
        assert any(e["generic"] == GENERIC_VERSION and e["file"].endswith("_generic.onnx") for e in index)
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


def test_teaching_reads_the_generic_taps_and_the_set_widens_and_narrows(model_dir, images):
    info = read_model_info(model_dir)
    backend = OnnxRuntimeBackend(info, threads=1)
    kset = KeypointSet.from_model(info.manifest, info.prototypes, info.clutter)
    assert kset.prototypes.shape == (3, D)
    points = np.array([[50.0, 40.0], [52.0, 41.0]], np.float32)
    index, lesson = teach_keypoint(kset, ShotReader(backend, 4), "new", list(images[:2]), points)
    width = D + layout.GENERIC_DIM
    assert index == 3 and kset.prototypes.shape == (4, width + 1) and kset.taught["new"].views.shape[-1] == width
    np.testing.assert_array_equal(kset.prototypes[:3, D:], 0)  # trained rows: a zero generic part and reach
    np.testing.assert_array_equal(kset.prototypes[:3, :D], info.prototypes)
    lengths = [np.linalg.norm(lesson.prototype[p]) for p in layout.row_parts(D)]
    np.testing.assert_allclose(lengths, shares(width, D), atol=1e-5)  # each part's share of the score
    # its reach: from the farthest click to the nearest trained keypoint found in its frame (NaN: none found)
    anchors = kset.taught["new"].anchors
    assert anchors.shape == (2,)
    expected = 1.5 * np.nanmax(anchors) + 16 if np.isfinite(anchors).any() else 0.0
    assert lesson.prototype[-1] == pytest.approx(expected, abs=0.01) and lesson.reach == pytest.approx(
        expected, abs=0.01
    )
    kset.remove("new")
    assert kset.prototypes.shape == (3, D)  # nothing generic left: the plain graph serves the set


def test_a_taught_row_stays_within_its_reach_of_a_trained_keypoint():
    """within_reach: the taught row's best cell far from every anchor loses to a weaker one near an anchor."""
    sim = torch.full((1, 2, 20, 20), -0.5)
    sim[0, 0, 5, 5] = 0.9  # row 0, trained: its peak (anchor) at cell (5, 5)
    sim[0, 1, 15, 15] = 0.8  # row 1, taught: its best cell is far from the anchor ...
    sim[0, 1, 6, 7] = 0.6  # ... a weaker one is near it
    trained, reach = torch.tensor([True, False]), torch.tensor([0.0, 12.0])  # 12 px = 3 cells at stride 4
    out = generic.within_reach(sim, trained, reach, 4)
    assert int(out[0, 1].argmax()) == 6 * 20 + 7 and torch.equal(out[0, 0], sim[0, 0])
    assert int(generic.within_reach(sim, trained, torch.zeros(2), 4)[0, 1].argmax()) == 15 * 20 + 15  # no reach
    weak = sim.clone()
    weak[0, 0, 5, 5] = 0.4  # no anchor reaches ANCHOR_SCORE: nothing changes where the row peaks
    assert int(generic.within_reach(weak, trained, reach, 4)[0, 1].argmax()) == 15 * 20 + 15
