import json

import pytest
import torch

from rtkp.errors import ModelError
from rtkp.model.checkpoint import load_model, save_model
from rtkp.model.graph import InferenceGraph
from rtkp.model.network import KeypointNet


def _manifest(head):
    return {
        "head": head,
        "keypoint_names": ["a", "b"],
        "input_size": [64, 64],
        "feature_dim": 16,
        "decoder_channels": 8,
        "backbone": "mobilenet_v2",
        "visibility_margin": 0.0,
    }


@pytest.mark.parametrize("head", ["coke", "heatmap"])
def test_round_trip_gives_the_same_predictions(tmp_path, head):
    torch.manual_seed(0)
    net = KeypointNet(head, 2, 16, 8, pretrained=False).eval()
    protos = torch.nn.functional.normalize(torch.randn(2, 16), dim=1)
    clutter = torch.nn.functional.normalize(torch.randn(5, 16), dim=1)
    save_model(tmp_path / "m", net, _manifest(head), protos if head == "coke" else None, clutter)
    net2, manifest, p2, c2 = load_model(tmp_path / "m")
    assert manifest.head == head and manifest.weights_sha256
    images = torch.randint(0, 255, (2, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        a = InferenceGraph(net)(images, protos, clutter)
        b = InferenceGraph(net2)(images, p2, c2)
    # weights are stored in fp16: positions agree to a fraction of a pixel, scores closely
    assert (a[..., :2] - b[..., :2]).abs().max() < 1.0
    assert (a[..., 2:] - b[..., 2:]).abs().max() < 0.02
    if head == "coke":
        torch.testing.assert_close(p2, protos)


def test_corrupt_and_mismatched_files_are_refused(tmp_path):
    net = KeypointNet("coke", 2, 16, 8, pretrained=False)
    folder = tmp_path / "m"
    save_model(folder, net, _manifest("coke"), torch.zeros(2, 16), torch.zeros(3, 16))
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="checksum"):
        load_model(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.pop("weights_sha256")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="corrupt or truncated"):
        load_model(folder)
    manifest["manifest_version"] = 99
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="version 99"):
        load_model(folder)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(ModelError, match="corrupt manifest"):
        load_model(folder)
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "nothing")


def test_weights_do_not_fit_manifest(tmp_path):
    net = KeypointNet("coke", 2, 16, 8, pretrained=False)
    folder = tmp_path / "m"
    save_model(folder, net, dict(_manifest("coke"), feature_dim=32), torch.zeros(2, 16), torch.zeros(3, 16))
    with pytest.raises(ModelError, match="do not fit"):
        load_model(folder)


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_every_file_of_a_model_folder_follows_the_umask(tmp_path, umask):
    import os

    from conftest import make_tiny_model

    from rtkp.model.checkpoint import save_training_state

    old = os.umask(umask)
    try:
        folder = make_tiny_model(tmp_path / "m")
        net = KeypointNet("coke", 2, 16, 8, pretrained=False)
        optimizer = torch.optim.AdamW(net.parameters())
        net(torch.zeros(1, 64, 64, 3, dtype=torch.uint8)).sum().backward()
        optimizer.step()
        save_training_state(tmp_path / "ckpt", 1, net, optimizer, {}, {})
    finally:
        os.umask(old)
    for where in (folder, tmp_path / "ckpt"):
        modes = {p.name: oct(p.stat().st_mode & 0o777) for p in where.iterdir()}
        assert len(modes) == 2 and set(modes.values()) == {oct(0o666 & ~umask)}, modes


def test_a_manifest_is_typed_and_rewritten_with_every_key_it_does_not_model(tmp_path):
    from rtkp.manifest import read_manifest, write_manifest

    net = KeypointNet("coke", 2, 16, 8, pretrained=False)
    folder = tmp_path / "m"
    written = dict(_manifest("coke"), skeleton=[[0, 1]], from_a_newer_rtkp={"x": [1, 2]}, training={"steps": 3})
    saved = save_model(folder, net, written, torch.zeros(2, 16), torch.zeros(3, 16))
    m = read_manifest(folder)
    assert m == saved and (m.head, m.keypoint_names, m.input_size, m.skeleton) == (
        "coke",
        ("a", "b"),
        (64, 64),
        ((0, 1),),
    )
    assert (m.stride, m.peak, m.max_keypoints, m.added_keypoints, m.weights) == (4, None, None, (), "model.safetensors")
    raw = json.loads((folder / "manifest.json").read_text())
    assert list(raw)[:3] == ["head", "keypoint_names", "input_size"] and raw["from_a_newer_rtkp"] == {"x": [1, 2]}
    assert "stride" not in raw  # a default is not written into a folder that did not have the key
    write_manifest(folder, m.updated(drop=("training",), keypoint_names=["c", "d"], note="kept"))
    again = json.loads((folder / "manifest.json").read_text())
    want = {k: v for k, v in dict(raw, keypoint_names=["c", "d"], note="kept").items() if k != "training"}
    assert again == want and list(again) == list(want)
    assert m.keypoint_names == ("a", "b") and m.max_keypoints is None and "training" in m.extra
    bad = dict(raw, input_size="wide")
    (folder / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(ModelError, match="input_size"):
        read_manifest(folder)
