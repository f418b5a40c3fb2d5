"""tools/instance_report.py and the COCO-export reader: an .slp of two tracked flies, exports written as `rtkp export`
writes COCO, the tool run as a subprocess."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, SHARED_DATA, write_video

from rtkp.errors import DataError
from rtkp.eval.coco_predictions import read_predicted_coco

sio = pytest.importorskip("sleap_io")
pytest.importorskip("motmetrics")
pytest.importorskip("pycocotools")

NODES = ["head", "thorax", "abdomen"]
FRAMES = 12
TOOL = REPO / "tools" / "instance_report.py"


def fly(frame: int, which: int) -> np.ndarray:
    """(3, 2) fly `which`'s keypoints in `frame`: 30 px long, the two flies 50 px apart."""
    return np.array([[10, 10], [25, 12], [40, 10]], float) + [0, 50 * which] + [2 * frame, 0]


def write_labels(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_video(folder / "clip.mp4", frames=FRAMES)
    skeleton = sio.Skeleton(list(NODES))  # it would turn NODES to Nodes
    tracks = [sio.Track("female"), sio.Track("male")]
    video = sio.Video.from_filename(str(folder / "clip.mp4"))
    frames = [
        sio.LabeledFrame(
            video=video,
            frame_idx=f,
            instances=[sio.Instance.from_numpy(fly(f, w), skeleton=skeleton, track=tracks[w]) for w in (0, 1)],
        )
        for f in range(FRAMES)
    ]
    path = folder / "labels.slp"
    sio.save_slp(sio.Labels(labeled_frames=frames, videos=[video], skeletons=[skeleton], tracks=tracks), str(path))
    return path


def write_export(path: Path, frames, swap_from: int | None = None, names=NODES) -> Path:
    """A COCO document like `rtkp export`'s for a multi-instance model, over label frames `frames` (frame_index 0 =
    frames[0]); the flies' track ids exchange from export frame `swap_from` on."""
    images, annotations = [], []
    for i, f in enumerate(frames):
        images.append({"id": i + 1, "file_name": f"clip#{i:06d}", "frame_index": i, "pts": i})
        for w in (0, 1):
            track = 1 - w if swap_from is not None and i >= swap_from else w
            flat = [v for x, y in fly(f, w) for v in (x + 0.5, y, 2)]
            annotations.append(
                {"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1, "keypoints": flat, "score": 0.8}
                | {"track_id": track}
            )
    doc = {"images": images, "annotations": annotations, "categories": [{"id": 1, "keypoints": list(names)}]}
    path.write_text(json.dumps(doc))
    return path


def run_tool(*args):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True)


def test_the_report_of_a_perfect_export_meets_every_target(tmp_path):
    labels = write_labels(tmp_path / "proj")
    export = write_export(tmp_path / "pred.json", range(FRAMES))
    out = run_tool("--coco", export, "--labels", labels, "--json", tmp_path / "r.json")
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["frames"] == FRAMES and report["found"] == 2 * FRAMES
    assert report["per_track"]["female"]["pck"]["0.1"] == 1.0 and report["tracking"]["id_switches"] == 0
    assert all(t["met"] for t in report["targets"].values())
    assert "female" in out.stdout and "MISS" not in out.stdout


def test_a_cut_of_the_frames_is_scored_against_its_own_labels_and_swaps_show(tmp_path):
    labels = write_labels(tmp_path / "proj")
    # an export of label frames 4..9 (its frame_index 0 is label frame 4), ids swapped from its frame 3 on
    export = write_export(tmp_path / "cut.json", range(4, 10), swap_from=3)
    out = run_tool("--coco", export, "--labels", labels, "--frames", "4:10")
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "cut.instances.json").read_text())
    assert report["frames"] == 6 and report["frame_numbers"] == [4, 9] and report["pck"]["0.1"] == 1.0
    assert report["tracking"]["id_switches"] == 2 and report["tracking"]["switch_frames"] == 1
    assert not report["targets"]["ID switches"]["met"] and not report["targets"]["IDF1"]["met"]
    assert report["targets"]["pck@0.1 of every fly"]["met"]
    # the same export scored against the wrong frames: the flies are 8 px further on, PCK@0.1 (3 px) fails
    out = run_tool("--coco", export, "--labels", labels, "--frames", "4:10", "--offset", "0", "--json", tmp_path / "w")
    wrong = json.loads((tmp_path / "w").read_text())
    assert out.returncode == 0 and wrong["frame_numbers"] == [4, 5] and wrong["pck"]["0.1"] == 0.0


