"""Several animals per frame through the export: KeypointFrames with instances built by hand (two tracks, one that
disappears and comes back, a third that appears late, frames without any) go through the records (RecordWriter ->
partial folder -> finish_outputs) into every format, and each file is read back with the tool its users use:
pycocotools, pandas (DeepLabCut's multi-animal .h5 and CSV), sleap-io (.slp and NWB)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import NAMES, write_video

from rtkp.backends.base import ModelInfo
from rtkp.export.finish import finish_outputs
from rtkp.export.local import ExportOptions, live_formats
from rtkp.export.partial import Partial
from rtkp.export.progress import Progress
from rtkp.export.records import PublishedRecords, RecordWriter, raw_line, read_raw
from rtkp.export.targets import export_targets
from rtkp.manifest import Manifest
from rtkp.messages import Instance, KeypointFrame, instance_score, missing_keypoints

sio = pytest.importorskip("sleap_io")

ALL = ("coco", "jsonl", "csv", "h5", "slp", "nwb")
N = 12
# frame -> the tracks in it: 0 everywhere but frame 5; 1 leaves after frame 3 and comes back at 7; 2 from frame 9
PRESENT = {i: [t for t, frames in ((0, set(range(N)) - {5}), (1, {0, 1, 2, 3, 7, 8, 9, 10, 11}), (2, {9, 10, 11}))
               if i in frames] for i in range(N)}  # fmt: skip


def manifest(multi: bool) -> Manifest:
    """A model's manifest (no model behind it: the writers only read names, skeleton, scorer and max_instances)."""
    extra = {"max_instances": 4, "default_instances": 3, "instance_size": 30.0} if multi else {}
    return Manifest(
        "coke", tuple(NAMES), (128, 96), 8, 8, "resnet18", ((0, 1), (0, 2)), weights_sha256="ab" * 32, **extra
    )


def instance(track: int, i: int) -> Instance:
    """Track t's animal in frame i: 40 px to the right per track, moving 1.5 px a frame; the third keypoint of
    track 1 hidden in even frames."""
    xy = np.array(
        [[10 + 40 * track + 1.5 * i, 20.25], [15 + 40 * track, 30 + 0.5 * i], [20 + 40 * track, 40]], np.float32
    )
    scores = np.array([0.9 - 0.1 * track, 0.8, 0.7 + 0.01 * i], np.float32)
    visible = np.array([True, True, not (track == 1 and i % 2 == 0)])
    state = np.where(visible, 0, 3).astype(np.uint8)
    return Instance(track, instance_score(scores, visible), xy, scores, visible, state)


def multi_frames() -> list[KeypointFrame]:
    out = []
    for i in range(N):
        insts = tuple(instance(t, i) for t in PRESENT[i])
        arrays = (
            (insts[0].keypoints, insts[0].scores, insts[0].visible, insts[0].state) if insts else missing_keypoints(3)
        )
        out.append(KeypointFrame(i, i / 30, 0, (128, 96), *arrays, instances=insts))
    return out


def export_records(frames, out: Path, source: Path, formats=ALL, smooth="none", multi=True, live=True, video=False):
    """What `rtkp export` does with these records: written through a RecordWriter into the partial folder (the
    streamed formats live when `live`, as a local export without smoothing; else from the raw records, as --ray),
    then finished into the published files (and the annotated video when `video`). Returns finish_outputs' result."""
    info = ModelInfo(Path("model"), manifest(multi), None, None)
    opts = ExportOptions(out=out, model="model", formats=tuple(formats), smooth=smooth, progress=False, video=video)
    targets = export_targets(str(source), opts, info.manifest.weights_sha256)
    bodies = live_formats(formats, multi) if live and smooth == "none" else ()
    partial = Partial(out / f"{targets.stem}.partial", targets.settings, (*bodies, "raw"))
    partial.reset()
    scorer = f"rtkp_{info.manifest.weights_sha256[:12]}"
    with RecordWriter(partial.folder, partial.bodies, list(NAMES), scorer, str(source), 1, multi) as writer:
        for kf in frames:
            writer.write(kf)
    partial.mark_tracked()
    bar = Progress(targets.stem, None, 0, False, enabled=False)
    return finish_outputs(str(source), opts, info, partial, targets, len(frames), bar)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("multi")
    video = write_video(base / "clip.mp4", frames=N)
    export_records(multi_frames(), base / "out", video, video=True)
    return base / "out", video


