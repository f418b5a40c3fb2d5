"""`evaluate_instances`: how well a multi-instance model finds, places and follows several animals per frame.

Per frame, predicted instances are matched to the labelled ones (rtkp.eval.matching: Hungarian by mean keypoint
distance, found below half the animal's size). PCK at t counts a labelled keypoint right when the matched prediction
is within t x the animal's size (the longer side of its labelled keypoints' box); every keypoint of an animal that was
not found counts wrong, so PCK measures finding and placing together. RMSE is over the keypoints of found animals only.
Figures per animal are keyed by the labelled track (UNTRACKED for labels without one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rtkp.data.sample import Dataset, Sample
from rtkp.eval.matching import box_side, match_frame
from rtkp.eval.oks import oks_map
from rtkp.eval.tracking import tracking_figures

PCK_THRESHOLDS = (0.05, 0.1)
UNTRACKED = "(untracked)"


@dataclass(frozen=True)
class PredictedInstance:
    """One predicted animal: keypoints (K, 2) source px, visible (K,) bool, track (None: not tracked), score.

    rtkp.messages.Instance has the same fields and can be passed as it is.
    """

    keypoints: np.ndarray
    visible: np.ndarray
    track: int | str | None
    score: float


def as_predicted(instance, cols=None) -> PredictedInstance:
    """A PredictedInstance from anything with `.keypoints`, `.visible`, `.track`, `.score` (an rtkp.messages.Instance),
    with only the keypoints at indices `cols` (None: all), e.g. a model's keypoints in the labels' order."""
    cols = slice(None) if cols is None else list(cols)
    xy, visible = np.asarray(instance.keypoints)[cols], np.asarray(instance.visible, bool)[cols]
    return PredictedInstance(xy, visible, instance.track, float(instance.score))


def labelled_frames(dataset: Dataset) -> list[list[Sample]]:
    """The dataset's frames in first-seen order (a video's labels: time order), each the Samples of its animals."""
    return [[dataset.samples[i] for i in indices] for indices in dataset.frames().values()]


class _Tally:
    """Keypoint hits and squared errors of one group of labelled animals (all, one track, one keypoint)."""

    def __init__(self):
        self.instances = self.found = 0
        self.hits = {t: 0 for t in PCK_THRESHOLDS}
        self.keypoints = 0
        self.squared: list[float] = []

    def add(self, errors: np.ndarray | None, size: float, labelled: int) -> None:
        """errors: (n,) px of a found animal's labelled keypoints, or None when it was missed (`labelled` of them)."""
        self.keypoints += labelled
        if errors is None:
            return
        ok = np.where(np.isfinite(errors), errors, np.inf)
        for t in PCK_THRESHOLDS:
            self.hits[t] += int((ok <= t * size).sum())
        self.squared += [float(e) ** 2 for e in errors if np.isfinite(e)]

    def figures(self) -> dict:
        n = self.keypoints
        out = {"pck": {f"{t:g}": (self.hits[t] / n if n else float("nan")) for t in PCK_THRESHOLDS}}
        out["rmse_px"] = float(np.sqrt(np.mean(self.squared))) if self.squared else float("nan")
        return out


def evaluate_instances(
    predicted: Sequence[Sequence],
    labelled: Sequence[Sequence[Sample]],
    names: Sequence[str] | None = None,
    sigmas: np.ndarray | None = None,
    tracking: bool | None = None,
) -> dict:
    """Figures of predictions against labels, frame by frame (both sequences in the same frame order: time order for
    tracking figures).

    predicted: per frame, the predicted instances (PredictedInstance or rtkp.messages.Instance: `.keypoints` (K, 2),
      `.visible` (K,), `.track`, `.score`), in the labels' keypoint order.
    labelled: per frame, the Samples of its labelled animals (`labelled_frames(dataset)`), each with `.track`.
    names: the K keypoint names, for per-keypoint PCK (None: no per-keypoint figures).
    sigmas: (K,) OKS sigmas (default: rtkp.eval.oks.DEFAULT_SIGMA each).
    tracking: compute IDF1 / ID switches / MOTA (motmetrics); None: when every labelled animal has a track and every
      prediction a track id. Without, "tracking" is None.

    Returns {"frames", "labelled_instances", "predicted_instances", "found", "missed", "extra", "all_found_share",
    "frames_not_all_found" (frame positions), "pck" {"0.05", "0.1"}, "rmse_px", "per_track" {track: {"instances",
    "found", "pck", "rmse_px"}}, "per_keypoint" {name: {"pck"}}, "oks" {"map", "map50", "map75"}, "tracking"
    ({"idf1", "idp", "idr", "id_switches", "switch_frames", "mota"} or None)}.
    """
    if len(predicted) != len(labelled):
        raise ValueError(f"predicted has {len(predicted)} frames, labelled {len(labelled)}: give them frame by frame")
    overall, per_track = _Tally(), {}
    per_keypoint = {name: _Tally() for name in names or []}
    n_pred = found = 0
    not_all_found = []
    for frame, (preds, samples) in enumerate(zip(predicted, labelled)):
        preds, samples = list(preds), list(samples)
        n_pred += len(preds)
        matched = {g: p for p, g, _ in match_frame(preds, samples)}
        found += len(matched)
        if len(matched) < len(samples):
            not_all_found.append(frame)
        for g, sample in enumerate(samples):
            errors = None
            if g in matched:
                xy = np.asarray(preds[matched[g]].keypoints, np.float64)
                errors = np.linalg.norm(xy - sample.keypoints, axis=1)  # (K,); NaN where never reported
            size = box_side(sample.keypoints, sample.visible)
            track = per_track.setdefault(UNTRACKED if sample.track is None else str(sample.track), _Tally())
            for tally in (overall, track):
                tally.instances += 1
                tally.found += g in matched
                tally.add(None if errors is None else errors[sample.visible], size, int(sample.visible.sum()))
            for k, tally in enumerate(per_keypoint.values()):
                if sample.visible[k]:
                    tally.add(None if errors is None else errors[k : k + 1], size, 1)
    n_gt = overall.instances
    report = {
        "frames": len(labelled),
        "labelled_instances": n_gt,
        "predicted_instances": n_pred,
        "found": found,
        "missed": n_gt - found,
        "extra": n_pred - found,
        "all_found_share": 1 - len(not_all_found) / len(labelled) if labelled else float("nan"),
        "frames_not_all_found": not_all_found,
        **overall.figures(),
        "per_track": {
            name: {"instances": t.instances, "found": t.found, **t.figures()} for name, t in sorted(per_track.items())
        },
        "per_keypoint": {name: {"pck": t.figures()["pck"]} for name, t in per_keypoint.items()},
        "oks": oks_map(list(predicted), list(labelled), sigmas),
    }
    if tracking is None:
        tracking = all(s.track is not None for f in labelled for s in f) and all(
            p.track is not None for f in predicted for p in f
        )
    report["tracking"] = tracking_figures(list(predicted), list(labelled)) if tracking else None
    return report
