"""SLEAP `.slp` and NWB (ndx-pose) outputs, written by sleap-io (imported here only, when these formats are asked).

Both hold the predicted instances of each frame, on a SLEAP skeleton whose nodes are the manifest's keypoint names and
whose edges are its skeleton: a single-instance model's one instance per frame (untracked), or a multi-instance
model's instances, each on a sleap-io Track named `track_<id>` (one per track id; a frame without an instance has no
labelled frame in the `.slp`, and no sample in NWB, where sleap-io writes one PoseEstimation per track). An HDF5 file
cannot be appended to line by line, so they are built when the export finishes (rtkp.export.finish) from the published
records, read once into arrays of keypoints (never images).

`.slp`: predicted instances with the instance score (mean score of the visible keypoints, COCO's `score`) and each
point's score; a hidden keypoint is NaN, SLEAP's "not visible". The source is referenced, not embedded: a video by its
absolute path, an image folder by its image files (the frame index is the image's position in the sorted list), with
the frame count and size recorded so SLEAP need not decode it to open the file.

NWB: an ndx-pose PoseEstimation per video (sleap-io's predictions layout, which `sleap_io.load_nwb` reads), one
PoseEstimationSeries per keypoint with every frame, timestamped by its PTS (an image folder: its position, in seconds).
ndx-pose has no visibility flag and sleap-io's writer drops NaN samples (a frame whose keypoints are all hidden would
vanish), so a hidden keypoint keeps its x, y with confidence 0, as DeepLabCut's likelihood (visible: the score
clipped to [0, 1]). sleap-io stores a uniform rate truncated to whole frames per second (29.97 → 29), which would
shift every time stamp; the true rate is written back into the file afterwards (a multi-instance file: the time
stamps themselves, so that every track's series holds the same values for the same frame).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from rtkp.export.formats import likelihood
from rtkp.messages import KeypointFrame


class InstanceArrays(NamedTuple):
    """Every instance of the published records, in frame order and within a frame in track order: row (M,) the
    frame's position in TrackArrays, track (M,) its id, score (M,) float, xy (M, K, 2) float32, scores (M, K) float32,
    visible (M, K) bool, likelihood (M, K) float64."""

    row: np.ndarray
    track: np.ndarray
    score: np.ndarray
    xy: np.ndarray
    scores: np.ndarray
    visible: np.ndarray
    likelihood: np.ndarray


class TrackArrays(NamedTuple):
    """The published records as arrays: index (N,), pts (N,) float (NaN: none), xy (N, K, 2) float32, scores (N, K)
    float32, visible (N, K) bool, likelihood (N, K) float64 (rtkp.export.formats.likelihood), size (W, H) of the first
    frame; instances: a multi-instance model's instances (InstanceArrays), None for a single-instance model's."""

    index: np.ndarray
    pts: np.ndarray
    xy: np.ndarray
    scores: np.ndarray
    visible: np.ndarray
    likelihood: np.ndarray
    size: tuple[int, int]
    instances: InstanceArrays | None = None


def track_arrays(frames: Iterable[KeypointFrame], n: int, k: int, multi_instance: bool = False) -> TrackArrays:
    """Read `n` records of `k` keypoints into arrays (about 30 bytes per keypoint per frame, and as much again per
    instance when multi_instance)."""
    index, pts = np.zeros(n, np.int64), np.full(n, np.nan)
    xy, scores = np.zeros((n, k, 2), np.float32), np.zeros((n, k), np.float32)
    visible, like = np.zeros((n, k), bool), np.zeros((n, k))
    found: list = []
    size, count = (0, 0), 0
    for i, kf in enumerate(frames):
        index[i], xy[i], scores[i], visible[i], like[i] = kf.index, kf.keypoints, kf.scores, kf.visible, likelihood(kf)
        if kf.pts is not None:
            pts[i] = kf.pts
        if multi_instance:
            found += [(i, inst) for inst in kf.instances]
        size = size if i else tuple(kf.source_size)
        count = i + 1
    if count != n:
        raise ValueError(f"{count} records where {n} were counted")
    instances = _instance_arrays(found, k) if multi_instance else None
    return TrackArrays(index, pts, xy, scores, visible, like, size, instances)


def _instance_arrays(found: list, k: int) -> InstanceArrays:
    """InstanceArrays of (row, Instance) pairs."""
    insts = [inst for _, inst in found]
    return InstanceArrays(
        np.array([row for row, _ in found], np.int64),
        np.array([inst.track for inst in insts], np.int64),
        np.array([inst.score for inst in insts], np.float64),
        np.array([inst.keypoints for inst in insts], np.float32).reshape(-1, k, 2),
        np.array([inst.scores for inst in insts], np.float32).reshape(-1, k),
        np.array([inst.visible for inst in insts], bool).reshape(-1, k),
        np.array([likelihood(inst) for inst in insts], np.float64).reshape(-1, k),
    )


def frames_of_instances(sio, arrays: TrackArrays, video, skel, nwb: bool) -> list:
    """A multi-instance model's LabeledFrames: one per frame with an instance, a PredictedInstance per instance on
    its track's Track (`track_<id>`), scored by the instance's score. For the `.slp` a hidden keypoint is NaN; for NWB
    (nwb) it keeps x, y with its likelihood as its score (module docstring)."""
    inst = arrays.instances
    tracks = {int(t): sio.Track(name=f"track_{int(t)}") for t in np.unique(inst.track)}
    points = inst.xy if nwb else np.where(inst.visible[..., None], inst.xy, np.nan)
    point_scores = inst.likelihood if nwb else inst.scores
    labelled: dict[int, list] = {}
    for m in range(len(inst.row)):
        predicted = sio.PredictedInstance.from_numpy(
            points[m],
            skeleton=skel,
            point_scores=point_scores[m],
            score=float(inst.score[m]),
            track=tracks[int(inst.track[m])],
        )
        labelled.setdefault(int(inst.row[m]), []).append(predicted)
    frames = [
        sio.LabeledFrame(video=video, frame_idx=int(arrays.index[row]), instances=found)
        for row, found in labelled.items()
    ]
    return frames, list(tracks.values())


def frame_rate(arrays: TrackArrays) -> float | None:
    """Frames per second from the PTS (the median step between consecutive frames), None without PTS."""
    pts = arrays.pts
    ok = ~np.isnan(pts[1:]) & ~np.isnan(pts[:-1]) & (np.diff(arrays.index) == 1)
    steps = np.diff(pts)[ok]
    steps = steps[steps > 0]
    return float(1 / np.median(steps)) if len(steps) else None


def _skeleton(sio, names: list[str], skeleton, name: str):
    return sio.Skeleton(nodes=list(names), edges=[(names[a], names[b]) for a, b in skeleton], name=name)


def _instance(sio, xy, scores, visible, skel):
    shown = scores[visible]
    score = float(shown.mean()) if len(shown) else 0.0
    return sio.PredictedInstance.from_numpy(xy, skeleton=skel, point_scores=scores, score=score)


def _video(sio, source: str, arrays: TrackArrays, frames: int | None):
    """The source as a SLEAP Video, not opened (export never decodes it again for this): its path and the shape and
    rate SLEAP would otherwise decode it to learn, in the backend record a `.slp` stores."""
    from rtkp.pipeline.source_spec import image_files, parse_source

    n = max(frames or 0, int(arrays.index.max()) + 1)
    w, h = arrays.size
    shape = [n, int(h), int(w), 3]
    spec = parse_source(source)
    if spec.kind == "images":
        files = [str(p.resolve()) for p in image_files(spec)]
        meta = {"type": "ImageVideo", "shape": shape, "filename": files[0], "filenames": files}
        meta.update(height_=shape[1], width_=shape[2], channels_=3, grayscale=False, fps=None)
        return sio.Video(filename=files, open_backend=False, backend_metadata=meta)
    path = str(Path(source).resolve())
    meta = {"type": "MediaVideo", "shape": shape, "filename": path, "grayscale": False, "bgr": True}
    meta.update(dataset="", input_format="", fps=frame_rate(arrays))
    return sio.Video(filename=path, open_backend=False, backend_metadata=meta)


def write_slp(arrays: TrackArrays, names, skeleton, source: str, frames: int | None, path: Path, model: str) -> None:
    """The `.slp` (module docstring). frames: the frames the source lists (None: unknown); model: the scorer name
    (`rtkp_<weights sha256[:12]>`), the skeleton's name."""
    import sleap_io as sio

    skel = _skeleton(sio, names, skeleton, model)
    video = _video(sio, source, arrays, frames)
    if arrays.instances is not None:
        labelled, tracks = frames_of_instances(sio, arrays, video, skel, nwb=False)
    else:
        xy = np.where(arrays.visible[..., None], arrays.xy, np.nan)
        labelled, tracks = (
            [
                sio.LabeledFrame(
                    video=video,
                    frame_idx=int(arrays.index[i]),
                    instances=[_instance(sio, xy[i], arrays.scores[i], arrays.visible[i], skel)],
                )
                for i in range(len(arrays.index))
            ],
            [],
        )
    labels = sio.Labels(labelled, videos=[video], skeletons=[skel], tracks=tracks)
    labels.provenance.update(software="rtkp", model=model, source=source)
    Path(path).unlink(missing_ok=True)
    sio.save_slp(labels, str(path), verbose=False)


