"""`rtkp export --format h5,slp,nwb` and the COCO export, each opened with the tool its users open it with: pandas
(DeepLabCut's .h5), sleap-io (SLEAP .slp, NWB/ndx-pose), pycocotools (COCO); hidden keypoints as each format says
"not visible" (NaN in SLEAP, likelihood 0 in DeepLabCut and NWB confidence 0, v = 0 in COCO)."""

import json
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import NAMES, write_image_folder, write_video

from rtkp.cli import main
from rtkp.export import formats
from rtkp.messages import KeypointFrame

sio = pytest.importorskip("sleap_io")

COMMON = ["--backend", "onnxruntime", "--quiet", "--set", "run.threads=1"]
ALL = "coco,jsonl,csv,h5,slp,nwb"


def _export(source, out, model, fmt=ALL, *extra):
    return main(["export", str(source), "--out", str(out), "--model", str(model), "--format", fmt, *COMMON, *extra])


def _read_csv(path):
    return pd.read_csv(path, header=[0, 1, 2], index_col=0)


def test_a_60_frame_video_opens_in_sleap_pandas_and_pycocotools(tmp_path, tiny_model):
    from pycocotools.coco import COCO

    video = write_video(tmp_path / "clip.mp4", frames=60)
    out = tmp_path / "out"
    assert _export(video, out, tiny_model) == 0
    done = json.loads((out / "clip.done.json").read_text())
    assert {k: v.rsplit("/", 1)[-1] for k, v in done["result"]["outputs"].items()} == {
        f: f"clip{formats.SUFFIX[f]}" for f in ALL.split(",")
    }
    assert not list(out.glob("*.partial"))
    # DeepLabCut: one key, one row per frame, scorer / bodyparts / coords, the CSV's table exactly
    table = pd.read_hdf(out / "clip.h5")
    assert table.shape == (60, 9) and list(table.index) == list(range(60))
    assert table.columns.names == ["scorer", "bodyparts", "coords"]
    assert list(table.columns.get_level_values("bodyparts")[::3]) == NAMES
    assert list(table.columns.get_level_values("coords")[:3]) == ["x", "y", "likelihood"]
    pd.testing.assert_frame_equal(table, _read_csv(out / "clip.csv"), check_index_type=False)
    # SLEAP: 60 labelled frames of one predicted instance, the manifest's names and skeleton, the video referenced
    labels = sio.load_slp(str(out / "clip.slp"))
    assert len(labels) == 60 and [lf.frame_idx for lf in labels] == list(range(60))
    assert all(len(lf.instances) == 1 and type(lf.instances[0]) is sio.PredictedInstance for lf in labels)
    assert labels.skeleton.node_names == NAMES and labels.skeleton.edge_inds == [(0, 1), (0, 2)]
    assert labels.video.filename == str(video.resolve()) and labels.video.shape == (60, 96, 128, 3)
    assert labels.video[59].shape == (96, 128, 3)  # SLEAP opens the source itself
    jsonl = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
    for lf, rec in zip(labels, jsonl):
        points = np.array([rec["keypoints"][n][:2] if rec["keypoints"][n][3] else [np.nan] * 2 for n in NAMES])
        np.testing.assert_allclose(lf.instances[0].numpy(), points, atol=1e-3)
    # NWB through sleap-io, timestamped by PTS
    nwb = sio.load_nwb(str(out / "clip.nwb"))
    assert len(nwb) == 60 and nwb.skeleton.node_names == NAMES
    assert all(len(lf.instances) == 1 for lf in nwb)
    # COCO through pycocotools; frame_index and pts on every image, file_name as before
    coco = COCO(str(out / "clip.coco.json"))
    images = coco.loadImgs(coco.getImgIds())
    assert len(images) == 60 and len(coco.getAnnIds()) == 60
    assert [im["frame_index"] for im in images] == list(range(60))
    assert [im["pts"] for im in images] == [rec["pts"] for rec in jsonl]
    assert images[0]["file_name"] == "clip#000000"
    assert coco.loadCats(1)[0]["keypoints"] == NAMES
    # what the README says of sleap_io.load_coco / load_dlc: no image files behind a video export, so no frame
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(sio.load_coco(str(out / "clip.coco.json"))) == 0
        assert len(sio.load_dlc(str(out / "clip.csv"))) == 0
    # a re-run skips; another --format with --overwrite removes every old output, the new formats included
    assert _export(video, out, tiny_model) == 0
    assert _export(video, out, tiny_model, "csv", "--overwrite") == 0
    assert sorted(p.name for p in out.iterdir()) == ["clip.csv", "clip.done.json"]


def test_an_image_folder_opens_in_sleap_pandas_and_load_coco(tmp_path, tiny_model):
    folder = write_image_folder(tmp_path / "frames", 5, seed=3)
    out = tmp_path / "out"
    assert _export(folder, out, tiny_model, ALL, "--smooth", "offline") == 0
    table = pd.read_hdf(out / "frames.h5")
    assert list(table.index) == [f"f{i:02d}.png" for i in range(5)]
    pd.testing.assert_frame_equal(table, _read_csv(out / "frames.csv"), check_index_type=False)
    labels = sio.load_slp(str(out / "frames.slp"))
    assert labels.video.filename == [str(folder.resolve() / f"f{i:02d}.png") for i in range(5)]
    assert [lf.frame_idx for lf in labels] == list(range(5)) and labels.video[4].shape == (96, 128, 3)
    assert len(sio.load_nwb(str(out / "frames.nwb"))) == 5
    # an image folder's COCO: sleap_io.load_coco finds the images under the folder
    coco = sio.load_coco(str(out / "frames.coco.json"), dataset_root=str(folder))
    assert len(coco) == 5 and coco.skeleton.node_names == NAMES


