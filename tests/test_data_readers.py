import json
import shutil
from collections import Counter

import numpy as np
import pytest
from conftest import DLC_MOUSE, NAMES, SHARED_DATA, render_scene, write_dlc_project

from rtkp.data.coco import read_coco
from rtkp.data.load import load_dataset, load_split, read_split
from rtkp.errors import DataError


def test_dlc_reader_on_generated_project(dlc_project):
    data = load_dataset(dlc_project)
    assert data.kind == "dlc" and data.keypoint_names == NAMES and len(data) == 12
    s = data.samples[0]
    assert s.name == "labeled-data/clip/img000.png"
    assert s.visible.tolist() == [True, True, False]
    assert s.load_image().shape == (96, 128, 3)
    assert data.samples[1].visible.all()


def test_coco_reader_on_generated_file(coco_file):
    data = load_dataset(coco_file)
    assert data.kind == "coco" and data.keypoint_names == NAMES
    assert data.skeleton == [(0, 1), (0, 2)]
    assert len(data) == 4 and data.samples[1].visible.tolist() == [True, True, False]
    assert data.samples[0].box.tolist() == [10, 10, 50, 40]
    # a folder holding the JSON works too
    assert len(load_dataset(coco_file.parent)) == 4


def test_coco_file_names_relative_to_the_json_folder_or_an_images_folder(coco_file, tmp_path):
    # the common layout `"file_name": "images/0.jpg"`, relative to the JSON's folder
    doc = json.loads(coco_file.read_text())
    for im in doc["images"]:
        im["file_name"] = "images/" + im["file_name"]
    coco_file.write_text(json.dumps(doc))
    data = load_dataset(coco_file)
    assert len(data) == 4 and data.samples[0].name == "images/0.jpg"
    assert data.samples[0].image_path == coco_file.parent / "images" / "0.jpg"
    assert data.samples[0].load_image().shape == (96, 128, 3)
    # bare names with the images in a folder of their own, given explicitly
    for im in doc["images"]:
        im["file_name"] = im["file_name"].removeprefix("images/")
    coco_file.write_text(json.dumps(doc))
    elsewhere = tmp_path / "pictures"
    shutil.move(coco_file.parent / "images", elsewhere)
    data = load_split(coco_file, None, "train", images=elsewhere)
    assert len(data) == 4 and data.samples[3].image_path == elsewhere / "3.jpg"
    with pytest.raises(DataError, match="images folder not found"):
        load_dataset(coco_file, images=tmp_path / "nowhere")


def test_coco_several_instances_with_track_ids_on_some(coco_file):
    doc = json.loads(coco_file.read_text())
    second = dict(
        doc["annotations"][0],
        id=99,
        keypoints=[v + 5 if i % 3 < 2 else v for i, v in enumerate(doc["annotations"][0]["keypoints"])],
    )
    unlabelled = dict(second, id=100, keypoints=[v if i % 3 < 2 else 0 for i, v in enumerate(second["keypoints"])])
    doc["annotations"][0]["track_id"] = 7
    doc["annotations"] += [second | {"track_id": "b"}, unlabelled | {"track_id": 7}]
    coco_file.write_text(json.dumps(doc))
    data = load_dataset(coco_file)
    # the annotation with no labelled keypoint is skipped; track_id where given, as a string; the rest untracked
    assert len(data) == 5 and data.max_instances() == 2 and len(data.frames()) == 4
    assert [s.track for s in data.samples] == ["7", None, None, None, "b"]
    assert data.samples[4].image_key() == data.samples[0].image_key()
    # two animals with one track in one image: one line naming the frame and the track
    doc["annotations"][-2]["track_id"] = 7
    coco_file.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"frame 0.jpg holds two instances of track '7': give one of them another"):
        load_dataset(coco_file)
    # a file where no annotation has a labelled keypoint
    for ann in doc["annotations"]:
        ann["keypoints"][2::3] = [0] * (len(ann["keypoints"]) // 3)
    coco_file.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"no annotation has a visible keypoint .*: label at least one"):
        load_dataset(coco_file)


def test_missing_coco_image_error_names_every_place_looked(coco_file, tmp_path):
    from rtkp.errors import RtkpError

    doc = json.loads(coco_file.read_text())
    doc["images"][2]["file_name"] = "images/2.jpg"
    coco_file.write_text(json.dumps(doc))
    (coco_file.parent / "images" / "2.jpg").unlink()
    extra = tmp_path / "extra"
    extra.mkdir()
    with pytest.raises(DataError) as err:
        load_dataset(coco_file, images=extra)
    message = str(err.value)
    assert isinstance(err.value, RtkpError) and "\n" not in message
    assert message.startswith("images/2.jpg: image file not found")
    for candidate in (extra, coco_file.parent / "images", coco_file.parent):
        assert str(candidate / "images" / "2.jpg") in message


