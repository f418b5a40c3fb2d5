"""Following the animal with a window (rtkp.follow) on a real model and a real video: the same keypoints as the whole
frame, the same records however an export is split, and never on unrelated images.

The shipped demo-target model, with a `crop_size` of 224×224 in a copy of its folder (its 320×256 input: 61 % of the
pixels), on a ground-truth video of `rtkp synth` (the target moving over 90 frames).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import shipped_model

from rtkp.cli import main
from rtkp.config import SmoothingConfig

CROP = [224, 224]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """(model folder with crop_size, video, ground truth {"kp": (F, K, 2), "visible": (F, K)})."""
    root = tmp_path_factory.mktemp("follow")
    model = root / "target"
    model.mkdir()
    for name in ("manifest.json", "model.safetensors"):
        shutil.copy(shipped_model("target_coke") / name, model / name)
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["crop_size"] = CROP
    (model / "manifest.json").write_text(json.dumps(manifest))
    synth = ["synth", "--out", str(root / "synth"), "--images", "0", "--videos", "1", "--seconds", "3", "--quiet"]
    assert main(synth) == 0
    video = next((root / "synth" / "videos").glob("*.mp4"))
    gt = json.loads(video.with_suffix(".gt.json").read_text())
    truth = {
        "kp": np.array([f["kp"] for f in gt["frames"]], np.float32),
        "visible": np.array([f["visible"] for f in gt["frames"]], bool),
    }
    return model, video, truth


def track(model: Path, video: Path, follow: bool, start: int = 0):
    """Every frame's KeypointFrame from `start` on, and the Tracker's Follower (None when not following)."""
    from rtkp.backends import open_backend
    from rtkp.pipeline.source_spec import parse_source
    from rtkp.pipeline.sources import Source
    from rtkp.tracker import Tracker

    backend = open_backend(model, "onnxruntime", threads=2)
    tracker = Tracker(backend, backend.info.manifest, SmoothingConfig(filter="none"), follow=follow)
    tracker.model.new_sequence(consecutive=True)
    out = [tracker.process(f) for f in Source(parse_source(str(video)), start=start)]
    tracker.close()
    return out, tracker.model.follower


def rmse(frames, truth) -> float:
    err = [np.linalg.norm(kf.keypoints - truth["kp"][kf.index], axis=1)[truth["visible"][kf.index]] for kf in frames]
    return float(np.sqrt(np.mean(np.square(np.concatenate(err)))))


def test_following_finds_the_keypoints_the_whole_frame_finds(scene):
    model, video, truth = scene
    followed, follower = track(model, video, follow=True)
    whole, none = track(model, video, follow=False)
    assert none is None and len(followed) == len(whole) == 90
    stats = follower.stats
    # most frames through the window; the rest whole (the first, every 60th, and where the target nears a border)
    assert stats["windows"] >= 45 and stats["windows"] + stats["whole"] == 90, stats
    vis_f = np.array([kf.visible for kf in followed])
    vis_w = np.array([kf.visible for kf in whole])
    assert (vis_f == vis_w).mean() >= 0.97
    both = vis_f & vis_w
    dev = np.linalg.norm(np.array([kf.keypoints for kf in followed]) - np.array([kf.keypoints for kf in whole]), axis=2)
    assert np.median(dev[both]) < 0.3 and np.percentile(dev[both], 95) < 2.0
    assert rmse(followed, truth) <= rmse(whole, truth) * 1.1 + 0.2


def test_a_run_started_later_gives_the_frames_the_uninterrupted_run_gives(scene):
    """What a resumed or chunked export relies on: from the last refresh frame at or before its first frame, a
    following Tracker reproduces the uninterrupted run exactly (rtkp.export.track warms up from there)."""
    model, video, _ = scene
    full, follower = track(model, video, follow=True)
    start = follower.warm_up_start(70)
    assert start == 60
    later, _ = track(model, video, follow=True, start=start)
    assert [kf.index for kf in later] == list(range(start, 90))
    for a, b in zip(later, full[start:]):
        assert np.array_equal(a.keypoints, b.keypoints) and np.array_equal(a.visible, b.visible), a.index
    # without the warm-up a run starts from the whole frame where the uninterrupted one looked through a window: the
    # rows differ (so the comparison above can fail)
    differs = []
    for first in (65, 70, 75, 80, 85):
        cold, _ = track(model, video, follow=True, start=first)
        differs.append(any(not np.array_equal(a.keypoints, b.keypoints) for a, b in zip(cold, full[first:])))
    assert any(differs)


def _export(src, out, model, *extra):
    args = ["export", str(src), "--out", str(out), "--model", str(model), "--format", "jsonl", "--quiet"]
    return main([*args, "--backend", "onnxruntime", *extra])


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in next(out.glob("*.jsonl")).read_text().splitlines()]


def test_export_follows_a_video_by_default_and_never_an_image_folder(scene, tmp_path):
    import cv2

    from rtkp.pipeline.source_spec import parse_source
    from rtkp.pipeline.sources import Source

    model, video, _ = scene
    assert _export(video, tmp_path / "follow", model) == 0
    assert _export(video, tmp_path / "whole", model, "--whole-frame") == 0
    followed, whole = _records(tmp_path / "follow"), _records(tmp_path / "whole")
    assert len(followed) == len(whole) == 90
    assert followed != whole  # the default looked through the window
    done = json.loads(next((tmp_path / "whole").glob("*.done.json")).read_text())
    assert done["settings"]["whole_frame"] is True
    done = json.loads(next((tmp_path / "follow").glob("*.done.json")).read_text())
    assert "whole_frame" not in done["settings"]

    folder = tmp_path / "frames"
    folder.mkdir()
    for f in Source(parse_source(str(video)), max_frames=8):
        cv2.imwrite(str(folder / f"f{f.index:02d}.png"), cv2.cvtColor(f.image, cv2.COLOR_RGB2BGR))
    assert _export(folder, tmp_path / "images", model) == 0
    assert _export(folder, tmp_path / "images_whole", model, "--whole-frame") == 0
    assert _records(tmp_path / "images") == _records(tmp_path / "images_whole")


def test_a_live_run_says_how_often_it_looked_through_the_window(scene, tmp_path, capsys):
    model, video, _ = scene
    args = ["run", "--source", str(video), "--model", str(model), "--headless", "--publish", "none"]
    assert main([*args, "--backend", "onnxruntime", "--json", str(tmp_path / "run.json")]) == 0
    follow = json.loads((tmp_path / "run.json").read_text())["infer"]["follow"]
    assert follow["frames"] == 90 and follow["windows"] >= 45, follow
    assert "looked only around the animal" in capsys.readouterr().out
    assert main([*args, "--backend", "onnxruntime", "--whole-frame", "--json", str(tmp_path / "whole.json")]) == 0
    assert "follow" not in json.loads((tmp_path / "whole.json").read_text())["infer"]
