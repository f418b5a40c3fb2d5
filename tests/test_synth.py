"""`rtkp synth --targets N`: several identical targets per image and per video, exact labels with track ids."""

import json

import numpy as np
import pytest

from rtkp.cli import main
from rtkp.demo.synth import IMAGE_SIZE, write_coco_set
from rtkp.demo.target import render_target

NO_OCCLUDERS = {"none": (0.0, 0.0)}  # only the pages hide each other


def page_polygon(hmat: np.ndarray, size) -> np.ndarray:
    """(4, 2) the page's corners in the image, by hand (homogeneous coordinates), independently of synth.project."""
    w, h = size
    corners = np.array([[-0.5, -0.5, 1], [w - 0.5, -0.5, 1], [w - 0.5, h - 0.5, 1], [-0.5, h - 0.5, 1]]) @ hmat.T
    return corners[:, :2] / corners[:, 2:]


def depth_inside(polygon: np.ndarray, point) -> float:
    """Signed distance of `point` from the polygon's edge: > 0 inside."""
    import cv2

    return cv2.pointPolygonTest(polygon.astype(np.float32), (float(point[0]), float(point[1])), True)


@pytest.fixture(scope="module")
def three_targets(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth3")
    return write_coco_set(out, 8, seed=11, levels=NO_OCCLUDERS, progress=False, targets=3)


def test_each_image_has_one_annotation_per_target_with_exact_keypoints_and_a_track_id(three_targets):
    from pycocotools.coco import COCO

    coco = COCO(str(three_targets))
    t = render_target(4.0)
    assert len(coco.getImgIds()) == 8
    for image_id in coco.getImgIds():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert sorted(a["track_id"] for a in anns) == [0, 1, 2]
        for a in anns:
            hmat = np.array(a["homography"])
            ph = np.concatenate([t.keypoints_px, np.ones((12, 1))], 1) @ hmat.T
            kp = np.array(a["keypoints"]).reshape(-1, 3)
            assert np.abs(kp[:, :2] - ph[:, :2] / ph[:, 2:]).max() < 0.01
            x, y, w, h = a["bbox"]
            assert w > 0 and h > 0 and a["area"] == pytest.approx(w * h) and a["num_keypoints"] == (kp[:, 2] == 2).sum()


def test_a_page_on_top_hides_the_keypoints_it_covers_and_only_those(three_targets):
    doc = json.loads(three_targets.read_text())
    t = render_target(4.0)
    by_image: dict = {}
    for a in doc["annotations"]:
        by_image.setdefault(a["image_id"], {})[a["track_id"]] = a
    hidden_by_a_page = 0
    for anns in by_image.values():
        for track, a in anns.items():
            above = [page_polygon(np.array(anns[u]["homography"]), t.size_px) for u in anns if u > track]
            for x, y, v in np.array(a["keypoints"]).reshape(-1, 3):
                if not (0 <= x <= IMAGE_SIZE[0] - 1 and 0 <= y <= IMAGE_SIZE[1] - 1):
                    assert v == 0
                    continue
                depth = max((depth_inside(p, (x, y)) for p in above), default=-np.inf)
                if depth > 1.5:  # well inside a page pasted later: hidden, but labelled (COCO v = 1)
                    assert v == 1
                    hidden_by_a_page += 1
                elif depth < -1.5:  # no page over it, no occluder in this set
                    assert v == 2
    assert hidden_by_a_page > 0  # the seed has overlapping pages, so the rule was exercised


def test_rtkp_reads_the_set_as_frames_of_three_instances(three_targets):
    from rtkp.data.load import load_dataset

    data = load_dataset(three_targets)
    assert data.max_instances() == 3 and len(data.frames()) == 8 and len(data.keypoint_names) == 12
    for members in data.frames().values():  # each target's track_id is its Sample's track
        assert sorted(data.samples[i].track for i in members) == ["0", "1", "2"]


def test_one_target_keeps_the_single_target_format(tmp_path):
    doc = json.loads(write_coco_set(tmp_path / "one", 2, seed=11, progress=False).read_text())
    assert len(doc["annotations"]) == 2 and "targets" not in doc["info"]
    assert all("homography" in im for im in doc["images"])
    assert not any("track_id" in a for a in doc["annotations"])


def test_video_targets_keep_their_track_through_the_clip(tmp_path):
    import av

    from rtkp.demo.video import render_video

    path = render_video(tmp_path / "v.mp4", seconds=1.0, fps=10.0, seed=4, targets=2)
    gt = json.loads(path.with_suffix(".gt.json").read_text())
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 10 == len(gt["frames"])
    assert gt["targets"] == 2
    tracks = np.array([[inst["kp"] for inst in f["instances"]] for f in gt["frames"]])  # (frames, 2, K, 2)
    assert [inst["track"] for inst in gt["frames"][0]["instances"]] == [0, 1]
    for f in gt["frames"]:  # the frame-level ground truth stays track 0's, for readers of one target
        assert f["kp"] == f["instances"][0]["kp"] and f["visible"] == f["instances"][0]["visible"]
    # identity holds: each target moves less between frames than the targets are apart
    step = np.linalg.norm(np.diff(tracks.mean(2), axis=0), axis=-1).max()
    apart = np.linalg.norm(tracks[:, 0].mean(1) - tracks[:, 1].mean(1), axis=-1).min()
    assert step < 0.25 * apart
    # side by side: track 0 starts in the left half, track 1 in the right half
    assert tracks[0, 0, :, 0].mean() < IMAGE_SIZE[0] / 2 < tracks[0, 1, :, 0].mean()


def test_synth_command_takes_targets(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "s"), "--images", "2", "--targets", "2", "--quiet"]) == 0
    doc = json.loads((tmp_path / "s" / "annotations.json").read_text())
    assert len(doc["annotations"]) == 4 and doc["info"]["targets"] == 2
    assert "2 images with 2 targets each" in capsys.readouterr().out
    assert main(["synth", "--out", str(tmp_path / "t"), "--targets", "0"]) == 2
    err = capsys.readouterr().err
    assert "--targets must be 1 to" in err and "Traceback" not in err