def test_bad_inputs_are_one_line(tmp_path):
    labels = write_labels(tmp_path / "proj")
    export = write_export(tmp_path / "pred.json", range(FRAMES))
    out = run_tool("--coco", export, "--labels", labels, "--frames", "4:10", "--offset", "100")
    assert out.returncode == 3 and out.stderr.strip().count("\n") == 0 and "check --frames and --offset" in out.stderr
    out = run_tool("--coco", tmp_path / "none.json", "--labels", labels)
    assert out.returncode == 3 and "predictions file not found" in out.stderr and "Traceback" not in out.stderr
    other = write_export(tmp_path / "other.json", range(FRAMES), names=["a", "b", "c"])
    out = run_tool("--coco", other, "--labels", labels)
    assert out.returncode == 3 and "have none in common" in out.stderr and out.stderr.strip().count("\n") == 0
    out = run_tool("--coco", export, "--labels", labels, "--frames", "9:3")
    assert out.returncode != 0 and "needs 0 <= a < b" in out.stderr


def test_the_export_reader(tmp_path):
    export = write_export(tmp_path / "pred.json", range(3))
    doc = json.loads(export.read_text())
    doc["images"].append({"id": 99, "file_name": "empty", "frame_index": 3})  # a frame where nothing was found
    doc["annotations"][0]["keypoints"][2] = 0  # head not reported
    del doc["annotations"][1]["track_id"]
    export.write_text(json.dumps(doc))
    names, frames = read_predicted_coco(export)
    assert names == NODES and sorted(frames) == [0, 1, 2, 3] and frames[3] == []
    first, second = frames[0]
    assert first.visible.tolist() == [False, True, True] and first.track == 0 and first.score == 0.8
    np.testing.assert_allclose(first.keypoints, fly(0, 0) + [0.5, 0])
    assert second.track is None
    del doc["images"][0]["frame_index"]
    export.write_text(json.dumps(doc))
    with pytest.raises(DataError, match="has no frame_index: this needs an `rtkp export` COCO file of a video"):
        read_predicted_coco(export)
    export.write_text("{")
    with pytest.raises(DataError, match="malformed JSON"):
        read_predicted_coco(export)


CLIP = SHARED_DATA / "sleap_flies_clip" / "clip_train.slp"


@pytest.mark.skipif(not CLIP.is_file(), reason="../shared/data not present")
def test_our_validation_frames_of_the_real_clip_scored_against_an_export_of_their_labels(tmp_path):
    from rtkp.data.load import load_dataset
    from rtkp.eval.instances import labelled_frames

    data = load_dataset(CLIP, check_images=False)
    frames = [f for f in labelled_frames(data) if 1000 <= f[0].frame < 1250]
    ids = {"female": 0, "male": 1}
    images, annotations = [], []
    for f in frames:  # the labels as a model's export of frames 1000..1249 (frame_index 0 = frame 1000), 1 px off
        i = f[0].frame - 1000
        images.append({"id": i + 1, "file_name": f"clip#{i:06d}", "frame_index": i})
        for s in f:
            flat = [float(v) for (x, y), seen in zip(s.keypoints + 1, s.visible) for v in (x, y, 2 * seen)]
            annotations.append({"image_id": i + 1, "keypoints": flat, "score": 0.9, "track_id": ids[s.track]})
    export = tmp_path / "val.json"
    doc = {"images": images, "annotations": annotations, "categories": [{"id": 1, "keypoints": data.keypoint_names}]}
    export.write_text(json.dumps(doc))
    out = run_tool("--coco", export, "--labels", CLIP, "--frames", "1000:1250")
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "val.instances.json").read_text())
    assert report["frames"] == 250 and report["found"] == 500 and report["frame_numbers"] == [1000, 1249]
    assert set(report["per_track"]) == {"female", "male"} and report["rmse_px"] == pytest.approx(np.sqrt(2))
    assert all(t["met"] for t in report["targets"].values()) and report["oks"]["map"] > 0.9
