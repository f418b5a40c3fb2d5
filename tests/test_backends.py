"""Export and backends on a small generated model: ONNX Runtime vs PyTorch parity, prototype swapping, FP16 graph,
and the TensorRT backend driven through a fake `tensorrt` module."""

import json
import sys

import numpy as np
import onnx
import pytest
import torch
from conftest import make_tiny_model, render_scene
from fake_tensorrt import make_fake_tensorrt

from rtkp.backends import doctor, open_backend, read_model_info
from rtkp.backends.onnxruntime import OnnxRuntimeBackend
from rtkp.backends.tensorrt import TensorRTBackend
from rtkp.backends.torch import TorchBackend
from rtkp.cli import main
from rtkp.graphs.exports_index import GRAPH_VERSION
from rtkp.graphs.onnx import export_onnx
from rtkp.graphs.prototypes import GENERIC_DIM

SIZE = (128, 96)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("model") / "model", SIZE)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    return np.stack([render_scene(rng, SIZE)[0] for _ in range(3)])


def test_onnxruntime_matches_pytorch(model_dir, images):
    info = read_model_info(model_dir)
    ref = TorchBackend(info).infer(images)
    out = OnnxRuntimeBackend(info, threads=1).infer(images)
    assert out.shape == (3, 3, 4) and out.dtype == np.float32
    assert np.abs(out[..., :2] - ref[..., :2]).max() < 0.05
    assert np.abs(out[..., 2:] - ref[..., 2:]).max() < 1e-4


def test_graph_contract(model_dir):
    path = export_onnx(model_dir, SIZE)
    graph = onnx.load(str(path)).graph
    ins = {i.name: i for i in graph.input}
    assert list(ins) == ["images", "prototypes", "clutter", "active"]
    assert ins["images"].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert ins["images"].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [d.dim_value for d in ins["images"].type.tensor_type.shape.dim[1:]] == [96, 128, 3]
    # K_max = 32 prototype rows (3 in use) and a mask of those in use: keypoints can be added without a re-export
    assert [d.dim_value for d in ins["prototypes"].type.tensor_type.shape.dim] == [32, 32]
    assert [d.dim_value for d in ins["active"].type.tensor_type.shape.dim] == [32]
    outs = {o.name: o for o in graph.output}
    assert list(outs) == ["keypoints", "features"]
    assert [d.dim_value for d in outs["keypoints"].type.tensor_type.shape.dim[1:]] == [32, 4]
    index = json.loads((model_dir / "exports.json").read_text())
    entry = next(e for e in index["exports"] if e["file"] == "onnx/" + path.name)
    assert entry["model_sha256"] == read_model_info(model_dir).weights_sha256 and entry["precision"] == "fp32"
    assert (entry["graph"], entry["max_keypoints"]) == (GRAPH_VERSION, 32)
    # matching is a MatMul: ONNX Runtime's CPU provider ran the Einsum it replaced at a fifth of the graph's time
    ops = {node.op_type for node in graph.node}
    assert "MatMul" in ops and "Einsum" not in ops


def test_exports_of_an_older_graph_contract_are_made_again(tmp_path, images):
    from rtkp.graphs.exports_index import find_export
    from rtkp.manifest import read_manifest

    model = make_tiny_model(tmp_path / "m", SIZE)
    path = export_onnx(model, SIZE)
    assert find_export(model, read_manifest(model), SIZE, False) == path
    index = json.loads((model / "exports.json").read_text())
    for entry in index["exports"]:
        entry.pop("graph")  # what an export made before the K_max contract looks like
    (model / "exports.json").write_text(json.dumps(index))
    assert find_export(model, read_manifest(model), SIZE, False) is None
    assert OnnxRuntimeBackend(read_model_info(model), threads=1).infer(images).shape == (3, 3, 4)
    assert (
        find_export(model, read_manifest(model), SIZE, False) is not None
    )  # exported again, recorded with the current contract
    # version 2 (matching as an Einsum): still correct, but slow on the CPU, so made again too
    index = json.loads((model / "exports.json").read_text())
    for entry in index["exports"]:
        entry["graph"] = 2
    (model / "exports.json").write_text(json.dumps(index))
    assert find_export(model, read_manifest(model), SIZE, False) is None


def test_fp16_graph_is_half_inside_with_float_io(model_dir, images):
    path = export_onnx(model_dir, SIZE, fp16=True)
    model = onnx.load(str(path))
    halves = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert len(halves) > 50
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    info = read_model_info(model_dir)
    out16 = OnnxRuntimeBackend(info, threads=1, fp16=True).infer(images)
    out32 = OnnxRuntimeBackend(info, threads=1).infer(images)
    assert np.abs(out16[..., 2] - out32[..., 2]).max() < 0.02