def test_split_selects_and_rejects(dlc_project, tmp_path):
    names = [f"labeled-data/clip/img{i:03d}.png" for i in range(12)]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": names[:9], "test": names[9:]}))
    assert len(load_split(dlc_project, split, "train")) == 9
    assert [s.name for s in load_split(dlc_project, split, "test").samples] == names[9:]
    split.write_text(json.dumps({"train": names[:9], "test": names[8:]}))
    with pytest.raises(DataError, match="both train and test"):
        read_split(split)
    split.write_text(json.dumps({"train": ["nope.png"], "test": []}))
    with pytest.raises(DataError, match="not in the data"):
        load_split(dlc_project, split, "train")


def test_bad_dlc_inputs(tmp_path):
    proj = write_dlc_project(tmp_path / "a")
    csv_path = next(proj.glob("labeled-data/*/CollectedData_*.csv"))
    (proj / "labeled-data/clip/img003.png").unlink()
    with pytest.raises(DataError, match=r"img003.png: image file not found"):
        load_dataset(proj)
    proj = write_dlc_project(tmp_path / "b", names=["a", "b", "c"])
    (proj / "config.yaml").write_text("bodyparts:\n- a\n- b\n- x\n")
    with pytest.raises(DataError, match="disagree with config.yaml"):
        load_dataset(proj)
    proj = write_dlc_project(tmp_path / "c")
    csv_path = next(proj.glob("labeled-data/*/CollectedData_*.csv"))
    csv_path.write_text("just,one,row\n")
    with pytest.raises(DataError, match="3-row header"):
        load_dataset(proj)
    proj = write_dlc_project(tmp_path / "d")
    csv_path = next(proj.glob("labeled-data/*/CollectedData_*.csv"))
    csv_path.write_text(
        csv_path.read_text().replace("labeled-data/clip/img002.png,", "labeled-data/clip/img002.png,abc", 1)
    )
    with pytest.raises(DataError, match="non-numeric"):
        load_dataset(proj)