def test_the_annotated_video_has_every_frame(exported):
    import av

    out, _ = exported
    with av.open(str(out / "clip.annotated.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == N


def test_coco_has_one_annotation_per_instance_with_its_track(exported):
    from pycocotools.coco import COCO

    out, _ = exported
    coco = COCO(str(out / "clip.coco.json"))
    assert len(coco.getImgIds()) == N and coco.loadCats(1)[0]["keypoints"] == NAMES
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) == sum(len(t) for t in PRESENT.values())
    assert sorted(a["id"] for a in anns) == list(range(1, len(anns) + 1))
    for image in coco.loadImgs(coco.getImgIds()):
        i = image["frame_index"]
        mine = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        assert [a["track_id"] for a in mine] == PRESENT[i]  # frame 5: no annotation
        for a in mine:
            inst = instance(a["track_id"], i)
            kp = np.array(a["keypoints"]).reshape(-1, 3)
            np.testing.assert_allclose(kp[:, :2], inst.keypoints, atol=1e-3)  # x, y also where v = 0
            assert list(kp[:, 2]) == [2 if v else 0 for v in inst.visible]
            assert a["score"] == pytest.approx(inst.score, abs=1e-5) and a["num_keypoints"] == inst.visible.sum()


def test_jsonl_lists_every_instance_beside_the_first_one_s_keypoints(exported):
    out, _ = exported
    lines = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
    assert [rec["frame"] for rec in lines] == list(range(N))
    for i, rec in enumerate(lines):
        assert [inst["track"] for inst in rec["instances"]] == PRESENT[i]
        for got in rec["instances"]:
            want = instance(got["track"], i)
            assert got["score"] == pytest.approx(want.score, abs=1e-5)
            assert [got["keypoints"][n][3] for n in NAMES] == list(want.visible)
            np.testing.assert_allclose([got["keypoints"][n][:2] for n in NAMES], want.keypoints, atol=1e-3)
        first = rec["instances"][0]["keypoints"] if rec["instances"] else None
        assert rec["keypoints"] == first or (
            first is None and all(v[3] is False and v[4] == 3 for v in rec["keypoints"].values())
        )


def test_deeplabcut_multi_animal_csv_and_h5_read_back_as_deeplabcut_reads_them(exported):
    out, _ = exported
    table = pd.read_hdf(out / "clip.h5")
    csv = pd.read_csv(out / "clip.csv", header=[0, 1, 2, 3], index_col=0)
    assert table.columns.names == ["scorer", "individuals", "bodyparts", "coords"]
    assert list(table.columns.get_level_values("individuals").unique()) == ["track0", "track1", "track2"]
    assert list(table.columns.get_level_values("bodyparts").unique()) == NAMES
    assert table.shape == (N, 3 * 3 * 3) and list(table.index) == list(range(N))
    pd.testing.assert_frame_equal(table, csv, check_index_type=False)
    for i in range(N):
        for t in range(3):
            row = table.loc[i, ("rtkp_abababababab", f"track{t}")].to_numpy().reshape(3, 3)
            if t not in PRESENT[i]:
                assert np.isnan(row).all()  # a track absent from a frame: NaN
                continue
            inst = instance(t, i)
            np.testing.assert_allclose(row[:, :2], inst.keypoints, atol=1e-3)
            np.testing.assert_allclose(row[:, 2], np.where(inst.visible, inst.scores, 0), atol=1e-5)


def test_sleap_gets_predicted_instances_on_one_track_per_track_id(exported):
    out, video = exported
    labels = sio.load_slp(str(out / "clip.slp"))
    assert [t.name for t in labels.tracks] == ["track_0", "track_1", "track_2"]
    assert [lf.frame_idx for lf in labels] == [i for i in range(N) if PRESENT[i]]  # frame 5 has no instance
    assert labels.video.filename == str(video.resolve())
    for lf in labels:
        assert all(type(inst) is sio.PredictedInstance for inst in lf.instances)
        assert [int(inst.track.name.split("_")[1]) for inst in lf.instances] == PRESENT[lf.frame_idx]
        for inst in lf.instances:
            want = instance(int(inst.track.name.split("_")[1]), lf.frame_idx)
            np.testing.assert_allclose(inst.numpy(), np.where(want.visible[:, None], want.keypoints, np.nan))
            assert inst.score == pytest.approx(want.score)
    # the same Track object on every frame of a track: track 1 is one track before and after its gap
    ones = {id(inst.track) for lf in labels for inst in lf.instances if inst.track.name == "track_1"}
    assert len(ones) == 1


def test_nwb_holds_one_pose_estimation_per_track_timestamped_by_its_frames(exported):
    """Read with pynwb + ndx-pose (what NWB users read it with): one PoseEstimation per track, each keypoint's series
    holding the frames the track is in, at their PTS; sleap_io.load_nwb gives the frames' instances back in order."""
    from pynwb import NWBHDF5IO

    out, _ = exported
    with NWBHDF5IO(str(out / "clip.nwb"), "r", load_namespaces=True) as io:
        module = io.read().processing["SLEAP_VIDEO_000_clip"]
        for t in range(3):
            frames = [i for i in range(N) if t in PRESENT[i]]
            pose = module[f"track=track_{t}"]
            for k, name in enumerate(NAMES):
                series = pose.pose_estimation_series[name]
                np.testing.assert_allclose(series.get_timestamps(), [i / 30 for i in frames], atol=1e-9)
                want = np.array([instance(t, i).keypoints[k] for i in frames])
                np.testing.assert_allclose(series.data[:], want, atol=1e-4)
                like = [instance(t, i).scores[k] if instance(t, i).visible[k] else 0 for i in frames]
                np.testing.assert_allclose(series.confidence[:], like, atol=1e-6)
    # sleap-io's reader numbers frames by their position among the time stamps (frame 5, without an animal, is not
    # one) and does not name tracks: the instances of each frame with any, in order
    nwb = sio.load_nwb(str(out / "clip.nwb"))
    got = [sorted(float(inst.numpy()[0, 0]) for inst in lf.instances) for lf in nwb]
    want = [sorted(float(instance(t, i).keypoints[0, 0]) for t in PRESENT[i]) for i in range(N) if PRESENT[i]]
    assert len(got) == len(want) and all(g == pytest.approx(w, abs=1e-4) for g, w in zip(got, want))


def test_outputs_built_from_the_raw_records_equal_those_streamed_while_tracking(exported, tmp_path):
    """A --ray or smoothed export builds COCO, JSON lines and CSV from the raw records at the end: the raw record keeps
    every instance exactly, so the files are byte for byte those a local export streams."""
    out, video = exported
    export_records(multi_frames(), tmp_path / "out", video, ("coco", "jsonl", "csv"), live=False)
    for name in ("clip.coco.json", "clip.jsonl", "clip.csv"):
        assert (tmp_path / "out" / name).read_bytes() == (out / name).read_bytes(), name


def test_the_raw_record_keeps_every_instance_and_old_records_still_load(tmp_path):
    raw = tmp_path / "raw.partial"
    frames = multi_frames()
    raw.write_text("".join(raw_line(kf, multi_instance=True) for kf in frames))
    for kf, (_, back) in zip(frames, read_raw(raw)):
        assert [i.track for i in back.instances] == [i.track for i in kf.instances]
        for a, b in zip(kf.instances, back.instances):
            assert a.score == b.score
            for field in ("keypoints", "scores", "visible", "state"):
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        np.testing.assert_array_equal(back.keypoints, kf.keypoints)
        np.testing.assert_array_equal(back.state, kf.state)
    # a record from before instances (a single-instance model's, or an old partial folder's): one instance, track 0
    old = '{"i": 4, "pts": 0.5, "t": 0.5, "name": null, "size": [128, 96], "xy": [1.5, 2.0, 3.0, 4.0], '
    raw.write_text(old + '"s": [0.5, 0.25], "v": [1, 0]}\n')
    ((_, kf),) = read_raw(raw)
    (one,) = kf.instances
    assert one.track == 0 and one.score == 0.5 and list(one.visible) == [True, False]
    np.testing.assert_array_equal(one.keypoints, [[1.5, 2.0], [3.0, 4.0]])


@pytest.mark.parametrize("smooth", ["offline", "causal"])
def test_smoothing_runs_per_track_never_across_tracks(smooth, tmp_path):
    """Each track smoothed on its own gives what the export publishes for it, also for a track with a gap."""
    from rtkp.config import SmoothingConfig

    cfg = SmoothingConfig(max_deviation_px=100)
    frames = multi_frames()
    raw = tmp_path / "raw.partial"
    raw.write_text("".join(raw_line(kf, True) for kf in frames))
    published = list(PublishedRecords(raw, N, 3, smooth, cfg))
    for track in range(3):
        alone = tmp_path / f"alone{track}.partial"  # the track's frames only, each at its own time
        own = [kf for kf in frames if track in PRESENT[kf.index]]
        alone.write_text("".join(raw_line(_only(kf, track), True) for kf in own))
        want = {kf.index: kf.instances[0] for kf in PublishedRecords(alone, len(own), 3, smooth, cfg)}
        for kf in published:
            got = {inst.track: inst for inst in kf.instances}
            assert (track in got) == (kf.index in want)
            if kf.index in want:
                np.testing.assert_array_equal(got[track].keypoints, want[kf.index].keypoints)
                np.testing.assert_array_equal(got[track].state, want[kf.index].state)
    moved = [
        kf for kf in published if kf.instances and (kf.instances[0].keypoints != instance(0, kf.index).keypoints).any()
    ]
    assert moved  # the smoother did change something (with 100 px allowed)
    for kf in published:  # the frame's arrays follow its first (smoothed) instance
        if kf.instances:
            np.testing.assert_array_equal(kf.keypoints, kf.instances[0].keypoints)


def _only(kf: KeypointFrame, track: int) -> KeypointFrame:
    import dataclasses

    inst = next(i for i in kf.instances if i.track == track)
    return dataclasses.replace(
        kf, keypoints=inst.keypoints, scores=inst.scores, visible=inst.visible, state=inst.state, instances=(inst,)
    )


def test_a_video_without_any_animal_exports_empty_tables_and_nwb_says_why_not(tmp_path):
    from pycocotools.coco import COCO

    from rtkp.errors import ExportFailed

    video = write_video(tmp_path / "clip.mp4", frames=3)
    frames = [KeypointFrame(i, i / 30, 0, (128, 96), *missing_keypoints(3), instances=()) for i in range(3)]
    export_records(frames, tmp_path / "out", video, ("coco", "jsonl", "csv", "h5", "slp"))
    out = tmp_path / "out"
    coco = COCO(str(out / "clip.coco.json"))
    assert len(coco.getImgIds()) == 3 and not coco.getAnnIds()
    assert all(json.loads(line)["instances"] == [] for line in (out / "clip.jsonl").read_text().splitlines())
    table = pd.read_hdf(out / "clip.h5")  # one individual, empty: a table without columns cannot be read back
    assert table.shape == (3, 9) and table.isna().all().all()
    pd.testing.assert_frame_equal(table, pd.read_csv(out / "clip.csv", header=[0, 1, 2, 3], index_col=0))
    assert len(sio.load_slp(str(out / "clip.slp"))) == 0
    with pytest.raises(ExportFailed, match="cannot write its nwb output: no animal was found in any frame"):
        export_records(frames, tmp_path / "nwb", video, ("nwb",))
