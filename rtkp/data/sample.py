"""The one sample type every reader produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtkp.errors import DataError


@dataclass(frozen=True)
class Sample:
    """One labelled object in one image.

    keypoints: (K, 2) float32 pixel coordinates (x, y), origin at the top-left pixel's centre.
    visible:   (K,) bool; False for keypoints that are unlabelled or marked not visible.
    box:       (4,) float32 (x, y, w, h) when the source gives one, else None.
    name:      identifier used by split files (the image path relative to the data root).
    whole:     (M, 2) all labelled keypoints of the source when Dataset.select_keypoints dropped some, else None.
    """

    image_path: Path
    keypoints: np.ndarray
    visible: np.ndarray
    name: str
    box: np.ndarray | None = None
    whole: np.ndarray | None = None

    def load_image(self) -> np.ndarray:
        """The image as (H, W, 3) uint8 RGB."""
        return read_image(self.image_path)

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
            Sample(s.image_path, s.keypoints[cols].copy(), s.visible[cols].copy(), s.name, s.box, s.object_points())
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
