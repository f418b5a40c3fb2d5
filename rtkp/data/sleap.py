"""SLEAP reader: a `.slp` labels file (or a `.pkg.slp` with its frames inside) read with sleap-io.

One Sample per instance with a labelled point; its image is frame `frame_idx` of the video the labels refer to, read
through sleap-io's `Video` (grey videos come back with the channel repeated: RGB uint8 like every reader). Only
user-labelled instances count, unless `predictions=True` asks for the predicted ones too (a frame's predictions that a
user instance replaced are left out, as SLEAP does). Each Sample's track is its SLEAP track's name. One instance per
frame (for callers that need it) and one per track in a frame are checked by `rtkp.data.load`, as for every format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rtkp.data.sample import Dataset, Sample
from rtkp.errors import DataError, require

# What the no-user-labels error advises for a file of predictions. They are read as labels only when asked for
# (`load_dataset(..., predictions=True)`); a command-line switch for that would be named here too.
PREDICTIONS_HINT = (
    "label frames in SLEAP, or proofread the predictions there (which makes them user instances), or pass --predictions"
)


def _load(path: Path):
    sio = require("sleap_io", "formats")
    try:
        return sio.load_slp(str(path))
    except FileNotFoundError:
        raise DataError(f"{path}: SLEAP file not found") from None
    except Exception as exc:  # h5py/json/sleap-io errors of a damaged or foreign file: one line
        raise DataError(f"{path}: not a readable SLEAP .slp file ({type(exc).__name__}: {exc})"[:300]) from None


def _open_video(path: Path, video) -> None:
    """Open `video`, also where its stored path is relative to the .slp's folder; DataError naming the places tried.

    sleap-io looks for the stored path (relative to the current folder) and for the file's name in the .slp's folder.
    """
    if video.exists() and video.is_open:
        return
    stored = video.filename
    if isinstance(stored, list):
        missing = [f for f in stored if not Path(f).is_file()]
        if missing:
            raise DataError(f"{path}: {len(missing)} image(s) of its image sequence are missing: {missing[0]} ...")
        raise DataError(f"{path}: the images of its image-sequence video ({stored[0]}, ...) cannot be opened")
    tried = [Path(stored), path.parent / Path(stored).name]
    if not Path(stored).is_absolute():
        candidate = path.parent / stored
        tried.append(candidate)
        if candidate.is_file():
            video.replace_filename(str(candidate), open=True)
            if video.is_open:
                return
    if any(p.is_file() for p in tried):
        raise DataError(f"{path}: its video {stored} exists but cannot be opened (not a video sleap-io can decode)")
    places = ", ".join(dict.fromkeys(str(p) for p in tried))
    raise DataError(f"{path}: its video {stored} is missing (looked for {places}); put the video there")


def _shown(path: Path, file: Path) -> str:
    """`file` relative to the .slp's folder, else as stored: the start of a sample's name in split files."""
    try:
        return file.resolve().relative_to(path.parent.resolve()).as_posix()
    except ValueError:
        return file.as_posix()


def _check_skeletons(path: Path, labels) -> None:
    """One skeleton per file (rtkp trains one); where a track's instances use several, the message names the track."""
    if len(labels.skeletons) == 1:
        return
    names = ", ".join(repr(s.name) for s in labels.skeletons) or "none"
    number = {id(s): f"#{i + 1} {s.name!r}" for i, s in enumerate(labels.skeletons)}  # names may repeat
    used: dict[str, set[str]] = {}
    for lf in labels.labeled_frames:
        for inst in lf.instances:
            if inst.track is not None:
                used.setdefault(inst.track.name, set()).add(number.get(id(inst.skeleton), repr(inst.skeleton.name)))
    changing = next((t for t, sk in used.items() if len(sk) > 1), None)
    where = f"; track {changing!r} changes skeleton ({', '.join(sorted(used[changing]))})" if changing else ""
    raise DataError(
        f"{path}: rtkp trains one skeleton; this file has {len(labels.skeletons)} ({names}){where}: keep one in SLEAP"
    )


def _check_videos(path: Path, labels) -> None:
    """Several videos are several sets of frames (a frame is named by its video's file); two videos with one file (a
    .pkg.slp embedding several) cannot be told apart, so they are refused."""
    files = [str(v.filename) for v in labels.videos if not isinstance(v.filename, list)]
    shared = next((f for f in files if files.count(f) > 1), None)
    if shared is None:
        return
    if Path(shared) == path or Path(shared).resolve() == path.resolve():
        raise DataError(
            f"{path}: embeds the frames of {files.count(shared)} videos, which rtkp cannot tell apart: save each "
            "video's labels to its own .pkg.slp in SLEAP, or save without embedded frames"
        )
    raise DataError(f"{path}: lists the video {shared} {files.count(shared)} times: merge them in SLEAP")


def read_slp(path: Path, predictions: bool = False, check_images: bool = True) -> Dataset:
    """Read a SLEAP labels file. DataError: no skeleton or several, a missing video, two videos in one file, no
    (user-)labelled instance with a labelled point (an instance without one is skipped, as is a frame of only those).

    Several videos are read as they are: each frame is named by its video. A Sample's track is its SLEAP track's name.
    """
    path = Path(path)
    labels = _load(path)
    _check_skeletons(path, labels)
    _check_videos(path, labels)
    skeleton = labels.skeletons[0]
    names = list(skeleton.node_names)
    samples, opened, predicted = [], set(), 0
    for lf in labels.labeled_frames:
        instances = list(lf.user_instances)
        predicted += len(lf.predicted_instances)
        if predictions:
            instances += list(lf.unused_predictions)
        for inst in instances:
            points = inst.numpy()[:, :2].astype(np.float32)
            visible = np.isfinite(points).all(1)
            if not visible.any():
                continue
            points[~visible] = 0
            track = inst.track.name if inst.track is not None else None
            video = lf.video
            if check_images and id(video) not in opened:
                _open_video(path, video)
                opened.add(id(video))
            if isinstance(video.filename, list):  # an image sequence: the frame is an image file
                image = Path(video.filename[lf.frame_idx])
                samples.append(Sample(image, points, visible, _shown(path, image), track=track))
                continue
            # a frame's name: the video's path, '#', the frame index in 6 digits (as `rtkp export`'s COCO names frames)
            file, frame = Path(video.filename), int(lf.frame_idx)
            name = f"{_shown(path, file)}#{frame:06d}"
            samples.append(Sample(file, points, visible, name, frame=frame, video=video, track=track))
    if not samples:
        if predicted and not predictions:
            raise DataError(
                f"{path}: no user-labelled instance with a labelled point, only {predicted} predicted ones, which are "
                f"not labels: {PREDICTIONS_HINT}"
            )
        what = "instance" if predictions else "user-labelled instance"
        raise DataError(f"{path}: no {what} with a labelled point: label frames in SLEAP")
    edges = [(int(a), int(b)) for a, b in skeleton.edge_inds]
    return Dataset(samples, names, edges, path.parent, "sleap")
