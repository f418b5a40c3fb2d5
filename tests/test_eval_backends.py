"""`rtkp eval` runs through the backends and the Tracker, like `rtkp run`: ONNX Runtime and PyTorch agree on the tiny
model, FP16 can be chosen on the CPU, and the report names the backend and precision that produced it."""

import json

import numpy as np
import pytest
import torch
from conftest import render_scene, write_dlc_project

from rtkp.backends import PRECISIONS, open_backend, read_model_info
from rtkp.cli import build_parser, main
from rtkp.cli.bench import model_only
from rtkp.data.load import load_split
from rtkp.errors import ConfigError, EngineError
from rtkp.train.evaluate import evaluate, predict_all

CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return write_dlc_project(tmp_path_factory.mktemp("dlc") / "proj")


def test_eval_through_onnxruntime_and_torch_agree(tiny_model, project):
    data = load_split(project, None, "test")
    ort = evaluate(tiny_model, data, occlusion=True, progress=False, backend="onnxruntime", precision="fp32")
    ref = evaluate(tiny_model, data, occlusion=True, progress=False, backend="torch", precision="fp32")
    assert (ort["backend"], ort["precision"]) == ("onnxruntime-cpu", "fp32")
    assert (ref["backend"], ref["precision"]) == ("torch-cpu", "fp32")
    assert ort["rmse_px"] == pytest.approx(ref["rmse_px"], abs=0.02)
    assert ort["pck"] == pytest.approx(ref["pck"], abs=1e-6)
    assert ort["visible_rate"] == ref["visible_rate"]
    # frame 0 leaves one keypoint unlabelled: it is absent, and the report says whether it was reported hidden
    assert ort["absent"] == 1 and ort["hidden_rate_absent"] == ref["hidden_rate_absent"] in (0.0, 1.0)
    for level, figures in ort["occlusion"].items():
        # random weights and pasted occluders make flat similarity peaks, where the sub-pixel fit magnifies float
        # rounding (measured: 0.02 px on a 68 px RMSE); a peak in another cell would move it by pixels
        assert figures["rmse_px"] == pytest.approx(ref["occlusion"][level]["rmse_px"], rel=1e-3), level
        assert figures["covered"] == ref["occlusion"][level]["covered"]
    # and per keypoint, not only on average
    manifest = read_model_info(tiny_model).manifest
    images = [s.load_image() for s in data.samples]
    xy32, vis32 = predict_all(open_backend(tiny_model, "onnxruntime", threads=1), manifest, images)
    xyt, vist = predict_all(open_backend(tiny_model, "torch"), manifest, images)
    assert np.abs(xy32 - xyt).max() < 0.05 and (vis32 == vist).all()


def test_fp16_is_selectable_on_the_cpu(tiny_model):
    backend = open_backend(tiny_model, "onnxruntime", threads=1, precision="fp16")
    assert (backend.name, backend.precision) == ("onnxruntime-cpu-fp16", "fp16")
    fp32 = open_backend(tiny_model, "onnxruntime", threads=1, precision="fp32")
    assert (fp32.name, fp32.precision) == ("onnxruntime-cpu", "fp32")
    if not CUDA:
        assert open_backend(tiny_model, "auto", threads=1, precision="fp16").name == "onnxruntime-cpu-fp16"
        assert open_backend(tiny_model, "auto", threads=1).precision == "fp32"
        with pytest.raises(EngineError, match="needs CUDA"):
            open_backend(tiny_model, "torch", precision="fp16")
    with pytest.raises(ConfigError, match="`precision` must be one of fp32, fp16"):
        open_backend(tiny_model, "onnxruntime", precision="int8")
    # `rtkp bench --precision` reaches its backends
    images = [render_scene(np.random.default_rng(i))[0] for i in range(2)]
    figures = model_only(str(tiny_model), "onnxruntime", images, 0.01, 1, 2, precision="fp16")
    assert (figures["backend"], figures["precision"]) == ("onnxruntime-cpu-fp16", "fp16")


def test_eval_command_names_backend_and_precision(tiny_model, project, tmp_path, capsys):
    out = tmp_path / "report.json"
    args = ["eval", "--model", str(tiny_model), "--data", str(project), "--quiet"]
    assert main([*args, "--backend", "onnxruntime", "--precision", "fp16", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert (report["backend"], report["precision"]) == ("onnxruntime-cpu-fp16", "fp16")
    assert {"rmse_px", "pck", "per_keypoint"} <= set(report)
    assert "(onnxruntime-cpu-fp16, fp16)" in capsys.readouterr().out.splitlines()[0]
    if not CUDA:
        assert main([*args, "--backend", "torch", "--precision", "fp16"]) == EngineError.exit_code
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "needs CUDA" in err


@pytest.mark.parametrize("command", ["eval", "run", "export", "bench"])
def test_precision_option_is_shared(command):
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    option = next(a for a in sub._actions if "--precision" in a.option_strings)
    assert tuple(option.choices) == PRECISIONS and option.default is None


def test_keypoints_only_one_side_has_are_named_not_dropped(tiny_model, project, tmp_path, capsys):
    from rtkp.teach.keypoint_set import KeypointSet
    from rtkp.teach.saved import save_keypoint_set

    info = read_model_info(tiny_model)
    kset = KeypointSet.from_model(info.manifest, info.prototypes, info.clutter)
    kset.rename("nose", "snout")  # renamed: the labels' "nose" and the model's "snout" are scored under neither name
    renamed = save_keypoint_set(tiny_model, info.manifest, kset, tmp_path / "renamed")
    out = tmp_path / "report.json"
    assert main(["eval", "--model", str(renamed), "--data", str(project), "--quiet", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["not_scored"] == {"model_only": ["snout"], "data_only": ["nose"]}
    assert list(report["per_keypoint"]) == ["left_eye", "right_eye"]
    printed = capsys.readouterr().out
    assert "not scored: snout (the model's" in printed and "not scored: nose (labelled;" in printed
    # the same names on both sides: nothing to say
    assert main(["eval", "--model", str(tiny_model), "--data", str(project), "--quiet", "--json", str(out)]) == 0
    assert "not_scored" not in json.loads(out.read_text()) and "not scored" not in capsys.readouterr().out
