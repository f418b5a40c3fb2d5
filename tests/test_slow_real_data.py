"""Long checks on the real DLC data (`pytest -m slow`); skipped when ../shared/data is absent."""

import csv
import json
import shutil

import numpy as np
import pytest
from conftest import DLC_MOUSE, REPO, remux

from rtkp.cli import main

MOUSE_MODEL = REPO / "engines" / "dlc_mouse_coke"
VIDEO = DLC_MOUSE / "videos" / "m3v1mp4.mp4"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (VIDEO.is_file() and (MOUSE_MODEL / "manifest.json").is_file()), reason="needs data/model"),
]


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


def test_exported_test_images_match_eval(tmp_path):
    from rtkp.data.load import load_split
    from rtkp.evaluate import evaluate

    data = load_split(DLC_MOUSE, DLC_MOUSE / "split.json", "test")
    folder = tmp_path / "test_images"
    folder.mkdir()
    for s in data.samples:
        shutil.copy(s.image_path, folder / s.image_path.name)
    assert (
        main(
            [
                "export",
                str(folder),
                "--out",
                str(tmp_path / "o"),
                "--model",
                str(MOUSE_MODEL),
                "--format",
                "jsonl",
                "--quiet",
            ]
        )
        == 0
    )
    records = {r["file"]: r for r in map(json.loads, (tmp_path / "o" / "test_images.jsonl").read_text().splitlines())}
    names = data.keypoint_names
    errors = []
    for s in data.samples:
        kp = records[s.image_path.name]["keypoints"]
        pred = np.array([kp[n][:2] for n in names])
        errors.append(np.linalg.norm(pred - s.keypoints, axis=1))
    rmse = float(np.sqrt(np.mean(np.concatenate(errors) ** 2)))
    report = evaluate(MOUSE_MODEL, data, occlusion=False, progress=False)
    assert rmse == pytest.approx(report["rmse_px"], abs=0.01)
