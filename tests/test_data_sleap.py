"""SLEAP .slp files as --data: user-labelled instances on frames of the video the labels refer to (sleap-io)."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import NAMES, SHARED_DATA, SMALL_TRAIN, render_scene, write_video

from rtkp.cli import main
from rtkp.data.load import load_dataset, load_split
from rtkp.errors import DataError

sio = pytest.importorskip("sleap_io")
FRAMES = 12


def skeleton():
    return sio.Skeleton(list(NAMES), edges=[(NAMES[0], NAMES[1]), (NAMES[0], NAMES[2])])  # it would turn NAMES to Nodes


def scene_points(frames: int = FRAMES) -> list[np.ndarray]:
    """The keypoints of conftest.write_video's frames (the same generator, the same draws)."""
    rng = np.random.default_rng(0)
    return [render_scene(rng)[1] for _ in range(frames)]


def write_slp(folder, instances=None, video_name="clip.mp4", skeletons=None, embed=False):
    """folder/labels.slp over folder/<video_name>; `instances(frame, points, skeleton)` lists a frame's instances
    (default: one user instance on the scene's keypoints, the last one unlabelled in frame 0)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_video(folder / video_name, frames=FRAMES)
    sk = skeleton()
    video = sio.Video.from_filename(str(folder / video_name))
    frames = []
    for i, points in enumerate(scene_points()):
        if instances is None:
            points = points.astype(float).copy()
            if i == 0:
                points[2] = np.nan
            made = [sio.Instance.from_numpy(points, skeleton=sk)]
        else:
            made = instances(i, points, sk)
        frames.append(sio.LabeledFrame(video=video, frame_idx=i, instances=made))
    labels = sio.Labels(labeled_frames=frames, videos=[video], skeletons=skeletons or [sk])
    path = folder / ("labels.pkg.slp" if embed else "labels.slp")
    sio.save_slp(labels, str(path), embed="user" if embed else False)
    return path


def decoded_frames(path):
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_single_instance_slp_reads_frames_and_points(tmp_path):
    path = write_slp(tmp_path / "proj")
    data = load_dataset(path)
    assert data.kind == "sleap" and data.keypoint_names == NAMES and data.skeleton == [(0, 1), (0, 2)]
    assert len(data) == FRAMES and [s.name for s in data.samples[:2]] == ["clip.mp4#000000", "clip.mp4#000001"]
    assert data.samples[0].visible.tolist() == [True, True, False] and data.samples[1].visible.all()
    expected = scene_points()
    for s, points in zip(data.samples[1:], expected[1:]):
        np.testing.assert_allclose(s.keypoints, points, atol=1e-4)
    frames = decoded_frames(tmp_path / "proj" / "clip.mp4")
    for i in (5, 0, 11):  # out of order: sleap-io seeks
        image = data.samples[i].load_image()
        assert image.shape == (96, 128, 3) and image.dtype == np.uint8
        assert np.array_equal(image, frames[i])
    # a split file names frames as <video>#<frame>
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [f"clip.mp4#{i:06d}" for i in range(8)], "test": ["clip.mp4#000010"]}))
    assert [s.frame for s in load_split(path, split, "test").samples] == [10]


def test_slp_frames_with_their_video_found_from_another_folder_and_embedded(tmp_path, monkeypatch):
    # saved with a relative video path, read from elsewhere: the video is found next to the .slp
    folder = tmp_path / "proj"
    folder.mkdir()
    monkeypatch.chdir(folder)
    write_video(folder / "clip.mp4", frames=FRAMES)
    sk = skeleton()
    video = sio.Video.from_filename("clip.mp4")
    frames = [
        sio.LabeledFrame(video=video, frame_idx=i, instances=[sio.Instance.from_numpy(p.astype(float), skeleton=sk)])
        for i, p in enumerate(scene_points())
    ]
    sio.save_slp(sio.Labels(labeled_frames=frames, videos=[video], skeletons=[sk]), "labels.slp")
    monkeypatch.chdir(tmp_path)
    data = load_dataset(folder / "labels.slp")
    assert data.samples[3].name == "clip.mp4#000003"
    assert np.array_equal(data.samples[3].load_image(), decoded_frames(folder / "clip.mp4")[3])
    # a .pkg.slp carries its labelled frames inside: no video needed
    packed = write_slp(tmp_path / "packed", embed=True)
    (tmp_path / "packed" / "clip.mp4").unlink()
    data = load_dataset(packed)
    assert len(data) == FRAMES and data.samples[2].name == "labels.pkg.slp#000002"
    assert data.samples[2].load_image().shape == (96, 128, 3)


def test_train_and_eval_on_a_slp_file(tmp_path):
    path = write_slp(tmp_path / "proj")
    split = tmp_path / "split.json"
    names = [f"clip.mp4#{i:06d}" for i in range(FRAMES)]
    split.write_text(json.dumps({"train": names[:9], "test": names[9:]}))
    out = tmp_path / "model"
    common = ["--data", str(path), "--split", str(split)]
    args = ["train", *common, "--out", str(out), "--set", "train.steps=3", *SMALL_TRAIN, "--quiet", "--no-eval"]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["keypoint_names"] == NAMES and manifest["training"]["samples"] == 9
    report_path = tmp_path / "report.json"
    assert main(["eval", "--model", str(out), *common, "--json", str(report_path), "--quiet"]) == 0
    report = json.loads(report_path.read_text())
    assert report["images"] == 3 and "rmse_px" in report


def test_user_instances_only_unless_predictions_are_asked_for(tmp_path):
    def predicted(i, points, sk):
        return [sio.PredictedInstance.from_numpy(points.astype(float), skeleton=sk, score=0.9)]

    path = write_slp(tmp_path / "preds", predicted)
    with pytest.raises(DataError, match=f"no user-labelled instance .*, only {FRAMES} predicted ones, which are not"):
        load_dataset(path)
    assert len(load_dataset(path, predictions=True)) == FRAMES
    with pytest.raises(DataError, match="predictions as labels is for a SLEAP .slp file"):
        load_dataset(tmp_path / "preds" / "clip.mp4", predictions=True)

    # a user instance made from a prediction replaces it (as in SLEAP): still one instance per frame
    def corrected(i, points, sk):
        guess = sio.PredictedInstance.from_numpy(points.astype(float) + 3, skeleton=sk, score=0.5)
        return [guess, sio.Instance.from_numpy(points.astype(float), skeleton=sk, from_predicted=guess)]

    path = write_slp(tmp_path / "corrected", corrected)
    data = load_dataset(path, predictions=True)
    assert len(data) == FRAMES
    np.testing.assert_allclose(data.samples[4].keypoints, scene_points()[4], atol=1e-4)


def test_several_instances_per_frame_are_read_with_their_tracks(tmp_path):
    tracks = [sio.Track("female"), sio.Track("male")]

    def two(i, points, sk):
        pair = (points.astype(float), points.astype(float) + 20)
        return [sio.Instance.from_numpy(p, skeleton=sk, track=t) for p, t in zip(pair, tracks)]

    path = write_slp(tmp_path / "two", lambda i, p, sk: two(i, p, sk) if i == 4 else two(i, p, sk)[:1])
    data = load_dataset(path)
    assert len(data) == 13 and len(data.frames()) == FRAMES and data.max_instances() == 2
    pair = [data.samples[i] for i in data.frames()[data.samples[4].image_key()]]
    assert [s.track for s in pair] == ["female", "male"] and pair[1].name == "clip.mp4#000004"
    np.testing.assert_allclose(pair[1].keypoints, pair[0].keypoints + 20, atol=1e-4)
    # callers that need one instance per frame: refused in one line, never reduced
    with pytest.raises(DataError) as err:
        load_dataset(path, several=False)
    message = str(err.value)
    assert "\n" not in message and "1 of 12 labelled frames hold more than one instance (up to 2 in a frame" in message
    assert "clip.mp4#000004" in message and "this needs one labelled instance per frame" in message


def test_bad_multi_instance_slp_files_are_one_line(tmp_path):
    female = sio.Track("female")
    # one track in a frame twice
    twice = write_slp(
        tmp_path / "twice",
        lambda i, p, sk: [sio.Instance.from_numpy(p.astype(float) + d, skeleton=sk, track=female) for d in (0, 30)],
    )
    with pytest.raises(DataError, match=r"frame clip.mp4#000000 holds two instances of track 'female': give one"):
        load_dataset(twice)
    # one track labelled with two skeletons: the message names the track
    other = sio.Skeleton(list(NAMES), name="other")

    def mixed(i, points, sk):
        return [sio.Instance.from_numpy(points.astype(float), skeleton=other if i == 3 else sk, track=female)]

    path = write_slp(tmp_path / "mixed", mixed)  # sleap-io saves both skeletons
    with pytest.raises(DataError, match=r"this file has 2 .*; track 'female' changes skeleton \(#1 .*, #2 'other'"):
        load_dataset(path)

    # an instance with no labelled point is skipped; a frame of only those is no frame
    def hollow(i, points, sk):
        empty = sio.Instance.from_numpy(np.full_like(points, np.nan, dtype=float), skeleton=sk)
        return [empty] if i == 0 else [sio.Instance.from_numpy(points.astype(float), skeleton=sk), empty]

    data = load_dataset(write_slp(tmp_path / "hollow", hollow))
    assert len(data) == len(data.frames()) == FRAMES - 1 and data.max_instances() == 1


def test_several_videos_are_several_sets_of_frames_but_not_when_embedded_together(tmp_path):
    folder = tmp_path / "two_videos"
    folder.mkdir()
    sk = skeleton()
    videos = []
    for name in ("a.mp4", "b.mp4"):
        write_video(folder / name, frames=FRAMES)
        videos.append(sio.Video.from_filename(str(folder / name)))
    points = scene_points()
    frames = [
        sio.LabeledFrame(video=v, frame_idx=i, instances=[sio.Instance.from_numpy(points[i] * 1.0, skeleton=sk)])
        for v in videos
        for i in (2, 5)
    ]
    labels = sio.Labels(labeled_frames=frames, videos=videos, skeletons=[sk])
    sio.save_slp(labels, str(folder / "labels.slp"))
    data = load_dataset(folder / "labels.slp")
    assert [s.name for s in data.samples] == ["a.mp4#000002", "a.mp4#000005", "b.mp4#000002", "b.mp4#000005"]
    assert len(data.frames()) == 4 and data.max_instances() == 1
    # embedded in one .pkg.slp, both videos' frames come from the one file: refused, naming the fix
    sio.save_slp(labels, str(folder / "labels.pkg.slp"), embed="user")
    with pytest.raises(DataError, match="embeds the frames of 2 videos, .*save each video's labels to its own"):
        load_dataset(folder / "labels.pkg.slp")


def run_rtkp(*args):
    return subprocess.run([sys.executable, "-m", "rtkp", *args], capture_output=True, text=True)


def test_bad_slp_files_are_one_line(tmp_path):
    # several skeletons
    other = sio.Skeleton(["a", "b"])
    path = write_slp(tmp_path / "skeletons", skeletons=[skeleton(), other])
    with pytest.raises(DataError, match=r"one skeleton; this file has 2 \("):
        load_dataset(path)
    # not a SLEAP file
    bad = tmp_path / "bad.slp"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(DataError, match="not a readable SLEAP .slp file"):
        load_dataset(bad)
    # no instance with a labelled point
    empty = write_slp(tmp_path / "empty", lambda i, p, sk: [])
    with pytest.raises(DataError, match="no user-labelled instance with a labelled point: label frames in SLEAP"):
        load_dataset(empty)
    # --images is for COCO
    with pytest.raises(DataError, match="--images is for COCO data"):
        load_dataset(empty, images=tmp_path)
    # the video is gone: one line from the command, exit code 3 (DataError), nothing written
    path = write_slp(tmp_path / "gone")
    (tmp_path / "gone" / "clip.mp4").unlink()
    with pytest.raises(DataError, match=r"its video .*clip.mp4 is missing \(looked for .*\); put the video there"):
        load_dataset(path)
    out = run_rtkp("train", "--data", str(path), "--out", str(tmp_path / "o"))
    assert out.returncode == 3 and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "clip.mp4 is missing" in out.stderr
    assert not (tmp_path / "o").exists()


TWO_FLIES = SHARED_DATA / "sleap_two_flies" / "minimal_instance.slp"
CLIP = SHARED_DATA / "sleap_flies_clip" / "clip_train.slp"


@pytest.mark.skipif(not TWO_FLIES.is_file(), reason="../shared/data not present")
def test_shared_two_fly_frame_reads_both_flies_and_its_grey_frame_reads_as_rgb(tmp_path):
    with pytest.raises(DataError, match=r"1 of 1 labelled frames hold more than one instance \(up to 2 in a frame"):
        load_dataset(TWO_FLIES, several=False)
    data = load_dataset(TWO_FLIES)  # both flies, one frame of a grey video
    assert data.keypoint_names == ["A", "B"] and len(data) == 2 and data.max_instances() == 2
    assert data.samples[0].image_key() == data.samples[1].image_key()
    image = data.samples[0].load_image()
    assert image.shape == (384, 384, 3) and image.dtype == np.uint8
    assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])
    out = run_rtkp("eval", "--model", str(tmp_path / "none"), "--data", str(TWO_FLIES))
    assert out.returncode != 0 and "Traceback" not in out.stderr and out.stderr.strip().count("\n") == 0


@pytest.mark.skipif(not CLIP.is_file(), reason="../shared/data not present")
def test_shared_two_fly_clip_reads_two_tracked_flies_a_frame():
    data = load_dataset(CLIP, check_images=False)
    assert len(data) == 2500 and len(data.frames()) == 1250 and data.max_instances() == 2
    assert {s.track for s in data.samples} == {"female", "male"} and len(data.keypoint_names) == 13
    with pytest.raises(DataError) as err:
        load_dataset(CLIP, check_images=False, several=False)
    message = str(err.value)
    assert "1250 of 1250 labelled frames hold more than one instance (up to 2 in a frame, 2500 instances" in message
    assert "\n" not in message


def test_the_command_line_reads_predictions_only_when_asked(tmp_path, capsys):
    def predicted(i, points, sk):
        return [sio.PredictedInstance.from_numpy(points.astype(float), skeleton=sk, score=0.9)]

    path = write_slp(tmp_path / "preds", predicted)
    out = tmp_path / "model"
    args = ["train", "--data", str(path), "--out", str(out), "--set", "train.steps=1", *SMALL_TRAIN, "--no-eval"]
    assert main([*args, "--quiet"]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--predictions" in err and "Traceback" not in err
    assert main([*args, "--quiet", "--predictions"]) == 0
    assert json.loads((out / "manifest.json").read_text())["training"]["samples"] == FRAMES