@pytest.mark.parametrize("kind", ["onnxruntime", "torch", "tensorrt-10"])
def test_swapping_prototypes_changes_outputs_without_rebuild(model_dir, images, kind, monkeypatch):
    info = read_model_info(model_dir)
    if kind == "onnxruntime":
        backend = OnnxRuntimeBackend(info, threads=1)
    elif kind == "torch":
        backend = TorchBackend(info)
    else:
        monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("10.3.0"))
        backend = TensorRTBackend(info, fp16=False, device="cpu")
    before = backend.infer(images)
    perm = [2, 0, 1]
    backend.set_prototypes(info.prototypes[perm], info.clutter)
    after = backend.infer(images)
    np.testing.assert_allclose(after, before[:, perm], atol=1e-4)
    # a clutter summary equal to the prototypes makes every keypoint's clutter score reach its own score
    backend.set_prototypes(info.prototypes, info.prototypes)
    hidden = backend.infer(images)
    assert (hidden[..., 3] >= hidden[..., 2] - 1e-4).all()
    # more keypoints, then fewer, through the same graph or engine: the rows in use come back, unchanged
    extra = np.concatenate([info.prototypes, info.prototypes[perm]])
    backend.set_prototypes(extra, info.clutter)
    more = backend.infer(images)
    assert more.shape == (3, 6, 4)
    np.testing.assert_allclose(more[:, :3], before, atol=1e-4)
    np.testing.assert_allclose(more[:, 3:], before[:, perm], atol=1e-4)
    backend.set_prototypes(info.prototypes[:1], info.clutter)
    np.testing.assert_allclose(backend.infer(images), before[:, :1], atol=1e-4)
    # the features come from the same graph: each keypoint's score is its prototype's similarity at its peak cell
    feats = backend.features(images)
    assert feats.shape == (3, 32, 24, 32)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-3)
    sim = np.einsum("bdhw,d->bhw", feats, info.prototypes[0])
    np.testing.assert_allclose(sim.reshape(3, -1).max(1), before[:, 0, 2], atol=1e-3)
    # what a shot reads: the generic graph's features, and no centre votes for a model of one animal
    maps, votes = backend.shot_maps(images)
    assert votes is None and maps.shape == (3, 32 + GENERIC_DIM, 24, 32)
    np.testing.assert_allclose(maps[:, :32], feats, atol=1e-3)


def test_tensorrt_10_builds_fp16_with_the_builder_flag_and_caches(model_dir, images, monkeypatch, capsys):
    trt = make_fake_tensorrt("10.3.0")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    info = read_model_info(model_dir)
    backend = TensorRTBackend(info, fp16=True, max_batch=4, device="cpu")
    build = next(c[1] for c in trt.calls if c[0] == "build")
    assert build["flags"] == [int(trt.BuilderFlag.FP16)] and not build["strongly_typed"]
    assert build["profile"]["images"] == [[1, 96, 128, 3], [1, 96, 128, 3], [4, 96, 128, 3]]
    assert ("create_network", 0) in trt.calls
    out = backend.infer(np.concatenate([images, images]))  # 6 frames: two executions within the profile
    ref = OnnxRuntimeBackend(info, threads=1).infer(images)
    np.testing.assert_allclose(out[:3], ref, atol=1e-4)
    assert sum(c[0] == "execute" for c in trt.calls) == 2
    # second open: served from the cache, no build
    trt.calls.clear()
    TensorRTBackend(info, fp16=True, max_batch=4, device="cpu")
    assert [c[0] for c in trt.calls] == ["deserialize"]
    # corrupt engine: refused with a message and rebuilt
    engine_path, meta_path = backend.cache.paths(backend.key)
    engine_path.write_bytes(b"garbage")
    trt.calls.clear()
    TensorRTBackend(info, fp16=True, max_batch=4, device="cpu")
    assert "checksum does not match" in capsys.readouterr().err
    assert any(c[0] == "build" for c in trt.calls)
    # a manifest naming another GPU is refused too
    meta = json.loads(meta_path.read_text())
    meta["key"]["gpu"] = "Some Other GPU"
    meta_path.write_text(json.dumps(meta))
    TensorRTBackend(info, fp16=True, max_batch=4, device="cpu")
    assert "built for another gpu" in capsys.readouterr().err


def test_tensorrt_11_is_strongly_typed_and_builds_from_the_fp16_graph(model_dir, images, monkeypatch):
    trt = make_fake_tensorrt("11.0.0")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    info = read_model_info(model_dir)
    backend = TensorRTBackend(info, fp16=True, device="cpu")
    build = next(c[1] for c in trt.calls if c[0] == "build")
    assert build["strongly_typed"] and build["flags"] == []
    fp16_onnx = model_dir / "onnx" / "model_128x96_fp16.onnx"
    assert next(c[1] for c in trt.calls if c[0] == "parse") == fp16_onnx.stat().st_size
    out = backend.infer(images)
    ref = OnnxRuntimeBackend(info, threads=1, fp16=True).infer(images)
    np.testing.assert_allclose(out, ref, atol=1e-4)


def test_doctor_and_auto_choice(model_dir, capsys):
    names = [s.name for s in doctor()]
    assert names == ["onnxruntime", "onnxruntime-cuda", "torch", "torch-cuda", "tensorrt"]
    backend = open_backend(model_dir, "auto", threads=1)
    if not torch.cuda.is_available():
        assert backend.name == "onnxruntime-cpu"
    assert main(["doctor"]) == 0
    assert "onnxruntime" in capsys.readouterr().out


def test_build_engine_command(model_dir, tmp_path, capsys):
    assert main(["build-engine", "--model", str(model_dir), "--fp16", "--input-size", "160x128"]) == 0
    out = capsys.readouterr().out
    assert "model_160x128_fp32.onnx" in out and "model_160x128_fp16.onnx" in out
    assert main(["build-engine", "--model", str(tmp_path / "none")]) == 5
    with pytest.raises(SystemExit):
        main(["build-engine", "--model", str(model_dir), "--input-size", "100x100"])


def test_cli_backend_names_match_the_backends():
    from rtkp.backends import CHOICES
    from rtkp.cli.defaults import BACKENDS

    assert tuple(BACKENDS) == tuple(CHOICES)
