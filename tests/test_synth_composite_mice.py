"""tools/composite_mice.py on a tiny generated DeepLabCut project: two "mice" per image, labels exact to the pixel,
training and test frames never mixed."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import COLOURS, NAMES, REPO, write_dlc_project

TOOL = REPO / "tools" / "composite_mice.py"


@pytest.fixture(scope="module")
def composited(tmp_path_factory):
    root = tmp_path_factory.mktemp("composite")
    project = write_dlc_project(root / "proj", n=12, seed=3)
    names = [f"labeled-data/clip/img{i:03d}.png" for i in range(12)]
    split = root / "split.json"
    split.write_text(json.dumps({"train": names[:8], "test": names[8:]}))
    out = root / "out"
    run = subprocess.run(
        [sys.executable, str(TOOL), "--data", str(project), "--split", str(split), "--out", str(out), "--seed", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return project, split, out


def read_rgb(path):
    import cv2

    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_every_image_holds_two_mice_whose_labels_sit_on_their_pixels(composited):
    from pycocotools.coco import COCO

    project, _, out = composited
    coco = COCO(str(out / "annotations.json"))
    assert coco.loadCats(1)[0]["keypoints"] == NAMES
    images = coco.loadImgs(coco.getImgIds())
    assert len(images) == 12  # one composite per host frame, none skipped
    for im in images:
        pixels = read_rgb(out / "images" / im["file_name"])
        host = read_rgb(project / im["host"])
        anns = coco.loadAnns(coco.getAnnIds(imgIds=im["id"]))
        assert sorted(a["track_id"] for a in anns) == [0, 1]
        for a in anns:
            kp = np.array(a["keypoints"]).reshape(-1, 3)
            for k, (x, y, v) in enumerate(kp):
                if v != 2:
                    continue
                at = pixels[int(round(y)), int(round(x))].astype(int)
                # each label lands on its own coloured disc: the host's where it was, the pasted one turned and moved
                assert np.abs(at - COLOURS[k]).max() < 60, (im["file_name"], a["track_id"], NAMES[k], at)
                if a["track_id"] == 0:  # the host's mouse is never covered
                    assert np.abs(at - host[int(round(y)), int(round(x))]).max() <= 2
        pasted = next(a for a in anns if a["track_id"] == 1)
        hosted = next(a for a in anns if a["track_id"] == 0)
        assert pasted["keypoints"] != hosted["keypoints"] and im["host"] != im["donor"]


def test_unlabelled_keypoints_stay_unlabelled(composited):
    """Frame 0 of the generated project has no label for its last keypoint: wherever it is host or donor, v = 0."""
    _, _, out = composited
    doc = json.loads((out / "annotations.json").read_text())
    first = "labeled-data/clip/img000.png"
    seen = 0
    for im in doc["images"]:
        for a in doc["annotations"]:
            if a["image_id"] == im["id"] and first == (im["host"] if a["track_id"] == 0 else im["donor"]):
                assert a["keypoints"][-1] == 0 and a["keypoints"][2] == 2
                seen += 1
    assert seen >= 1  # img000 is a train host


def test_train_and_test_frames_are_never_mixed(composited):
    _, split, out = composited
    source = json.loads(split.read_text())
    doc = json.loads((out / "annotations.json").read_text())
    written = json.loads((out / "split.json").read_text())
    for im in doc["images"]:
        part = im["part"]
        assert im["host"] in source[part] and im["donor"] in source[part]
        assert im["file_name"] in written[part]
    assert len(written["train"]) == 8 and len(written["test"]) == 4
    assert not set(written["train"]) & set(written["test"])


def test_rtkp_reads_the_composites_as_two_instance_frames(composited):
    from rtkp.data.load import load_split

    _, _, out = composited
    train = load_split(out / "annotations.json", out / "split.json", "train")
    test = load_split(out / "annotations.json", out / "split.json", "test")
    assert train.max_instances() == 2 and len(train.frames()) == 8 and len(test.frames()) == 4
    for members in train.frames().values():
        assert sorted(train.samples[i].track for i in members) == ["0", "1"]


def test_a_bad_region_is_one_line(tmp_path):
    project = write_dlc_project(tmp_path / "proj", n=4)
    run = subprocess.run(
        [sys.executable, str(TOOL), "--data", str(project), "--out", str(tmp_path / "o"), "--region", "1,2,3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines() == [
        "composite_mice: --region '1,2,3': give X0,Y0,X1,Y1 in pixels, e.g. 20,50,620,455"
    ]
