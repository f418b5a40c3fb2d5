"""Identity figures of tracked video through motmetrics: IDF1, ID switches, MOTA.

Ground-truth ids are the labelled tracks, hypothesis ids the predicted tracks; the distance between an animal and a
prediction is their mean keypoint distance (rtkp.eval.matching), and a pair at or beyond the found gate cannot match.
motmetrics counts an ID switch per labelled animal whose predicted id changes: two flies that swap ids make two.
`switch_frames` counts the frames in which any switch happened (one swap of two flies: one).
"""

from __future__ import annotations

import numpy as np

from rtkp.errors import require
from rtkp.eval.matching import distance_matrix, gates

METRICS = ["idf1", "idp", "idr", "num_switches", "mota", "num_misses", "num_false_positives", "num_frames"]


def tracking_figures(predicted: list, labelled: list) -> dict:
    """Per frame, in time order: predicted instances (`.track`, `.keypoints`, `.visible`) and labelled Samples (with
    `.track`) -> {"idf1", "idp", "idr", "id_switches", "switch_frames", "mota"}."""
    mm = require("motmetrics", "eval")
    ids: dict = {}  # motmetrics (1.4) stores ids as floats: number the tracks, labelled and predicted apart

    def number(kind: str, track) -> int:
        return ids.setdefault((kind, track), len(ids))

    acc = mm.MOTAccumulator(auto_id=True)
    for preds, samples in zip(predicted, labelled):
        dist = distance_matrix(preds, samples).T  # (G, P): motmetrics wants objects by hypotheses
        if dist.size:
            dist[dist >= gates(samples)[:, None]] = np.nan
        acc.update(
            [number("gt", s.track) for s in samples],
            [number("pred", p.track) for p in preds],
            dist,
        )
    summary = mm.metrics.create().compute(acc, metrics=METRICS, name="all").iloc[0]
    events = acc.mot_events
    switch_frames = events[events["Type"] == "SWITCH"].index.get_level_values("FrameId").nunique()
    return {
        "idf1": float(summary["idf1"]),
        "idp": float(summary["idp"]),
        "idr": float(summary["idr"]),
        "id_switches": int(summary["num_switches"]),
        "switch_frames": int(switch_frames),
        "mota": float(summary["mota"]),
    }
