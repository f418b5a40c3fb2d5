"""DeepLabCut's `.h5` output: the analysis table that DeepLabCut writes beside a video and its users' scripts load.

`pd.read_hdf(path)` gives one row per frame (indexed by frame index, or by file name for image folders, as the CSV's
first column) and columns with the levels scorer / bodyparts / coords (x, y, likelihood): the same table, with the
same numbers, as `pd.read_csv(csv, header=[0, 1, 2], index_col=0)` of the CSV export (both come from
rtkp.export.formats.dlc_values). Written with pandas' `to_hdf` (PyTables), under DeepLabCut's key `df_with_missing`
in PyTables' table format, as DeepLabCut writes it. An HDF5 file cannot be appended to line by line the way the CSV
is, so it is built when the export finishes (rtkp.export.finish), from an array of keypoints: 3 float64 values per
keypoint and frame, never images.

A multi-instance model's table is DeepLabCut's multi-animal one: column levels scorer / individuals / bodyparts /
coords, one individual `track<id>` per track id (rtkp.export.formats.individual), NaN where a track has no instance
in a frame; the same table as `pd.read_csv(csv, header=[0, 1, 2, 3], index_col=0)` of the multi-animal CSV.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from rtkp.export.formats import dlc_values, individual, multi_dlc_values
from rtkp.messages import KeypointFrame

KEY = "df_with_missing"  # the key DeepLabCut writes its tables under


def write_h5(
    frames: Iterable[KeypointFrame], n: int, names: list[str], scorer: str, path: Path, tracks: list[int] | None = None
) -> None:
    """Write the table of `n` frames (the published records, in order) to `path` (replaced). tracks: None for a
    single-instance model; a multi-instance model's track ids, in increasing order (its multi-animal table)."""
    import pandas as pd

    k = len(names)
    width = 3 * k * (1 if tracks is None else len(tracks))
    values = np.empty((n, width), np.float64)
    index: list = []
    for i, kf in enumerate(frames):
        text = dlc_values(kf)[: 3 * k] if tracks is None else multi_dlc_values(kf, k, tracks)
        values[i] = [float(v) for v in text]
        index.append(kf.name or kf.index)
    if len(index) != n:
        raise ValueError(f"{len(index)} records where {n} were counted")
    levels = [[name for name in names for _ in range(3)], ["x", "y", "likelihood"] * k]
    if tracks is None:
        columns = pd.MultiIndex.from_arrays([[scorer] * 3 * k, *levels], names=["scorer", "bodyparts", "coords"])
    else:
        columns = pd.MultiIndex.from_arrays(
            [
                [scorer] * width,
                [individual(t) for t in tracks for _ in range(3 * k)],
                *(lv * len(tracks) for lv in levels),
            ],
            names=["scorer", "individuals", "bodyparts", "coords"],
        )
    table = pd.DataFrame(values, index=pd.Index(index), columns=columns)
    Path(path).unlink(missing_ok=True)
    table.to_hdf(path, key=KEY, mode="w", format="table")
