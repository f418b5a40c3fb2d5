"""Long checks on the real DLC data (`pytest -m slow`); skipped when ../shared/data is absent.

The mouse model is in git (engines/dlc_mouse_coke): when it is missing these tests fail, they do not skip.
"""

import csv
import json
import shutil

import numpy as np
import pytest
from conftest import DLC_MOUSE, REPO, remux, shipped_model

from rtkp.cli import main

VIDEO = DLC_MOUSE / "videos" / "m3v1mp4.mp4"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not VIDEO.is_file(), reason=f"needs the shared data ({DLC_MOUSE})")]
MOUSE_MODEL = REPO / "engines" / "dlc_mouse_coke"


@pytest.fixture(autouse=True, scope="module")
def mouse_model_in_git():
    """Checked when a test runs (after the data skip), so a fast run without -m slow never trips over it."""
    shipped_model("dlc_mouse_coke")


def test_dlc_video_exports_every_frame_in_every_format(tmp_path):
    out = tmp_path / "out"
    assert main(["export", str(VIDEO), "--out", str(out), "--model", str(MOUSE_MODEL), "--quiet"]) == 0
    assert len(json.loads((out / "m3v1mp4.coco.json").read_text())["images"]) == 2330
    assert len((out / "m3v1mp4.jsonl").read_text().splitlines()) == 2330
    assert len(list(csv.reader(open(out / "m3v1mp4.csv")))) == 3 + 2330


def test_truncated_dlc_video(tmp_path, capsys):
    data = remux(VIDEO, tmp_path / "fast.mp4", options={"movflags": "faststart"}).read_bytes()
    cut = tmp_path / "truncated.mp4"
    cut.write_bytes(data[: len(data) // 3])
    rc = main(
        ["export", str(cut), "--out", str(tmp_path / "o"), "--model", str(MOUSE_MODEL), "--format", "jsonl", "--quiet"]
    )
    assert rc == 0
    n = len((tmp_path / "o" / "truncated.jsonl").read_text().splitlines())
    assert 100 < n < 2330 and f"{2330 - n} frame(s) listed in the file could not be read" in capsys.readouterr().out


@pytest.fixture(scope="module")
def mouse_model(tmp_path_factory):
    """A copy without exports: the graphs these tests run are made here, not left over in the repository."""
    folder = tmp_path_factory.mktemp("m") / "dlc_mouse_coke"
    shutil.copytree(MOUSE_MODEL, folder, ignore=shutil.ignore_patterns("onnx", "trt", "exports.json"))
    return folder


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """The 24 test-split images, copied into a folder that `rtkp export` can read."""
    from rtkp.data.load import load_split

    data = load_split(DLC_MOUSE, DLC_MOUSE / "split.json", "test")
    folder = tmp_path_factory.mktemp("images") / "test_images"
    folder.mkdir()
    for s in data.samples:
        shutil.copy(s.image_path, folder / s.image_path.name)
    return data, folder


@pytest.mark.parametrize("precision, tolerance", [("fp32", 0.01), ("fp16", 0.02)])
def test_eval_and_export_agree_through_the_same_graph(mouse_model, held_out, tmp_path, precision, tolerance, capsys):
    """`rtkp eval` and `rtkp export` of the same images through the same backend and precision: the same RMSE."""
    data, folder = held_out
    common = ["--model", str(mouse_model), "--backend", "onnxruntime", "--precision", precision, "--quiet"]
    split = ["--data", str(DLC_MOUSE), "--split", str(DLC_MOUSE / "split.json")]
    assert main(["eval", *split, *common, "--json", str(tmp_path / "eval.json")]) == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    name = "onnxruntime-cpu" + ("-fp16" if precision == "fp16" else "")
    assert (report["backend"], report["precision"], report["images"]) == (name, precision, 24)
    assert f"({name}, {precision})" in capsys.readouterr().out
    assert main(["export", str(folder), "--out", str(tmp_path / "o"), *common, "--format", "coco"]) == 0
    coco = json.loads((tmp_path / "o" / "test_images.coco.json").read_text())
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    exported = {files[a["image_id"]]: np.array(a["keypoints"]).reshape(-1, 3)[:, :2] for a in coco["annotations"]}
    errors = np.stack([np.linalg.norm(exported[s.image_path.name] - s.keypoints, axis=1) for s in data.samples])
    labelled = np.stack([s.visible for s in data.samples])
    rmse = float(np.sqrt(np.mean(errors[labelled] ** 2)))
    print(f"{precision}: eval RMSE {report['rmse_px']:.4f} px, export RMSE {rmse:.4f} px")
    assert rmse == pytest.approx(report["rmse_px"], abs=tolerance)
    # per keypoint too: FP16 moves the overall RMSE by only 0.016 px (two of 96 keypoints jump 3.3 px, README
    # "Backends"), so the average alone would not notice an export that ran the other precision
    for k, name in enumerate(data.keypoint_names):
        rmse_k = float(np.sqrt(np.mean(errors[:, k][labelled[:, k]] ** 2)))
        assert rmse_k == pytest.approx(report["per_keypoint"][name]["rmse_px"], abs=tolerance), name