def write_nwb(arrays: TrackArrays, names, skeleton, source: str, path: Path, model: str) -> None:
    """The NWB file (module docstring); model: the scorer (`rtkp_<weights sha256[:12]>`)."""
    import datetime

    import sleap_io as sio
    from sleap_io.io.nwb_predictions import write_nwb as sleap_write_nwb

    from rtkp import __version__

    skel = _skeleton(sio, names, skeleton, model)
    video = sio.Video(filename=str(Path(source).resolve()), open_backend=False)
    index = arrays.index
    times = np.where(np.isnan(arrays.pts), index.astype(float), arrays.pts)
    by_index = np.full(int(index.max()) + 1, np.nan)
    by_index[index] = times
    if arrays.instances is not None:
        if not len(arrays.instances.row):  # ndx-pose has no series without a sample (sleap-io raises a riddle)
            raise ValueError("no animal was found in any frame, and NWB (ndx-pose) cannot hold none")
        labelled, tracks = frames_of_instances(sio, arrays, video, skel, nwb=True)
    else:
        labelled, tracks = (
            [
                sio.LabeledFrame(
                    video=video,
                    frame_idx=int(index[i]),
                    instances=[_instance(sio, arrays.xy[i], arrays.likelihood[i], np.ones(len(names), bool), skel)],
                )
                for i in range(len(index))
            ],
            [],
        )
    labels = sio.Labels(labelled, videos=[video], skeletons=[skel], tracks=tracks)
    Path(path).unlink(missing_ok=True)
    sleap_write_nwb(
        labels,
        str(path),
        nwb_file_kwargs={
            "session_description": f"rtkp export of {source}",
            "identifier": str(uuid.uuid4()),
            "session_start_time": datetime.datetime.now(datetime.UTC),
        },
        pose_estimation_metadata={
            "video_timestamps": by_index,
            "scorer": model,
            "source_software": "rtkp",
            "source_software_version": __version__,
        },
    )
    _fix_times(path, times, _track_rows(arrays), arrays.instances is not None)


