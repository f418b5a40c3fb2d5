"""Offline annotation formats: COCO-keypoints JSON, JSON lines, DeepLabCut-style CSV written line by line here; the
DeepLabCut `.h5` table (rtkp.export.dlc_table), SLEAP `.slp` and NWB (rtkp.export.sleap_files) built whole at the end.

Each streamed format (STREAMED) is defined once, record by record (`jsonl_line`; `csv_header` + `csv_line`; `coco_line`
+ `join_coco`), so that `rtkp export` streams it to disk while frames are tracked (rtkp.export.records.RecordWriter) or
writes it at the end from the raw records (rtkp.export.finish). COCO's two arrays become one line per frame (image TAB
annotation) that `join_coco` turns into the document at the end, reading the lines twice instead of holding them. (The
raw record that resume and chunks keep, at full precision, is rtkp.export.records.raw_line.) The BUILT formats cannot be
appended to line by line (HDF5 files); rtkp.export.finish builds them from the published records when the export
finishes, through pandas/PyTables and sleap-io, imported only then (PACKAGES says which format needs which).

Several animals per frame (a multi-instance model, manifest `max_instances`; the writers are told with
`multi_instance=True`): COCO has one annotation per instance (with `track_id`), none for a frame without one; JSON
lines list every instance under `instances` (a single-instance model's lines list its one instance there too, and are
otherwise as before); the CSV is DeepLabCut's multi-animal table, one individual `track<id>` per track id, whose
header needs every track id first, so it is built when the export finishes (`multi_csv_lines`), not streamed.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from rtkp.messages import Instance, KeypointFrame
from rtkp.smoothing import PREDICTED

STREAMED = ("coco", "jsonl", "csv")  # written line by line, while tracking or from the raw records
BUILT = ("h5", "slp", "nwb")  # built whole when the export finishes
FORMATS = STREAMED + BUILT
DEFAULT_FORMATS = STREAMED  # `rtkp export` without --format
SUFFIX = {"coco": ".coco.json", "jsonl": ".jsonl", "csv": ".csv", "h5": ".h5", "slp": ".slp", "nwb": ".nwb"}
# the modules a format's writer imports (pip install 'rtkp[formats]' brings them)
PACKAGES = {"h5": ("pandas", "tables"), "slp": ("sleap_io",), "nwb": ("sleap_io", "pynwb", "ndx_pose")}


def missing_packages(formats) -> str | None:
    """One line naming the formats whose writers' packages are not installed and how to get them, or None. Looks the
    packages up without importing them (`rtkp export --help` and the other formats stay quick)."""
    missing: dict[str, list[str]] = {}
    for fmt in formats:
        for module in PACKAGES.get(fmt, ()):
            if importlib.util.find_spec(module) is None:
                missing.setdefault(module, []).append(fmt)
    if not missing:
        return None
    what = ", ".join(f"{m} (for {', '.join(fs)})" for m, fs in missing.items())
    return f"--format: {what} not installed: pip install 'rtkp[formats]'"


def _coco_v(kf: KeypointFrame | Instance, k: int) -> int:
    """COCO visibility: 2 visible, 1 present but hidden (held on a prediction), 0 not reported."""
    if not kf.visible[k]:
        return 0
    return 1 if kf.state[k] == PREDICTED else 2


def _coco_keypoints(kf: KeypointFrame | Instance, names: list[str]) -> dict:
    """An annotation's keypoint fields from a frame's (or an instance's) arrays: keypoints (x, y, v per keypoint, in
    the category's order; x, y written for hidden keypoints too, with v = 0), num_keypoints, keypoint_scores, bbox
    (of the visible keypoints), iscrowd, area."""
    flat = []
    for k in range(len(names)):
        flat += [round(float(kf.keypoints[k, 0]), 3), round(float(kf.keypoints[k, 1]), 3), _coco_v(kf, k)]
    vis = kf.visible
    pts = kf.keypoints[vis]
    bbox = (
        [float(pts[:, 0].min()), float(pts[:, 1].min()), float(np.ptp(pts[:, 0])), float(np.ptp(pts[:, 1]))]
        if len(pts)
        else [0.0, 0.0, 0.0, 0.0]
    )
    return {
        "keypoints": flat,
        "num_keypoints": int(vis.sum()),
        "keypoint_scores": [round(float(s), 5) for s in kf.scores],
        "bbox": bbox,
        "iscrowd": 0,
        "area": bbox[2] * bbox[3],
    }


def coco_line(kf: KeypointFrame, number: int, names: list[str], source: str, multi_instance: bool = False) -> str:
    """One frame's COCO image and annotation(s) as one line: `image TAB annotation` + newline, the image's id (and a
    single-instance annotation's) `number`, 1-based.

    multi_instance: one annotation per instance instead (`image TAB ann TAB ann ...`, just `image` for a frame without
    one), each with `track_id` and the instance's `score` and without an id: join_coco numbers them, since a resumed or
    chunked export cannot know how many annotations came before. (json.dumps escapes control characters inside
    strings, so a TAB only ever separates the parts.)
    """
    w, h = kf.source_size
    file_name = kf.name or f"{Path(source).stem}#{kf.index:06d}"
    image = {"id": number, "file_name": file_name, "width": w, "height": h, "frame_index": kf.index, "pts": kf.pts}
    if multi_instance:
        anns = [
            {"image_id": number, "category_id": 1, "track_id": int(inst.track), "score": round(float(inst.score), 5)}
            | _coco_keypoints(inst, names)
            for inst in kf.instances
        ]
        return "\t".join([json.dumps(image), *map(json.dumps, anns)]) + "\n"
    vis = kf.visible
    score = float(kf.scores[vis].mean()) if vis.any() else 0.0
    fields = _coco_keypoints(kf, names)
    ann = {"id": number, "image_id": number, "category_id": 1, "keypoints": fields.pop("keypoints")}
    ann.update(num_keypoints=fields.pop("num_keypoints"), score=round(score, 5), **fields)
    return json.dumps(image) + "\t" + json.dumps(ann) + "\n"


def join_coco(
    lines_path: Path, fh, names: list[str], skeleton, source: str, model: str, multi_instance: bool = False
) -> None:
    """Write the COCO document to the text file `fh` from a file of coco_line lines, byte for byte what json.dumps of
    the whole document gives: info, images (with frame_index, pts, file_name), annotations, categories.
    multi_instance: the lines are coco_line(..., multi_instance=True)'s; their annotations get ids 1, 2, ... here."""
    info = {"description": f"rtkp export of {source}", "model": model}
    categories = [
        {
            "id": 1,
            "name": "object",
            "supercategory": "object",
            "keypoints": list(names),
            "skeleton": [[a + 1, b + 1] for a, b in skeleton],
        }
    ]
    fh.write('{"info": ' + json.dumps(info))
    for key in ("images", "annotations"):
        fh.write(f', "{key}": [')
        written = 0
        with open(lines_path) as lines:
            for line in lines:
                image, *anns = line.rstrip("\n").split("\t")
                for part in [image] if key == "images" else anns:
                    if multi_instance and key == "annotations":  # '{"image_id": ...' -> '{"id": N, "image_id": ...'
                        part = f'{{"id": {written + 1}, ' + part[1:]
                    fh.write((", " if written else "") + part)
                    written += 1
        fh.write("]")
    fh.write(', "categories": ' + json.dumps(categories) + "}")


def _jsonl_keypoints(kf: KeypointFrame | Instance, names: list[str]) -> dict:
    return {
        n: [
            round(float(kf.keypoints[k, 0]), 3),
            round(float(kf.keypoints[k, 1]), 3),
            round(float(kf.scores[k]), 5),
            bool(kf.visible[k]),
            int(kf.state[k]),
        ]
        for k, n in enumerate(names)
    }


def jsonl_line(kf: KeypointFrame, names: list[str]) -> str:
    """One JSON object per frame: frame, pts, file, per keypoint [x, y, score, visible, state] (the frame's arrays:
    a multi-instance frame's first instance, or missing keypoints when it has none), and `instances`: every instance,
    {track, score, keypoints (as above)}, in increasing track order (a single-instance model's one, track 0)."""
    rec = {"frame": kf.index, "pts": kf.pts, "file": kf.name, "keypoints": _jsonl_keypoints(kf, names)}
    rec["instances"] = [
        {"track": int(inst.track), "score": round(float(inst.score), 5), "keypoints": _jsonl_keypoints(inst, names)}
        for inst in kf.instances
    ]
    return json.dumps(rec) + "\n"


def _csv_text(rows: Iterable[list]) -> str:
    buf = io.StringIO(newline="")
    csv.writer(buf).writerows(rows)  # the csv module's quoting and \r\n line ends, as before
    return buf.getvalue()


def csv_header(names: list[str], scorer: str) -> str:
    """DeepLabCut's analysis CSV header rows: scorer / bodyparts / coords (x, y, likelihood)."""
    return _csv_text(
        [
            ["scorer"] + [scorer] * 3 * len(names),
            ["bodyparts"] + [n for n in names for _ in range(3)],
            ["coords"] + ["x", "y", "likelihood"] * len(names),
        ]
    )


def likelihood(kf: KeypointFrame | Instance) -> np.ndarray:
    """DeepLabCut's likelihood per keypoint (K,): the score clipped to [0, 1] for a visible keypoint and 0 for a
    hidden one, so DLC's `pcutoff` filtering drops what rtkp reports hidden (the CSV, the .h5 and NWB's confidence)."""
    return np.where(kf.visible, np.clip(kf.scores, 0, 1), 0).astype(np.float64)


def dlc_values(kf: KeypointFrame | Instance) -> list[str]:
    """x, y, likelihood per keypoint as the DeepLabCut CSV writes them (3, 3 and 5 decimals); the .h5 table holds the
    same numbers (rtkp.export.dlc_table), so that both files read as the same table."""
    like = likelihood(kf)
    out = []
    for k in range(len(like)):
        out += [f"{kf.keypoints[k, 0]:.3f}", f"{kf.keypoints[k, 1]:.3f}", f"{like[k]:.5f}"]
    return out


def csv_line(kf: KeypointFrame, names: list[str]) -> str:
    """One CSV row: the file name (image folders) or frame index, then x, y, likelihood per keypoint (dlc_values)."""
    return _csv_text([[kf.name or kf.index, *dlc_values(kf)[: 3 * len(names)]]])


def individual(track: int) -> str:
    """A track's name among DeepLabCut's individuals (the multi-animal table's second column level)."""
    return f"track{track}"


def multi_csv_header(names: list[str], scorer: str, tracks: list[int]) -> str:
    """DeepLabCut's multi-animal CSV header rows: scorer / individuals (one per track id, `track<id>`) / bodyparts /
    coords (x, y, likelihood)."""
    k = len(names)
    return _csv_text(
        [
            ["scorer"] + [scorer] * 3 * k * len(tracks),
            ["individuals"] + [individual(t) for t in tracks for _ in range(3 * k)],
            ["bodyparts"] + [n for n in names for _ in range(3)] * len(tracks),
            ["coords"] + ["x", "y", "likelihood"] * k * len(tracks),
        ]
    )


def multi_dlc_values(kf: KeypointFrame, k: int, tracks: list[int]) -> list[str]:
    """x, y, likelihood per track (in `tracks` order) and keypoint as dlc_values writes them; NaN for a track that
    has no instance in this frame (written out: pandas.read_csv(header=[0, 1, 2, 3]) takes a first row of empty
    cells for the index's name row and drops that frame)."""
    by_track = {inst.track: inst for inst in kf.instances}
    out: list[str] = []
    for t in tracks:
        out += dlc_values(by_track[t])[: 3 * k] if t in by_track else ["NaN"] * 3 * k
    return out


def multi_csv_lines(frames: Iterable[KeypointFrame], names: list[str], scorer: str, tracks: list[int]):
    """The multi-animal CSV, header then one row per frame (its file name or index first): tracks: every track id
    that occurs, in increasing order (known only once every frame is tracked, so this table is built at the end)."""
    yield multi_csv_header(names, scorer, tracks)
    for kf in frames:
        yield _csv_text([[kf.name or kf.index, *multi_dlc_values(kf, len(names), tracks)]])
