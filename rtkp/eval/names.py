"""Which keypoints an evaluation scores: model and data are matched by name, and what only one side has is said.

A model may have keypoints the labels lack (added from shots, renamed), the labels keypoints the model lacks (a model
trained on a subset, a keypoint removed); both kinds are left out of the figures, and the report names them under
"not_scored" instead of dropping them silently (a renamed keypoint is scored under neither name).
"""

from __future__ import annotations


def match_keypoints(model_names, data_names) -> tuple[list[str], dict | None]:
    """(the names both sides have, in the data's order; {"model_only": [...], "data_only": [...]} of the names only
    one side has, in each side's order, or None when both sides have the same keypoints)."""
    common = [n for n in data_names if n in model_names]
    model_only = [n for n in model_names if n not in data_names]
    data_only = [n for n in data_names if n not in model_names]
    return common, ({"model_only": model_only, "data_only": data_only} if model_only or data_only else None)


def not_scored_lines(report: dict) -> list[str]:
    """The report's "not_scored" entry as lines for its table (none when absent)."""
    left = report.get("not_scored") or {}
    lines = []
    if left.get("model_only"):
        lines.append(f"  not scored: {', '.join(left['model_only'])} (the model's; no labels of that name here)")
    if left.get("data_only"):
        lines.append(f"  not scored: {', '.join(left['data_only'])} (labelled; the model has no keypoint of that name)")
    return lines