def _frames(n=6, pts_step=0.04, source_size=(128, 96)):
    """Records with a visible, a hidden and a sometimes-hidden keypoint; frame 3 all hidden."""
    out = []
    for i in range(n):
        xy = np.array([[10 + i, 20], [30, 40 + i], [50, 60]], np.float32)
        visible = np.array([True, False, i % 2 == 0]) & (i != 3)
        scores = np.array([0.9, 0.4, 1.3], np.float32)
        state = np.where(visible, 0, 3).astype(np.uint8)
        out.append(KeypointFrame(i, i * pts_step, 0, source_size, xy, scores, visible, state))
    return out


def test_hidden_keypoints_in_every_format(tmp_path):
    from rtkp.export.dlc_table import write_h5
    from rtkp.export.sleap_files import track_arrays, write_nwb, write_slp

    video = write_video(tmp_path / "v.mp4", frames=6)
    frames, skeleton = _frames(), [(0, 1), (0, 2)]
    visible = np.array([kf.visible for kf in frames])
    write_h5(frames, 6, NAMES, "rtkp_x", tmp_path / "v.h5")
    table = pd.read_hdf(tmp_path / "v.h5")
    like = table.xs("likelihood", axis=1, level="coords").to_numpy()
    assert (like[~visible] == 0).all() and (like[visible] == np.where(visible, [0.9, 0.4, 1.0], 0)[visible]).all()
    assert table.xs("x", axis=1, level="coords").to_numpy()[3, 0] == 10 + 3  # hidden: x, y as tracked, as the CSV
    arrays = track_arrays(frames, 6, 3)
    write_slp(arrays, NAMES, skeleton, str(video), 6, tmp_path / "v.slp", "rtkp_x")
    labels = sio.load_slp(str(tmp_path / "v.slp"))
    points = np.stack([lf.instances[0].numpy() for lf in labels])
    assert np.isnan(points[~visible]).all() and not np.isnan(points[visible]).any()
    assert labels[0].instances[0].score == pytest.approx((0.9 + 1.3) / 2)
    assert len(labels) == 6 and len(labels[3].instances) == 1  # a frame all hidden keeps its instance, all NaN
    write_nwb(arrays, NAMES, skeleton, str(video), tmp_path / "v.nwb", "rtkp_x")
    nwb = sio.load_nwb(str(tmp_path / "v.nwb"))
    assert len(nwb) == 6
    conf = np.stack([lf.instances[0].points["score"] for lf in nwb])
    np.testing.assert_allclose(conf, np.where(visible, [0.9, 0.4, 1.0], 0), atol=1e-6)
    lines = [formats.coco_line(kf, i + 1, NAMES, str(video)) for i, kf in enumerate(frames)]
    v = np.array([json.loads(line.split("\t")[1])["keypoints"][2::3] for line in lines])
    assert (v[~visible] == 0).all() and (v[visible] == 2).all()


def test_nwb_keeps_a_29_97_fps_video_s_time_stamps(tmp_path):
    """sleap-io stores a uniform rate as whole frames per second (29.97 -> 29): the file gets the true one back."""
    from pynwb import NWBHDF5IO

    from rtkp.export.sleap_files import track_arrays, write_nwb

    video = write_video(tmp_path / "v.mp4", frames=2)
    frames = _frames(60, pts_step=1001 / 30000)
    write_nwb(track_arrays(frames, 60, 3), NAMES, [(0, 1)], str(video), tmp_path / "v.nwb", "rtkp_x")
    with NWBHDF5IO(str(tmp_path / "v.nwb"), "r", load_namespaces=True) as io:
        module = io.read().processing["SLEAP_VIDEO_000_v"]
        series = next(iter(module.data_interfaces.values())).pose_estimation_series["nose"]
        np.testing.assert_allclose(series.get_timestamps(), [kf.pts for kf in frames], atol=1e-9)
    assert len(sio.load_nwb(str(tmp_path / "v.nwb"))) == 60


def test_a_missing_package_is_one_line_before_anything_is_written(tmp_path, tiny_model, monkeypatch, capsys):
    monkeypatch.setitem(formats.PACKAGES, "slp", ("rtkp_no_such_package",))
    video = write_video(tmp_path / "clip.mp4", frames=2)
    assert _export(video, tmp_path / "out", tiny_model, "csv,slp") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rtkp_no_such_package (for slp)" in err[0] and "rtkp[formats]" in err[0]
    assert not (tmp_path / "out").exists()


def test_help_and_format_checks_import_no_format_package():
    code = (
        "import contextlib, io, sys\nfrom rtkp.cli import main\nfrom rtkp.export.local import parse_formats\n"
        "parse_formats('h5,slp,nwb')\nwith contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n        main(['export', '--help'])\n    except SystemExit:\n        pass\n"
        "print(' '.join(sys.modules))"
    )
    mods = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert not mods & {"sleap_io", "pandas", "tables", "pynwb", "h5py", "ndx_pose"}
