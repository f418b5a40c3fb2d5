"""`--data` and `--split` handling: detect the format, read it, apply a split.

Every format goes through `load_dataset`: its reader gives one Sample per labelled instance (the animals of one frame
share its image_key, and carry the labels' track). Callers that handle one instance per frame only
(`several=False`) get a one-line refusal of data where a frame holds more (nothing is silently dropped to make one).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from rtkp.data.coco import read_coco
from rtkp.data.dlc import read_dlc
from rtkp.data.sample import Dataset
from rtkp.errors import DataError


def load_dataset(
    path: str | Path,
    check_images: bool = True,
    images: str | Path | None = None,
    predictions: bool = False,
    several: bool = True,
) -> Dataset:
    """Read a DeepLabCut project folder (single- or multi-animal), a SLEAP .slp file, a COCO annotation JSON, or a
    folder holding exactly one COCO JSON. A frame may hold several instances (each a Sample, with its track where the
    labels give one); two instances of one track in one frame are a DataError.

    `images` is an extra folder a COCO file's `file_name`s are looked for in (before <json folder>/images and the
    JSON's folder); a DeepLabCut project names its images relative to the project and a .slp its videos, so they take
    none. `predictions`: a .slp's predicted instances count as labels too (default: user-labelled ones only).
    several: frames may hold several instances (False: DataError where one does).
    """
    dataset = _read(Path(path), check_images, images, predictions)
    one_instance_per_track(dataset, path)
    if not several:
        one_instance_per_frame(dataset, path)
    return dataset


def one_instance_per_frame(dataset: Dataset, where: str | Path) -> None:
    """DataError (one line, with the counts) when any frame of `dataset` holds more than one instance."""
    counts = Counter(s.image_key() for s in dataset.samples)
    crowded = [key for key, n in counts.items() if n > 1]
    if not crowded:
        return
    example = next(s.name for s in dataset.samples if s.image_key() == crowded[0])
    raise DataError(
        f"{where}: {len(crowded)} of {len(counts)} labelled frames hold more than one instance (up to "
        f"{max(counts.values())} in a frame, {len(dataset)} instances in all; e.g. {example}): this needs one "
        "labelled instance per frame"
    )


def one_instance_per_track(dataset: Dataset, where: str | Path) -> None:
    """DataError (one line) when a frame holds two instances with the same track: one animal cannot be in a frame
    twice, and identity figures would not know which of the two it is."""
    seen: set = set()
    for s in dataset.samples:
        if s.track is None:
            continue
        key = (s.image_key(), s.track)
        if key in seen:
            raise DataError(
                f"{where}: frame {s.name} holds two instances of track {s.track!r}: give one of them another track "
                "(or none) in the labelling tool"
            )
        seen.add(key)


def _read(path: Path, check_images: bool, images: str | Path | None, predictions: bool) -> Dataset:
    images = Path(images) if images is not None else None
    if not path.exists():
        raise DataError(f"{path}: data path not found")
    if predictions and not (path.is_file() and path.suffix.lower() == ".slp"):
        raise DataError(f"{path}: reading predictions as labels is for a SLEAP .slp file")
    if path.is_file():
        if path.suffix.lower() == ".slp":
            if images is not None:
                raise DataError(f"{path}: a SLEAP file's frames come from its videos; --images is for COCO data")
            from rtkp.data.sleap import read_slp  # imports sleap-io: only for .slp files

            return read_slp(path, predictions, check_images)
        if path.suffix.lower() != ".json":
            raise DataError(f"{path}: expected a COCO .json file, a SLEAP .slp file or a DeepLabCut project folder")
        return read_coco(path, images, check_images=check_images)
    if (path / "config.yaml").is_file() and (path / "labeled-data").is_dir():
        if images is not None:
            raise DataError(f"{path}: a DeepLabCut project keeps its own images; an images folder is for COCO data")
        return read_dlc(path, check_images)
    jsons = sorted(path.glob("*.json"))
    coco = [p for p in jsons if _looks_like_coco(p)]
    if len(coco) == 1:
        return read_coco(coco[0], images, check_images=check_images)
    if len(coco) > 1:
        raise DataError(f"{path}: several COCO files here ({', '.join(p.name for p in coco)}); pass one of them")
    raise DataError(
        f"{path}: neither a DeepLabCut project (config.yaml + labeled-data/) nor a COCO-keypoints JSON "
        "(a SLEAP .slp file is given as the file itself)"
    )


def _looks_like_coco(path: Path) -> bool:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    return '"annotations"' in text and '"categories"' in text


def read_split(path: str | Path) -> dict[str, list[str]]:
    """Read a split JSON: {"train": [names...], "test": [names...]} (other keys are ignored)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: split file not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(doc, dict) or "train" not in doc or "test" not in doc:
        raise DataError(f"{path}: a split file needs `train` and `test` lists")
    for key in ("train", "test"):
        if not isinstance(doc[key], list) or not all(isinstance(n, str) for n in doc[key]):
            raise DataError(f"{path}: `{key}` must be a list of image names")
    overlap = set(doc["train"]) & set(doc["test"])
    if overlap:
        raise DataError(f"{path}: {len(overlap)} image(s) are in both train and test, e.g. {sorted(overlap)[0]!r}")
    return {"train": doc["train"], "test": doc["test"]}


def load_split(
    data: str | Path,
    split: str | Path | None,
    part: str,
    images: str | Path | None = None,
    predictions: bool = False,
    several: bool = True,
) -> Dataset:
    """The `part` ("train" or "test") of the data; with no split file, all of it. `images`, `predictions`,
    `several`: see load_dataset."""
    dataset = load_dataset(data, images=images, predictions=predictions, several=several)
    if split is None:
        return dataset
    names = read_split(split)[part]
    return dataset.subset(names, f"{split} ({part})")
