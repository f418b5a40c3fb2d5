"""The one sample type every reader produces."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from rtkp.errors import DataError


@dataclass(frozen=True)
class Sample:
    """One labelled object in one image: an image file, or frame `frame` of a video (a SLEAP .slp's labels).

    image_path: the image file, or the video file a frame comes from.
    keypoints: (K, 2) float32 pixel coordinates (x, y), origin at the top-left pixel's centre.
    visible:   (K,) bool; False for keypoints that are unlabelled or marked not visible.
    box:       (4,) float32 (x, y, w, h) when the source gives one, else None.
    name:      identifier used by split files (the image path relative to the data root).
    whole:     (M, 2) all labelled keypoints of the source when Dataset.select_keypoints dropped some, else None.
    frame:     the frame index in the video `image_path`, else None (an image file).
    video:     what gives that frame when indexed with it, as (H, W) or (H, W, C) uint8 (a `sleap_io.Video`).
    track:     the identity the labels give this instance (a SLEAP track's name, a COCO `track_id`, a DeepLabCut
               individual), else None. Several Samples with the same image_key are the animals of one frame.
    """

    image_path: Path
    keypoints: np.ndarray
    visible: np.ndarray
    name: str
    box: np.ndarray | None = None
    whole: np.ndarray | None = None
    frame: int | None = None
    video: Any = field(default=None, compare=False, repr=False)
    track: str | None = None

    def load_image(self) -> np.ndarray:
        """The image as (H, W, 3) uint8 RGB (a grey video's frame with its one channel repeated)."""
        if self.video is None:
            return read_image(self.image_path)
        return read_frame(self.video, self.frame, self.image_path)

    def image_key(self) -> tuple[Path, int | None]:
        """What tells images apart: the file, and the frame in it for a video. Samples with equal keys share a frame."""
        return self.image_path, self.frame

    def object_points(self) -> np.ndarray:
        """(M, 2) the labelled keypoints of the whole object, also when only some are selected.

        Object size (PCK's reference) and the occluders' object box come from these, so that evaluating one keypoint
        (`rtkp eval --keypoints tailbase`) measures it against the mouse, not against a single point.
        """
        return self.whole if self.whole is not None else self.keypoints[self.visible]


@dataclass
class Dataset:
    """Samples plus what describes their keypoints."""

    samples: list[Sample]
    keypoint_names: list[str]
    skeleton: list[tuple[int, int]] = field(default_factory=list)
    root: Path | None = None
    kind: str = ""

    def __len__(self) -> int:
        return len(self.samples)

    def frames(self) -> dict[tuple, list[int]]:
        """The labelled frames in first-seen order: image_key -> indices of its instances' samples."""
        out: dict[tuple, list[int]] = {}
        for i, s in enumerate(self.samples):
            out.setdefault(s.image_key(), []).append(i)
        return out

    def max_instances(self) -> int:
        """The most instances any labelled frame holds (0 for no samples)."""
        return max((len(v) for v in self.frames().values()), default=0)

    def subset(self, names: list[str], where: str) -> Dataset:
        """Samples whose `name` is listed, in the list's order; a name with no sample is an error."""
        by_name: dict[str, list[Sample]] = {}
        for s in self.samples:
            by_name.setdefault(s.name, []).append(s)
        missing = [n for n in names if n not in by_name]
        if missing:
            raise DataError(f"{where}: {len(missing)} listed image(s) are not in the data, e.g. {missing[0]!r}")
        picked = [s for n in names for s in by_name[n]]
        return Dataset(picked, self.keypoint_names, self.skeleton, self.root, self.kind)

    def select_keypoints(self, names: list[str], where: str = "--keypoints") -> Dataset:
        """The same samples with only these keypoints, in this order (each sample's keypoints and visibility columns;
        skeleton pairs between kept keypoints, renumbered). An unknown or repeated name is a DataError.

        Frames keep their place even where none of the kept keypoints is labelled: they still show the scene.
        """
        unknown = [n for n in names if n not in self.keypoint_names]
        if unknown:
            raise DataError(
                f"{where}: no keypoint {unknown[0]!r} in the data (it has {', '.join(self.keypoint_names)})"
            )
        if not names or len(set(names)) != len(names):
            raise DataError(f"{where}: give each keypoint once, at least one, got {names}")
        cols = [self.keypoint_names.index(n) for n in names]
        new = {old: i for i, old in enumerate(cols)}
        samples = [
            replace(s, keypoints=s.keypoints[cols].copy(), visible=s.visible[cols].copy(), whole=s.object_points())
            for s in self.samples
        ]
        skeleton = [(new[a], new[b]) for a, b in self.skeleton if a in new and b in new]
        return Dataset(samples, list(names), skeleton, self.root, self.kind)


def read_image(path: Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB, or raise DataError naming the file."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    data = np.fromfile(path, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise DataError(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_frame(video: Any, frame: int, path: Path) -> np.ndarray:
    """Frame `frame` of `video` (indexable by frame number) as (H, W, 3) uint8 RGB, or raise DataError naming it."""
    try:
        image = np.asarray(video[frame])
    except Exception as exc:  # the video library's own errors (out of range, undecodable): one line naming the frame
        raise DataError(f"{path}: cannot read frame {frame} ({type(exc).__name__}: {exc})") from None
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DataError(f"{path}: frame {frame} is {image.dtype} {image.shape}, not an 8-bit grey or RGB image")
    return np.ascontiguousarray(image)