def test_dlc_trailing_empty_column_is_dropped_and_an_empty_bodypart_is_refused(tmp_path):
    import subprocess
    import sys

    # A spreadsheet ends every line with a comma: the empty last column is no bodypart.
    proj = write_dlc_project(tmp_path / "a")
    csv_path = next(proj.glob("labeled-data/*/CollectedData_*.csv"))
    csv_path.write_text("".join(line + ",\n" for line in csv_path.read_text().splitlines()))
    data = load_dataset(proj)
    assert data.keypoint_names == NAMES and len(data) == 12
    assert not data.samples[0].visible[-1] and data.samples[1].visible.all()
    # Only the data lines end with a comma (the header was written by DeepLabCut).
    proj = write_dlc_project(tmp_path / "b")
    csv_path = next(proj.glob("labeled-data/*/CollectedData_*.csv"))
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join(lines[:3] + [line + ",," for line in lines[3:]]) + "\n")
    assert len(load_dataset(proj)) == 12
    # A value under the unnamed trailing column is refused, not silently dropped.
    csv_path.write_text("\n".join(lines[:3] + [lines[3] + ",7"] + lines[4:]) + "\n")
    with pytest.raises(DataError, match="line 4 has a value in column 8, which the header names no bodypart for"):
        load_dataset(proj)
    # An empty bodypart name in the middle is an error naming the column, in one line from the CLI.
    proj = write_dlc_project(tmp_path / "c")
    csv_path = next(proj.glob("labeled-data/*/CollectedData_*.csv"))
    lines = csv_path.read_text().splitlines()
    cells = lines[1].split(",")
    cells[3] = ""
    csv_path.write_text("\n".join([lines[0], ",".join(cells)] + lines[2:]) + "\n")
    with pytest.raises(DataError, match="column 4 has an empty bodypart name; name it or delete the column"):
        load_dataset(proj)
    out = subprocess.run(
        [sys.executable, "-m", "rtkp", "train", "--data", str(proj), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "empty bodypart name" in out.stderr
    assert not (tmp_path / "o").exists()


def test_bad_coco_inputs(coco_file):
    doc = json.loads(coco_file.read_text())
    coco_file.write_text(coco_file.read_text()[:-20])
    with pytest.raises(DataError, match="malformed JSON"):
        load_dataset(coco_file)
    doc["annotations"][0]["keypoints"] = doc["annotations"][0]["keypoints"][:-3]
    coco_file.write_text(json.dumps(doc))
    with pytest.raises(DataError, match="expected 9"):
        load_dataset(coco_file)
    doc["annotations"][0]["keypoints"] += [1, 1, 2]
    doc["categories"].append({"id": 2, "name": "other", "keypoints": ["a", "b", "c"]})
    coco_file.write_text(json.dumps(doc))
    with pytest.raises(DataError, match="disagree on keypoint names"):
        load_dataset(coco_file)
    doc["categories"].pop()
    coco_file.write_text(json.dumps(doc))
    (coco_file.parent / "images" / "2.jpg").unlink()
    with pytest.raises(DataError, match="2.jpg: image file not found"):
        load_dataset(coco_file)
    with pytest.raises(DataError, match="not found"):
        load_dataset(coco_file.parent / "missing.json")


def test_cli_reports_bad_data_in_one_line(tmp_path):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "rtkp", "train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert out.stderr.strip().count("\n") == 0 and "data path not found" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.skipif(not DLC_MOUSE.is_dir(), reason="../shared/data not present")
def test_dlc_reader_on_real_mouse_project():
    data = load_dataset(DLC_MOUSE)
    assert data.keypoint_names == ["snout", "leftear", "rightear", "tailbase"]
    assert len(data) == 116 and all(s.visible.all() for s in data.samples)
    first = data.samples[0]
    np.testing.assert_allclose(first.keypoints[0], [21.521, 265.428], atol=1e-3)
    split = DLC_MOUSE / "split.json"
    assert len(load_split(DLC_MOUSE, split, "test")) == 24
    assert len(load_split(DLC_MOUSE, split, "train")) == 92


@pytest.mark.skipif(not (SHARED_DATA / "mmpose_samples").is_dir(), reason="../shared/data not present")
@pytest.mark.parametrize("name", ["coco", "ap10k", "horse10", "fly", "wflw", "onehand10k"])
def test_coco_reader_on_real_mmpose_samples(name, tmp_path):
    folder = SHARED_DATA / "mmpose_samples" / name
    data = read_coco(next(folder.glob("*.json")))
    assert len(data) >= 1 and len(data.keypoint_names) >= 9
    per_image = max(Counter(s.image_path for s in data.samples).values())
    assert len(load_dataset(next(folder.glob("*.json")))) == len(data)
    if per_image > 1:  # coco (up to 5 people an image), wflw (3 faces): every instance, refused where one is needed
        assert name in ("coco", "wflw") and data.max_instances() == per_image
        with pytest.raises(DataError, match="more than one instance .*: this needs one labelled instance per frame"):
            load_dataset(next(folder.glob("*.json")), several=False)
    for s in data.samples:
        assert s.keypoints.shape == (len(data.keypoint_names), 2) and s.visible.any()
    img = data.samples[0].load_image()
    assert img.ndim == 3 and img.shape[2] == 3
    # the same file copied without its images is refused, naming an image
    shutil.copy(next(folder.glob("*.json")), tmp_path / "x.json")
    with pytest.raises(DataError, match="image file not found"):
        load_dataset(tmp_path / "x.json")


def write_madlc_project(root, individuals=("mouse1",), unique=(), n=6, blank=()):
    """A multi-animal DeepLabCut project (4-row header, 3 index columns) over conftest's scenes: individual j's points
    are the scene's shifted by 10 j px, the unique parts sit at (5 + i, 5); (frame, individual) in `blank` is empty."""
    import cv2

    rng = np.random.default_rng(0)
    folder = root / "labeled-data" / "clip"
    folder.mkdir(parents=True)
    lines = ["multianimalproject: true", "scorer: tester", "bodyparts: MULTI!", "individuals:"]
    lines += [f"- {w}" for w in individuals] + ["multianimalbodyparts:"] + [f"- {p}" for p in NAMES]
    lines += ["uniquebodyparts:" + ("" if unique else " []")] + [f"- {p}" for p in unique]
    (root / "config.yaml").write_text("\n".join(lines) + "\n")
    groups = [(w, NAMES) for w in individuals] + ([("single", list(unique))] if unique else [])
    cols = [(w, p) for w, parts in groups for p in parts]
    rows = [
        ["scorer", "", ""] + ["tester"] * 2 * len(cols),
        ["individuals", "", ""] + [w for w, _ in cols for _ in "xy"],
        ["bodyparts", "", ""] + [p for _, p in cols for _ in "xy"],
        ["coords", "", ""] + ["x", "y"] * len(cols),
    ]
    for i in range(n):
        image, kps = render_scene(rng)
        cv2.imwrite(str(folder / f"img{i:03d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cells = []
        for j, (who, parts) in enumerate(groups):
            points = [(5.0 + m, 5.0) for m in range(len(parts))] if who == "single" else kps + 10 * j
            cells += ["", ""] * len(parts) if (i, who) in blank else [f"{v:.3f}" for xy in points for v in xy]
        rows.append(["labeled-data", "clip", f"img{i:03d}.png", *cells])
    (folder / "CollectedData_tester.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
    return root


def test_multi_animal_dlc_with_one_individual_reads_like_single_animal(tmp_path):
    data = load_dataset(write_madlc_project(tmp_path / "one"))
    single = load_dataset(write_dlc_project(tmp_path / "single", n=6))
    assert data.kind == "dlc" and data.keypoint_names == NAMES and len(data) == 6
    assert data.samples[0].name == "labeled-data/clip/img000.png"
    for a, b in zip(data.samples[1:], single.samples[1:]):
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-3)
        assert a.visible.all() and np.array_equal(a.load_image(), b.load_image())
    # unique parts declared but never labelled: still only the individual's keypoints
    blank = [(i, "single") for i in range(6)]
    data = load_dataset(write_madlc_project(tmp_path / "unlabelled", unique=("corner",), blank=blank))
    assert data.keypoint_names == NAMES and len(data) == 6
    # two individuals, one labelled per frame (the other's cells empty): one instance per frame
    blank = [(i, "mouse2" if i % 2 else "mouse1") for i in range(6)]
    data = load_dataset(write_madlc_project(tmp_path / "alternate", ("mouse1", "mouse2"), blank=blank))
    assert len(data) == 6
    np.testing.assert_allclose(data.samples[2].keypoints, single.samples[2].keypoints + 10, atol=1e-3)  # mouse2
    np.testing.assert_allclose(data.samples[3].keypoints, single.samples[3].keypoints, atol=1e-3)  # mouse1


def test_multi_animal_dlc_gives_each_individual_with_its_name_as_track(tmp_path):
    project = write_madlc_project(tmp_path / "two", ("mouse1", "mouse2"))
    data = load_dataset(project)
    assert len(data) == 12 and data.max_instances() == 2 and len(data.frames()) == 6
    first = [data.samples[i] for i in data.frames()[data.samples[0].image_key()]]
    assert [s.track for s in first] == ["mouse1", "mouse2"]
    np.testing.assert_allclose(first[1].keypoints, first[0].keypoints + 10, atol=1e-3)
    # callers that need one instance per frame still get the one-line refusal, with the counts
    with pytest.raises(DataError, match=r"6 of 6 labelled frames hold more than one instance \(up to 2 in a frame, 12"):
        load_dataset(project, several=False)
    # one individual + labelled unique parts: the unique parts are one more instance, track "single"
    data = load_dataset(write_madlc_project(tmp_path / "unique", unique=("corner", "lamp")))
    assert data.keypoint_names == [*NAMES, "corner", "lamp"] and len(data) == 12 and data.max_instances() == 2
    assert [s.track for s in data.samples[:2]] == ["mouse1", "single"]
    assert data.samples[1].visible.tolist() == [False, False, False, True, True]
    # only unique parts labelled in a frame: that frame holds one instance (its keypoints: the unique ones)
    blank = [(i, "mouse1") for i in range(6)]
    data = load_dataset(write_madlc_project(tmp_path / "only_unique", unique=("corner", "lamp"), blank=blank))
    assert data.keypoint_names == ["corner", "lamp"] and len(data) == 6 and data.samples[2].visible.all()
    np.testing.assert_allclose(data.samples[2].keypoints, [[5, 5], [6, 5]])
    # a single-animal project has no tracks
    assert {s.track for s in load_dataset(write_dlc_project(tmp_path / "single", n=3)).samples} == {None}
    # nothing labelled anywhere: an error naming the fix (a frame with nothing labelled alone is kept, as a scene)
    empty = write_madlc_project(tmp_path / "empty", ("mouse1",), blank=[(i, "mouse1") for i in range(6)])
    with pytest.raises(DataError, match="no frame in labeled-data/.*has a labelled point: label frames in DeepLabCut"):
        load_dataset(empty)


def test_bad_multi_animal_dlc_inputs(tmp_path):
    project = write_madlc_project(tmp_path / "a", ("mouse1",))
    (project / "config.yaml").write_text((project / "config.yaml").read_text().replace("- mouse1", "- mouse9"))
    with pytest.raises(DataError, match=r"individual 'mouse1' is not in config.yaml's individuals \['mouse9'\]"):
        load_dataset(project)
    project = write_madlc_project(tmp_path / "b", ("mouse1",))
    csv_path = next(project.glob("labeled-data/*/CollectedData_*.csv"))
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join(lines[:1] + lines[2:]) + "\n")  # no individuals row
    with pytest.raises(DataError, match="multi-animal 4-row header"):
        load_dataset(project)
    project = write_madlc_project(tmp_path / "c", ("mouse1",))
    (project / "config.yaml").write_text((project / "config.yaml").read_text().replace("- right_eye", "- tail"))
    with pytest.raises(DataError, match="mouse1's bodyparts .* disagree with config.yaml's multianimalbodyparts"):
        load_dataset(project)
