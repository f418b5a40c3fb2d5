"""The printable target, the synthetic generator's exact labels, demo videos, and the default model on them."""

import json

import numpy as np
import pytest

from rtkp.cli import DEFAULT_MODEL, main
from rtkp.demo.synth import IMAGE_SIZE, homography, project, random_pose, render_sample, warp_target
from rtkp.demo.target import PALETTE, keypoint_layout, render_target


def test_target_has_unique_keypoints_inside_the_page_at_colour_junctions():
    t = render_target(4.0)
    w, h = t.size_px
    _, names, quads = keypoint_layout()
    assert len(t.names) == len(set(t.names)) == 12 and len(set(quads)) == 12
    assert ((t.keypoints_px > 20 * 4) & (t.keypoints_px < np.array([w, h]) - 20 * 4)).all()
    for (x, y), quad in zip(t.keypoints_px, quads):
        j, i = int(x + 0.5), int(y + 0.5)  # the junction lies between pixels j-1 and j, i-1 and i
        around = [t.image[i - 2, j - 2], t.image[i - 2, j + 1], t.image[i + 1, j - 2], t.image[i + 1, j + 1]]
        assert [tuple(int(v) for v in c) for c in around] == [PALETTE[q] for q in quad]
    assert np.allclose(render_target(4.0).image, t.image)  # deterministic


def test_target_command_writes_pdf_and_png(tmp_path, capsys):
    assert main(["target", "--out", str(tmp_path / "t.pdf"), "--px-per-mm", "4"]) == 0
    data = (tmp_path / "t.pdf").read_bytes()
    assert (
        data.startswith(b"%PDF-1.4") and data.rstrip().endswith(b"%%EOF") and b"/MediaBox [0 0 595.28 841.89]" in data
    )
    assert main(["target", "--out", str(tmp_path / "t.png"), "--px-per-mm", "2"]) == 0
    assert main(["target", "--out", str(tmp_path / "t.gif")]) == 2


def test_synthetic_labels_project_exactly(tmp_path):
    from rtkp.demo.synth import write_coco_set

    path = write_coco_set(tmp_path / "s", 6, seed=5, progress=False)
    doc = json.loads(path.read_text())
    t = render_target(4.0)
    for im, ann in zip(doc["images"], doc["annotations"]):
        hmat = np.array(im["homography"])
        kp = np.array(ann["keypoints"]).reshape(-1, 3)
        # independent reprojection: homogeneous coordinates by hand
        ph = np.concatenate([t.keypoints_px, np.ones((12, 1))], 1) @ hmat.T
        expect = ph[:, :2] / ph[:, 2:]
        assert np.abs(kp[:, :2] - expect).max() < 0.01
    from rtkp.data.load import load_dataset

    data = load_dataset(path)
    assert len(data.keypoint_names) == 12 and len(data) >= 1


def test_warp_puts_page_pixels_where_the_homography_says():
    t = render_target(4.0)
    page = np.zeros_like(t.image)
    x, y = t.keypoints_px[4]
    page[int(y) - 1 : int(y) + 3, int(x) - 1 : int(x) + 3] = 255  # a 4x4 block centred on the keypoint
    marked = type(t)(page, t.keypoints_px, t.keypoints_mm, t.names, t.px_per_mm)
    pose = random_pose(np.random.default_rng(3))
    pose = type(pose)(320, 240, 400, 0.4, 0.1, -0.1)
    hmat = homography(pose, t.size_px)
    out = warp_target(marked, hmat, np.zeros((IMAGE_SIZE[1], IMAGE_SIZE[0], 3), np.uint8))
    ys, xs = np.nonzero(out[..., 0])
    wts = out[ys, xs, 0].astype(float)
    centre = np.array([np.average(xs, weights=wts), np.average(ys, weights=wts)])
    assert np.linalg.norm(centre - project(hmat, t.keypoints_px[4:5])[0]) < 0.15


def test_ground_truth_video(tmp_path):
    import av

    from rtkp.demo.video import render_video

    path = render_video(tmp_path / "v.mp4", seconds=1.0, fps=10.0, seed=3)
    gt = json.loads(path.with_suffix(".gt.json").read_text())
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 10 == len(gt["frames"])
    assert len(gt["frames"][0]["kp"]) == 12 and gt["names"] == render_target(4.0).names


@pytest.fixture
def default_model():
    """The demo target's model, shipped in git: missing is a failure, not a reason to skip."""
    assert (DEFAULT_MODEL / "manifest.json").is_file(), f"{DEFAULT_MODEL}: the shipped default model is missing"
    return DEFAULT_MODEL


def test_default_model_finds_the_target_in_a_generated_frame(default_model):
    from rtkp.backends import open_backend, read_model_info
    from rtkp.messages import Frame
    from rtkp.tracker import Tracker

    backend = open_backend(default_model, "onnxruntime", threads=2)
    manifest = read_model_info(default_model).manifest
    t = render_target(4.0)
    errors = []
    for seed in range(4):
        image, kps, vis, _ = render_sample(np.random.default_rng([99, seed]), t)
        pred = Tracker(backend, manifest).process(Frame(seed, None, 0, image))
        errors.append(np.linalg.norm(pred.keypoints[vis] - kps[vis], axis=1))
        assert pred.visible[vis].mean() > 0.7
    errors = np.concatenate(errors)
    assert np.median(errors) < 3.0 and (errors < 10).mean() > 0.9


def test_default_model_is_the_demo_targets_model(default_model):
    """What `rtkp run` uses without --model tracks the printable target's keypoints (and its help says so)."""
    from rtkp.cli import build_parser
    from rtkp.manifest import read_manifest

    assert list(read_manifest(default_model).keypoint_names) == list(render_target(4.0).names)
    for command in ("run", "export", "eval", "build-engine", "bench"):
        sub = build_parser()._subparsers._group_actions[0].choices[command]
        text = " ".join(sub.format_help().split())
        assert "mouse model" not in text and "demo target" in text, command


def test_run_source_demo_plays_the_cached_demo_video(default_model, tmp_path, monkeypatch, capsys):
    from rtkp.demo import video

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(video, "DEMO_SECONDS", 2.0)  # a short demo keeps the test quick; the path logic is the same
    assert main(["run", "--source", "demo", "--headless", "--publish", "none", "--max-frames", "30"]) == 0
    import re

    out = capsys.readouterr().out
    names = ", ".join(render_target(4.0).names)
    assert out.splitlines()[0].startswith(f"rtkp run: model target_coke (12 keypoints: {names}), backend ")
    assert re.search(r"\d+ frames in .* policy live", out)
    # every decoded frame is accounted for: tracked, dropped by a named stage, or in flight at the end
    decoded, tracked, dropped, full, superseded, flight = map(
        int,
        re.search(
            r"(\d+) decoded = (\d+) tracked \+ (\d+) dropped \((\d+) ring full at decode, (\d+) superseded "
            r"before inference\) \+ (\d+) in flight at the end",
            out,
        ).groups(),
    )
    assert decoded == 30 and tracked > 0 and dropped == full + superseded
    assert decoded == tracked + dropped + flight
    assert list((tmp_path / "rtkp").glob("demo-v1-*.mp4"))