def _fix_times(path: Path, times: np.ndarray, track_rows: dict[str, np.ndarray], multi: bool) -> None:
    """Where sleap-io stored a series' times as a uniform rate it truncated it to whole frames per second: a
    single-instance file gets the true rate back; a multi-instance file gets every such series' time stamps written
    out instead (its other tracks' series have time stamps, and readers that line tracks up by time, such as
    sleap_io.load_nwb, need the same values in every track, which a rate times a count does not reproduce).
    times (N,): every frame's time; track_rows: {track name as written: the rows of the frames it is in}."""
    import h5py

    with h5py.File(path, "r+") as fh:
        processing = fh["processing"]
        stored: list[str] = []
        processing.visititems(lambda name, obj: stored.append(name) if name.endswith("/starting_time") else None)
        for name in stored:
            # the PoseEstimation sleap-io names `track=<track name>`
            owner = next((part[6:] for part in name.split("/") if part.startswith("track=")), None)
            if owner not in track_rows or "rate" not in processing[name].attrs:
                continue
            own = times[track_rows[owner]]
            if not multi:
                if len(own) > 1 and own[1] > own[0]:
                    processing[name].attrs["rate"] = 1 / (own[1] - own[0])
                continue
            series = processing[name].parent
            del series["starting_time"]
            stamps = series.create_dataset("timestamps", data=own.astype(np.float64))
            stamps.attrs["interval"], stamps.attrs["unit"] = 1, "seconds"


def _track_rows(arrays: TrackArrays) -> dict[str, np.ndarray]:
    """{track name as written: the rows of the frames it is in}."""
    inst = arrays.instances
    if inst is None:
        return {"untracked": np.arange(len(arrays.index))}
    return {f"track_{int(t)}": inst.row[inst.track == t] for t in np.unique(inst.track)}
