"""Every artifact of a model folder is checked against the manifest on every load (issue 26, item 1).

A real tiny model with its ONNX graph already cached in `onnx/` (as after the first run), its weights changed after
training (the sign of `prototypes[0]` flipped, written back with safetensors): every command that loads the model
refuses it in one line naming the file, with exit code 5 (a model error) and no traceback. A cached ONNX graph or
TensorRT engine whose bytes changed is refused with a message and made again, never used.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_TRAIN, make_tiny_model, write_dlc_project, write_video
from fake_tensorrt import make_fake_tensorrt
from safetensors.numpy import load_file, save_file

from rtkp.backends import read_model_info
from rtkp.backends.onnxruntime import OnnxRuntimeBackend
from rtkp.backends.tensorrt import TensorRTBackend
from rtkp.cli import main
from rtkp.errors import ModelError
from rtkp.files import sha256
from rtkp.graphs.onnx import export_onnx

SIZE = (128, 96)


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """A tiny model whose FP32 ONNX graph is cached in its folder (what every model folder looks like after a run)."""
    model = make_tiny_model(tmp_path_factory.mktemp("cached") / "model", SIZE)
    export_onnx(model, SIZE)
    return model


@pytest.fixture
def model(cached, tmp_path):
    return Path(shutil.copytree(cached, tmp_path / "model"))


def flip_first_prototype(model: Path) -> Path:
    """Change the weights after training the way the issue did: prototypes[0] negated, saved with safetensors."""
    weights = model / "model.safetensors"
    tensors = load_file(str(weights))
    tensors["prototypes"][0] *= -1
    save_file(tensors, str(weights))
    return weights


def rtkp(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rtkp", *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def _commands(model: Path, tmp: Path) -> dict[str, list[str]]:
    video = write_video(tmp / "clip.mp4", frames=4)
    project = write_dlc_project(tmp / "dlc", n=2)
    m = ["--model", str(model)]
    return {
        "run": [
            "run",
            *m,
            "--source",
            "lavfi:testsrc2=size=64x48:rate=30",
            "--max-frames",
            "3",
            "--headless",
            "--publish",
            "none",
            "--backend",
            "onnxruntime",
        ],
        "export": ["export", str(video), "--out", str(tmp / "out"), *m, "--backend", "onnxruntime", "--quiet"],
        "eval": ["eval", *m, "--data", str(project), "--backend", "onnxruntime", "--quiet"],
        "build-engine": ["build-engine", *m],
        "keypoints": ["keypoints", "list", *m],
    }


@pytest.mark.parametrize("command", ["run", "export", "eval", "build-engine", "keypoints", "run-uncached"])
def test_changed_weights_are_refused_by_every_command_with_an_onnx_graph_cached(model, tmp_path, command):
    assert (model / "onnx" / "model_128x96_fp32.onnx").is_file()
    if command == "run-uncached":  # no graph cached: `run` exited 1 here ("the infer stage: ..."), build-engine 5
        shutil.rmtree(model / "onnx")
        (model / "exports.json").unlink()
        command = "run"
    weights = flip_first_prototype(model)
    run = rtkp(*_commands(model, tmp_path)[command], cwd=tmp_path)
    assert run.returncode == 5, run.stderr  # ModelError, the same code from every command
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert str(weights) in lines[0] and "sha256" in lines[0], lines[0]
    assert "retrain" in lines[0] and "restore" in lines[0], lines[0]


def test_changed_weights_are_refused_before_a_cached_engine_is_used(model, monkeypatch):
    trt = make_fake_tensorrt("10.3.0")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    TensorRTBackend(read_model_info(model), fp16=False, device="cpu")
    assert list((model / "trt").glob("*.engine"))
    weights = flip_first_prototype(model)
    trt.calls.clear()
    with pytest.raises(ModelError, match="sha256") as caught:
        TensorRTBackend(read_model_info(model), fp16=False, device="cpu")
    assert str(weights) in str(caught.value) and not trt.calls  # nothing deserialised
    # build-engine says the same, with the same exit code as every other command
    assert main(["build-engine", "--model", str(model), "--backend", "tensorrt"]) == 5


def test_a_changed_onnx_graph_is_refused_and_exported_again(model, tmp_path, capsys):
    images = np.zeros((1, SIZE[1], SIZE[0], 3), np.uint8) + np.arange(SIZE[0], dtype=np.uint8)[None, :, None]
    reference = OnnxRuntimeBackend(read_model_info(model), threads=1).infer(images)
    graph = model / "onnx" / "model_128x96_fp32.onnx"
    recorded = sha256(graph)
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a byte inside the weights' initialisers: ONNX Runtime would still load it
    graph.write_bytes(bytes(data))
    capsys.readouterr()
    out = OnnxRuntimeBackend(read_model_info(model), threads=1).infer(images)
    err = capsys.readouterr().err
    assert f"refusing cached ONNX graph {graph}" in err and "exporting it again" in err, err
    assert sha256(graph) == recorded  # made again from the weights, byte-identical, and used
    np.testing.assert_array_equal(out, reference)
    index = json.loads((model / "exports.json").read_text())
    assert [e["sha256"] for e in index["exports"] if e["file"] == "onnx/" + graph.name] == [recorded]


def test_a_changed_engine_is_refused_and_built_again(model, monkeypatch, capsys):
    trt = make_fake_tensorrt("10.3.0")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    backend = TensorRTBackend(read_model_info(model), fp16=False, device="cpu")
    engine, _ = backend.cache.paths(backend.key)
    data = bytearray(engine.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same length, other bytes
    engine.write_bytes(bytes(data))
    capsys.readouterr()
    trt.calls.clear()
    TensorRTBackend(read_model_info(model), fp16=False, device="cpu")
    assert f"refusing cached TensorRT engine {engine}" in capsys.readouterr().err
    assert [c[0] for c in trt.calls if c[0] in ("build", "deserialize")] == ["build", "deserialize"]


def test_eval_of_a_stopped_training_says_it_is_not_finished(tmp_path):
    project = write_dlc_project(tmp_path / "dlc", n=4)
    out = tmp_path / "stopped"
    train = ["train", "--data", str(project), "--out", str(out), "--set", "train.steps=4", *SMALL_TRAIN, "--quiet"]
    assert main([*train, "--stop-after", "1"]) == 0
    run = rtkp("eval", "--model", str(out), "--data", str(project), "--quiet", cwd=tmp_path)
    assert run.returncode == 5, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert "training not finished" in lines[0] and "step 1 of 4" in lines[0], lines[0]
    assert f"--out {out}" in lines[0] and "made by `rtkp train`" not in lines[0], lines[0]


def test_a_heatmap_models_changed_weights_are_refused_too(tmp_path):
    model = make_tiny_model(tmp_path / "heatmap", SIZE, head="heatmap")
    weights = model / "model.safetensors"
    tensors = load_file(str(weights))
    name = next(k for k in tensors if k.startswith("net.") and tensors[k].dtype == np.float32)
    tensors[name] = tensors[name] + 1
    save_file(tensors, str(weights))
    with pytest.raises(ModelError, match="sha256 checksum does not match") as caught:
        read_model_info(model)
    assert str(weights) in str(caught.value)


def test_a_run_reads_and_hashes_the_weights_in_the_parent_and_the_inference_stage_only(model, monkeypatch):
    """The parent checks the folder (run_pipeline); the inference stage opens the backend, which reads and checks the
    weights once, and uses the ModelInfo the backend read (it read them twice: open_backend, then read_model_info);
    the post stage needs the manifest alone (it read and hashed the weights too)."""
    import rtkp.backends
    import rtkp.backends.base
    import rtkp.pipeline.post as post
    from rtkp.messages import Frame
    from rtkp.pipeline.infer import open_tracker
    from rtkp.pipeline.run import RunOptions

    calls = {"read_model_info": 0, "read_weights": 0}

    def counted(name, real):
        def call(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        return call

    # the real functions, counted as they are called (open_backend looks both up at call time)
    monkeypatch.setattr(rtkp.backends, "read_model_info", counted("read_model_info", rtkp.backends.read_model_info))
    monkeypatch.setattr(rtkp.backends.base, "read_weights", counted("read_weights", rtkp.backends.base.read_weights))
    opts = RunOptions(source="unused", model=str(model), backend="onnxruntime", threads=1)
    image = np.zeros((SIZE[1], SIZE[0], 3), np.uint8) + np.arange(SIZE[0], dtype=np.uint8)[None, :, None]
    for control in (False, True):
        calls.update(read_model_info=0, read_weights=0)
        tracker, editor = open_tracker(opts, control)
        assert calls == {"read_model_info": 1, "read_weights": 1}, (control, calls)
        assert (editor is not None) == control
        kf = tracker.process(Frame(0, None, 0, image))
        assert kf.keypoints.shape == (3, 2)
        tracker.close()
    # the post stage's context: the manifest alone, so it is built with no weights file in the folder at all
    (model / "model.safetensors").unlink()
    calls.update(read_model_info=0, read_weights=0)
    context = post._sink_context(opts)
    assert context.names == ["nose", "left_eye", "right_eye"] and context.skeleton == [(0, 1), (0, 2)]
    assert context.model_id == json.loads((model / "manifest.json").read_text())["weights_sha256"][:12]
    assert calls == {"read_model_info": 0, "read_weights": 0}
