"""An animal's mean pose, learned from the training labels, and which of a left/right pair is on which side.

A keypoint's prototype matches look-alikes on the same animal (a left wing and a right wing), whose centre votes land
on the same animal, so the votes alone cannot choose between them: on two flies, both wing keypoints often took the
same wing. The template can: fitted to the animal's midline keypoints (those in no left/right pair; a similarity
transform, never a reflection, so left stays left), it gives the animal's body frame, in which the training labels put
one keypoint of a pair on a consistent side of the other (`lateral_pairs`). The grouping then picks, for each such
pair, the two strongest peaks that are apart and on their sides (rtkp.instances.grouping.refine_pairs).
numpy only; stored in the manifest as `pose_template` {"mean": (K, 2) in units of the animal's size, "spread": (K,),
"midline": [indices], "lateral_pairs": [[a, b], ...] (a on the body's positive lateral side of b)}.
"""

from __future__ import annotations

import numpy as np

CONSISTENT = 0.98  # share of training animals with a pair on the same sides, for the pair to be kept
MIN_SPREAD = 0.05  # of the animal's size: no keypoint is placed more surely than this
ITERATIONS = 5


def similarity(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None):
    """The similarity transform (scale s, rotation R (2, 2), translation t (2,)) taking src (n, 2) onto dst (n, 2)
    in the weighted least-squares sense, with det R = +1 (Umeyama 1991 without the reflection)."""
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    a, b = src - mu_s, dst - mu_d
    cov = (b * w[:, None]).T @ a
    u, sig, vt = np.linalg.svd(cov)
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ d @ vt
    var = (w * (a**2).sum(1)).sum()
    scale = float((sig * np.diag(d)).sum() / var) if var > 0 else 1.0
    return scale, rot, mu_d - scale * rot @ mu_s


def _normalised(shape: np.ndarray) -> np.ndarray:
    centred = shape - shape.mean(0)
    return centred / max(np.sqrt((centred**2).sum(1).mean()), 1e-9)


def fit_template(shapes: list[np.ndarray], visible: list[np.ndarray]) -> dict | None:
    """Generalised Procrustes over labelled animals ((K, 2) keypoints, (K,) visible each; 3+ visible to count) ->
    {"mean": (K, 2), "spread": (K,)} as lists, or None with fewer than 10 such animals or a keypoint never labelled."""
    used = [(s, v) for s, v in zip(shapes, visible) if v.sum() >= 3]
    if len(used) < 10:
        return None
    k = len(used[0][0])
    if not np.any([v for _, v in used], axis=0).all():
        return None
    first = max(used, key=lambda sv: sv[1].sum())
    mean = np.zeros((k, 2))
    mean[first[1]] = _normalised(first[0][first[1]])
    known = first[1].copy()
    for _ in range(ITERATIONS):
        total, count, aligned = np.zeros((k, 2)), np.zeros(k), []
        for s, v in used:
            both = v & known
            if both.sum() < 3:
                continue
            scale, rot, t = similarity(s[both], mean[both])
            a = (scale * (rot @ s.T)).T + t
            aligned.append((a, v))
            total[v] += a[v]
            count[v] += 1
        known = count > 0
        mean[known] = total[known] / count[known, None]
        centre = mean[known].mean(0)
        norm = np.sqrt(((mean[known] - centre) ** 2).sum(1).mean())
        mean = (mean - centre) / max(norm, 1e-9)
    if not known.all():
        return None
    residual = [[] for _ in range(k)]
    for s, v in used:
        scale, rot, t = similarity(s[v], mean[v])
        a = (scale * (rot @ s.T)).T + t
        for j in np.nonzero(v)[0]:
            residual[j].append(float(np.sum((a[j] - mean[j]) ** 2)))
    spread = [max(float(np.sqrt(np.mean(r))), MIN_SPREAD) for r in residual]
    return {"mean": np.round(mean, 5).tolist(), "spread": np.round(spread, 5).tolist()}


class BodyFrame:
    """The template's body axes: longitudinal u (its midline's main direction) and lateral, about its midline centre."""

    def __init__(self, template: dict):
        self.mean = np.asarray(template["mean"], np.float64)
        self.midline = np.zeros(len(self.mean), bool)
        self.midline[list(template["midline"])] = True
        mid = self.mean[self.midline]
        self.centre = mid.mean(0)
        axis = np.linalg.svd(mid - self.centre)[2][0] if len(mid) >= 2 else np.array([1.0, 0.0])
        self.lateral = np.array([-axis[1], axis[0]])
        self.pairs = [tuple(p) for p in template.get("lateral_pairs", [])]

    def lateral_of(self, anchors: np.ndarray, sure: np.ndarray):
        """A function (n, 2) px -> (n,) lateral coordinates in this animal's body frame, fitted to its sure midline
        keypoints (anchors (K, 2) px, sure (K,)); None with fewer than 2 of them."""
        use = sure & self.midline
        if use.sum() < 2:
            return None
        scale, rot, t = similarity(anchors[use], self.mean[use])
        return lambda pts: (((scale * (rot @ np.atleast_2d(pts).T)).T + t) - self.centre) @ self.lateral


def pose_prior(shapes: list[np.ndarray], visible: list[np.ndarray], flip_pairs: list[tuple[int, int]]) -> dict | None:
    """The manifest's `pose_template` from labelled animals and the model's left/right index pairs (None when the
    animals are too few, or no keypoint lies on the midline to give a body frame)."""
    paired = {i for p in flip_pairs for i in p}
    midline = [i for i in range(len(shapes[0])) if i not in paired] if shapes else []
    template = fit_template(shapes, visible) if len(midline) >= 2 else None
    if template is None:
        return None
    frame = BodyFrame(dict(template, midline=midline))
    votes: dict[tuple[int, int], list[bool]] = {}
    for s, v in zip(shapes, visible):
        side = frame.lateral_of(s.astype(np.float64), v)
        if side is None:
            continue
        for a, b in flip_pairs:
            if v[a] and v[b]:
                la, lb = side(np.stack([s[a], s[b]]))
                votes.setdefault((a, b), []).append(bool(la > lb))
    pairs = []
    for (a, b), v in votes.items():
        share = float(np.mean(v))
        if len(v) >= 10 and share >= CONSISTENT:
            pairs.append([int(a), int(b)])
        elif len(v) >= 10 and share <= 1 - CONSISTENT:
            pairs.append([int(b), int(a)])
    return dict(template, midline=midline, lateral_pairs=pairs)


def template_names(template: dict | None, keypoint_names) -> list[str] | None:
    """The keypoints the pose template's rows are: its own `names` (kept when a folder is saved with another keypoint
    set, rtkp.teach.saved) or else the model's keypoint names, when as many; None without a template or when neither
    fits."""
    if not template:
        return None
    names = template.get("names")
    if names is not None:
        return list(names)
    return list(keypoint_names) if len(template["mean"]) == len(keypoint_names) else None


def template_spread(template: dict | None, keypoint_names) -> dict[str, float]:
    """{name: spread} of the pose template's keypoints (template_names); {} without one."""
    names = template_names(template, keypoint_names)
    return dict(zip(names, map(float, template["spread"]))) if names else {}
