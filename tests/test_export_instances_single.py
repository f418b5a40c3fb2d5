"""A single-instance model's exports are what they were before instances existed: COCO, CSV, DeepLabCut .h5, SLEAP
.slp and NWB hold the same content (pinned: digests of the files written by the code before issue 28, for the same
records, unsmoothed and smoothed both ways), and the JSON lines only gain `instances`: its one instance, track 0.

The .h5, .slp and .nwb files are not byte-stable from one run to the next (HDF5 object times, sleap-io's ids), so
their digests are of what pandas and sleap-io read back; COCO and CSV are compared byte for byte (the source's path,
which COCO holds, replaced)."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from conftest import write_video
from test_export_instances import ALL, export_records

from rtkp.messages import KeypointFrame

sio = pytest.importorskip("sleap_io")

# digests of the old code's files (rtkp/export before the instances change, commit 942b3bb) for single_frames()
PINNED = {
    "none": {
        "coco": "d1d863314fd4c3d2",
        "csv": "484919924271944c",
        "jsonl": "88551a9fd90d2f7d",
        "h5": "84ff1c75e676bbee",
        "slp": "c7ee54f2f1ed0d7b",
        "nwb": "1f38f6f1ce0b867d",
    },
    "offline": {
        "coco": "cc4358af38defe27",
        "csv": "13fdc967fa14ae5e",
        "jsonl": "0bea4387191de520",
        "h5": "c24226e92db65328",
        "slp": "65d1babc83ed291e",
        "nwb": "5d2867a17f044a04",
    },
    "causal": {
        "coco": "e7c1f381ad032e49",
        "csv": "69a853ea0eda61f6",
        "jsonl": "52fc73a506ac26c1",
        "h5": "a6332c5fd84954cf",
        "slp": "340fdc54ea8bea2c",
        "nwb": "7d64953dc88bba77",
    },
}


def single_frames(n=8) -> list[KeypointFrame]:
    """A single-instance model's records (no instances given: one, track 0, of the frame's arrays): a visible, a
    hidden and a sometimes-hidden keypoint, frame 3 all hidden."""
    out = []
    for i in range(n):
        xy = np.array([[10.123456 + i, 20.5], [30.25, 40 + i * 1.7], [50.0 + i * 0.333, 60]], np.float32)
        visible = np.array([True, False, i % 2 == 0]) & (i != 3)
        scores = np.array([0.9, 0.4, 1.3 - i * 0.01], np.float32)
        state = np.where(visible, 0, 3).astype(np.uint8)
        out.append(KeypointFrame(i, i / 30, 0, (128, 96), xy, scores, visible, state))
    return out


def _h(data) -> str:
    return hashlib.sha256(data if isinstance(data, bytes) else data.encode()).hexdigest()[:16]


def digests(out, source: str) -> dict:
    """What each file holds, as the old code's pinned digests were taken."""
    d = {"coco": _h((out / "clip.coco.json").read_text().replace(source, "SRC"))}
    d["csv"] = _h((out / "clip.csv").read_bytes())
    lines = []
    for line in (out / "clip.jsonl").read_text().splitlines():
        rec = json.loads(line)
        rec.pop("instances", None)
        lines.append(json.dumps(rec))
    d["jsonl"] = _h("\n".join(lines))
    table = pd.read_hdf(out / "clip.h5")
    d["h5"] = _h(table.to_csv() + repr(table.columns.names) + repr(table.index.dtype))
    labels = sio.load_slp(str(out / "clip.slp"))
    parts = [repr(labels.skeleton.node_names), repr(labels.skeleton.edge_inds), repr(labels.video.shape)]
    parts.append(repr(len(labels.tracks)))
    for lf in labels:
        for inst in lf.instances:
            points = f"{inst.numpy().tolist()!r} {inst.points['score'].tolist()!r}"
            parts.append(f"{lf.frame_idx} {inst.score!r} {points} {inst.track}")
    d["slp"] = _h("\n".join(parts))
    parts = []
    for lf in sio.load_nwb(str(out / "clip.nwb")):
        for inst in lf.instances:
            parts.append(f"{lf.frame_idx} {inst.numpy().tolist()!r} {inst.points['score'].tolist()!r}")
    d["nwb"] = _h("\n".join(parts))
    return d


@pytest.mark.parametrize("smooth", ["none", "offline", "causal"])
def test_a_single_instance_export_is_unchanged_but_for_the_jsonl_instances(smooth, tmp_path):
    video = write_video(tmp_path / "clip.mp4", frames=8)
    out = tmp_path / "out"
    export_records(single_frames(), out, video, ALL, smooth, multi=False)
    assert digests(out, str(video)) == PINNED[smooth]
    coco = json.loads((out / "clip.coco.json").read_text())
    assert len(coco["annotations"]) == 8 and "track_id" not in coco["annotations"][0]
    measured = single_frames()
    for line in (out / "clip.jsonl").read_text().splitlines():
        rec = json.loads(line)
        assert list(rec) == ["frame", "pts", "file", "keypoints", "instances"]
        (one,) = rec["instances"]
        assert one["track"] == 0 and one["keypoints"] == rec["keypoints"]  # the published (smoothed) keypoints
        # the instance's score as the model measured it (smoothing moves keypoints, it does not rescore them)
        kf = measured[rec["frame"]]
        shown = kf.scores[kf.visible]
        assert one["score"] == pytest.approx(float(shown.mean()) if len(shown) else -1.0, abs=1e-5)
