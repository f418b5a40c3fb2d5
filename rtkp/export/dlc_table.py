"""DeepLabCut's `.h5` output: the analysis table that DeepLabCut writes beside a video and its users' scripts load.

`pd.read_hdf(path)` gives one row per frame (indexed by frame index, or by file name for image folders, as the CSV's
first column) and columns with the levels scorer / bodyparts / coords (x, y, likelihood): the same table, with the
same numbers, as `pd.read_csv(csv, header=[0, 1, 2], index_col=0)` of the CSV export (both come from
rtkp.export.formats.dlc_values). Written with pandas' `to_hdf` (PyTables), under DeepLabCut's key `df_with_missing`
in PyTables' table format, as DeepLabCut writes it. An HDF5 file cannot be appended to line by line the way the CSV
is, so it is built when the export finishes (rtkp.export.finish), from an array of keypoints: 3 float64 values per
keypoint and frame, never images.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from rtkp.export.formats import dlc_values
from rtkp.messages import KeypointFrame

KEY = "df_with_missing"  # the key DeepLabCut writes its tables under


def write_h5(frames: Iterable[KeypointFrame], n: int, names: list[str], scorer: str, path: Path) -> None:
    """Write the table of `n` frames (the published records, in order) to `path` (replaced)."""
    import pandas as pd

    k = len(names)
    values = np.empty((n, 3 * k), np.float64)
    index: list = []
    for i, kf in enumerate(frames):
        values[i] = [float(v) for v in dlc_values(kf)[: 3 * k]]
        index.append(kf.name or kf.index)
    if len(index) != n:
        raise ValueError(f"{len(index)} records where {n} were counted")
    columns = pd.MultiIndex.from_arrays(
        [[scorer] * 3 * k, [name for name in names for _ in range(3)], ["x", "y", "likelihood"] * k],
        names=["scorer", "bodyparts", "coords"],
    )
    table = pd.DataFrame(values, index=pd.Index(index), columns=columns)
    Path(path).unlink(missing_ok=True)
    table.to_hdf(path, key=KEY, mode="w", format="table")
